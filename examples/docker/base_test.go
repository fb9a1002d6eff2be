//go:build linux

package docker

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// baseRef is the base image the example Dockerfiles use.
const baseRef = "debian:bookworm-slim"

// CacheEnv names the directory that keeps the debootstrap rootfs between
// runs (default defaultCache).
const CacheEnv = "RPWRAP_TEST_CACHE"

const defaultCache = "/var/cache/rpwrap-test"

// baseImage makes sure the daemon has baseRef: a minimal Debian bookworm
// made with debootstrap from the mirror apt uses, kept as a tarball in the
// cache directory and imported with docker import.
func baseImage(t *testing.T, d *daemon) {
	t.Helper()
	if d.hasImage(baseRef) {
		return
	}
	tarball := filepath.Join(cacheDir(), "bookworm-minbase.tar")
	if _, err := os.Stat(tarball); err != nil {
		makeRootfsTarball(t, tarball)
	}
	start := time.Now()
	if out, err := d.try(5*time.Minute, "import", tarball, baseRef); err != nil {
		t.Fatalf("import %s as %s: %v\n%s", tarball, baseRef, err, out)
	}
	t.Logf("imported %s as %s in %v", tarball, baseRef, time.Since(start).Round(time.Millisecond))
}

func cacheDir() string {
	if d := os.Getenv(CacheEnv); d != "" {
		return d
	}
	return defaultCache
}

// makeRootfsTarball runs debootstrap into a fresh directory and packs the
// result into tarball, which appears only once complete.
func makeRootfsTarball(t *testing.T, tarball string) {
	t.Helper()
	if _, err := exec.LookPath("debootstrap"); err != nil {
		testutil.SkipOrFail(t, "debootstrap not installed (apt-get install debootstrap): it makes the examples' base image "+baseRef)
	}
	dir := filepath.Dir(tarball)
	must(t, os.MkdirAll(dir, 0o755))
	rootfs, err := os.MkdirTemp(dir, "rootfs-")
	must(t, err)
	defer os.RemoveAll(rootfs)
	mirror := aptMirror()
	start := time.Now()
	runCmd(t, 20*time.Minute, "debootstrap", "--variant=minbase", "bookworm", rootfs, mirror)
	t.Logf("debootstrap bookworm from %s in %v", mirror, time.Since(start).Round(time.Millisecond))
	tmp := fmt.Sprintf("%s.part-%d", tarball, os.Getpid()) // another run may be packing too
	defer os.Remove(tmp)
	runCmd(t, 5*time.Minute, "tar", "-C", rootfs, "--numeric-owner", "-cf", tmp, ".")
	must(t, os.Rename(tmp, tarball))
}

// runCmd runs a command and fails the test with its output when it fails.
func runCmd(t *testing.T, timeout time.Duration, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out, 4000))
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// aptMirror is the Debian mirror that apt's sources name for bookworm,
// or deb.debian.org.
func aptMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	for _, f := range append([]string{"/etc/apt/sources.list"}, files...) {
		if m := mirrorIn(f); m != "" {
			return m
		}
	}
	return "http://deb.debian.org/debian"
}

// mirrorIn reads a one-line ("deb URI bookworm main") or deb822
// ("URIs:", "Suites:") sources file and returns the first URI that serves
// the bookworm suite.
func mirrorIn(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var uris, suites []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0: // the end of a deb822 stanza
			if slices.Contains(suites, "bookworm") && len(uris) > 0 {
				return uris[0]
			}
			uris, suites = nil, nil
		case fields[0] == "deb":
			if m := oneLineMirror(fields[1:]); m != "" {
				return m
			}
		case fields[0] == "URIs:":
			uris = fields[1:]
		case fields[0] == "Suites:":
			suites = fields[1:]
		}
	}
	if slices.Contains(suites, "bookworm") && len(uris) > 0 {
		return uris[0]
	}
	return ""
}

// oneLineMirror reads "[options] URI SUITE COMPONENTS...".
func oneLineMirror(f []string) string {
	if len(f) > 0 && strings.HasPrefix(f[0], "[") {
		for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
			f = f[1:]
		}
		if len(f) > 0 {
			f = f[1:]
		}
	}
	if len(f) >= 2 && f[1] == "bookworm" {
		return f[0]
	}
	return ""
}
