//go:build linux

package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// GoBuild builds the Go package pkg (a directory, relative to the test's
// own) into the executable out, with env added to the environment
// (CGO_ENABLED=0 for a static binary). The error carries the compiler's
// output.
func GoBuild(out, pkg string, env ...string) error {
	cmd := exec.Command(goTool(), "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// goTool is the go command: from PATH, else the one of the toolchain that
// built the test.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// GoBuildFlags is GoBuild with extra flags for go build, such as
// -ldflags "-X main.version=v2" for binaries that differ in their bytes.
func GoBuildFlags(out, pkg string, flags []string, env ...string) error {
	args := append(append([]string{"build", "-o", out}, flags...), pkg)
	cmd := exec.Command(goTool(), args...)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}
