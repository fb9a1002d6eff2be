//go:build linux

package packaging

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// TestDebInstallsRunsAndRemoves builds the .deb, checks it with lintian
// (while the rest runs), installs it into this machine with dpkg -i, runs
// the installed rpwrap, its man page, its bash completion and a short demo,
// then removes it with dpkg -r and checks that no file of the package is
// left.
func TestDebInstallsRunsAndRemoves(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"git", "dpkg", "dpkg-deb", "dpkg-query", "man", "bash", "gzip"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.SkipOrFail(t, tool+" not installed (apt-get install dpkg man-db bash gzip git)")
		}
	}
	if _, err := os.Lstat("/usr/bin/rpwrap"); err == nil || dpkgInstalled(t) {
		testutil.SkipOrFail(t, "rpwrap is already installed on this machine (/usr/bin/rpwrap or the rpwrap package); "+
			"this test installs and removes its own: dpkg -r rpwrap first")
	}
	deb := buildDeb(t)
	files := debFiles(t, deb)
	for _, want := range []string{"/usr/bin/rpwrap", "/usr/share/man/man1/rpwrap.1.gz",
		"/usr/share/bash-completion/completions/rpwrap", "/usr/share/doc/rpwrap/copyright",
		"/usr/share/doc/rpwrap/changelog.gz", "/usr/share/doc/rpwrap/examples/systemd/rpwrap-apache.service",
		"/usr/share/doc/rpwrap/examples/apache/apache2.conf", "/usr/share/doc/rpwrap/examples/nginx/nginx.conf",
		"/usr/share/doc/rpwrap/examples/haproxy/haproxy.cfg"} {
		if !files[want] {
			t.Errorf("%s lacks %s", filepath.Base(deb), want)
		}
	}

	if _, err := exec.LookPath("lintian"); err != nil {
		testutil.SkipOrFail(t, "lintian not installed (apt-get install lintian)")
	}
	lintian := start(t, 2*time.Minute, "lintian", "--fail-on", "error,warning", "--pedantic", deb)
	t.Cleanup(func() { // registered first: a dpkg -i that fails half way leaves the package half installed
		if dpkgInstalled(t) {
			run(t, time.Minute, "dpkg", "--purge", "rpwrap")
		}
	})
	run(t, 2*time.Minute, "dpkg", "-i", deb)

	wantVersion := "rpwrap " + strings.TrimSpace(run(t, time.Minute, "git", "-C", "..", "describe", "--tags", "--always", "--dirty"))
	if got := strings.TrimSpace(run(t, time.Minute, "/usr/bin/rpwrap", "--version")); got != wantVersion {
		t.Errorf("/usr/bin/rpwrap --version = %q, want %q", got, wantVersion)
	}
	page := run(t, time.Minute, "env", "MANPAGER=cat", "MANWIDTH=100", "man", "rpwrap")
	for _, want := range []string{"zero-downtime restarts", "--listen", "--drain-timeout", "EXIT STATUS", "RPWRAP CTL"} {
		if !strings.Contains(page, want) {
			t.Errorf("man rpwrap lacks %q:\n%s", want, page)
		}
	}
	complete := run(t, time.Minute, "bash", "-c", `. /usr/share/bash-completion/completions/rpwrap
COMP_WORDS=(rpwrap ctl ""); COMP_CWORD=2; _rpwrap; echo "${COMPREPLY[*]}"`)
	if !strings.Contains(complete, "restart") || !strings.Contains(complete, "status") {
		t.Errorf("bash completion of 'rpwrap ctl ': %q, want restart and status", complete)
	}
	demo := run(t, time.Minute, "/usr/bin/rpwrap", "demo", "--restarts", "2", "--interval", "500ms")
	if !regexp.MustCompile(`(?m)^0 of [1-9][0-9]* requests failed across 2 restarts`).MatchString(demo) {
		t.Errorf("rpwrap demo:\n%s", demo)
	}

	// lintian exits non-zero on an error or a warning (--fail-on); the
	// pedantic and informational tags, which a newer lintian may add, are
	// logged only.
	if out := lintian(); strings.TrimSpace(out) != "" {
		t.Logf("lintian %s (no error or warning):\n%s", filepath.Base(deb), out)
	}

	run(t, time.Minute, "dpkg", "-r", "rpwrap")
	if dpkgInstalled(t) {
		t.Errorf("dpkg -r rpwrap left the package installed")
	}
	for f := range files {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("dpkg -r rpwrap left %s", f)
		}
	}
	for _, dir := range []string{"/usr/share/doc/rpwrap"} {
		if _, err := os.Lstat(dir); err == nil {
			t.Errorf("dpkg -r rpwrap left %s", dir)
		}
	}
	if left, _ := filepath.Glob("/var/lib/dpkg/info/rpwrap.*"); len(left) > 0 {
		t.Errorf("dpkg -r rpwrap left %v", left)
	}
}

// buildDeb runs build-deb.sh and returns the .deb it wrote, checking that
// it is the only file and that its name has a real version.
func buildDeb(t *testing.T) string {
	out := t.TempDir()
	printed := strings.TrimSpace(run(t, 5*time.Minute, "./build-deb.sh", out))
	debs, _ := filepath.Glob(filepath.Join(out, "*"))
	if len(debs) != 1 || debs[0] != printed {
		t.Fatalf("build-deb.sh %s printed %q and wrote %v, want one .deb", out, printed, debs)
	}
	if !regexp.MustCompile(`/rpwrap_([0-9]+\.[0-9][A-Za-z0-9.+~]*|0~git[0-9]{8}\.[0-9a-f]{7,}[A-Za-z0-9.+~]*)_[a-z0-9]+\.deb$`).MatchString(printed) || strings.Contains(printed, "devel") {
		t.Errorf("package name %q: want rpwrap_VERSION_ARCH.deb with a real version", printed)
	}
	return printed
}

// debFiles are the regular files and links in deb, as absolute paths.
func debFiles(t *testing.T, deb string) map[string]bool {
	files := map[string]bool{}
	for _, line := range strings.Split(run(t, time.Minute, "dpkg-deb", "--contents", deb), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 6 || strings.HasPrefix(fields[0], "d") {
			continue
		}
		files[strings.TrimPrefix(fields[5], ".")] = true
	}
	return files
}

func dpkgInstalled(t *testing.T) bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Status}", "rpwrap").Output()
	return err == nil && strings.TrimSpace(string(out)) != "not-installed"
}

// run runs name with args, bounded by limit, and returns its stdout; it
// fails the test with stderr when the command fails.
func run(t *testing.T, limit time.Duration, name string, args ...string) string {
	t.Helper()
	return start(t, limit, name, args...)()
}

// start starts name with args, bounded by limit; the function it returns
// waits for it and returns its stdout, failing the test with stderr when
// the command fails. A command not waited for is killed at the test's end.
func start(t *testing.T, limit time.Duration, name string, args ...string) func() string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	var once sync.Once
	var err error
	wait := func() { once.Do(func() { err = cmd.Wait(); cancel() }) }
	t.Cleanup(func() { cancel(); wait() }) // kills it when not waited for
	return func() string {
		t.Helper()
		wait()
		took := time.Since(began).Round(time.Millisecond)
		if err != nil {
			t.Fatalf("%s %s: %v after %v\n%s%s", name, strings.Join(args, " "), err, took, stdout.String(), stderr.String())
		}
		t.Logf("%s %s: %v", name, strings.Join(args, " "), took)
		return stdout.String()
	}
}
