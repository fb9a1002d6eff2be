//go:build linux

package main

import "runtime/debug"

// buildVersion is the version to print when no -ldflags -X main.version
// was given: the module version that `go install ...@v1.2.3` records, else
// the pseudo-version or commit that `go build` in a git clone records
// (vcs.revision, vcs.modified), else "devel".
func buildVersion(info *debug.BuildInfo, ok bool) string {
	if !ok || info == nil {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := "devel-" + rev
	if modified == "true" {
		v += "-dirty"
	}
	return v
}

// resolveVersion is version as set by the linker, or what the binary's
// build information says when it was not set.
func resolveVersion(linked string) string {
	if linked != "" && linked != "devel" {
		return linked
	}
	return buildVersion(debug.ReadBuildInfo())
}
