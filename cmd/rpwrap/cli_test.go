//go:build linux

package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// runCLI runs the CLI as a function with environment vars and returns its
// exit status and what it printed.
func runCLI(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string { return vars[k] }
	code := run(env{getenv: getenv, stdout: &out, stderr: &errOut}, args)
	return code, out.String(), errOut.String()
}

func TestHelpShowsTheThreeWaysToRun(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}} {
		code, out, _ := runCLI(t, nil, args...)
		if code != 0 {
			t.Errorf("%v: exit %d", args, code)
		}
		for _, want := range []string{"Run it from a shell", "Run it from systemd", "ENTRYPOINT", "--listen", "RPWRAP_LISTEN", "--stop-signal", "Exit status"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: help lacks %q", args, want)
			}
		}
	}
}

func TestEverySubcommandAnswersHelp(t *testing.T) {
	for _, sub := range []string{"ctl", "demo"} {
		code, out, errOut := runCLI(t, nil, sub, "--help")
		if code != 0 || !strings.Contains(out, "Usage: rpwrap "+sub) {
			t.Errorf("rpwrap %s --help: exit %d, out %q, err %q", sub, code, out, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, nil, "--version")
	if code != 0 || out != "rpwrap devel\n" {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}

// Bad input gets a clear message, a non-zero status, and leaves no child
// process and no socket behind.
func TestBadInputIsRefusedAndLeavesNothingBehind(t *testing.T) {
	testutil.RequireRoot(t)
	notExec := filepath.Join(t.TempDir(), "not-executable")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	holder, err := net.Listen("tcp4", "127.0.0.1:0") // no SO_REUSEPORT
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	held := holder.Addr().String()
	free := freePort(t)

	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"malformed address", []string{"--listen", "127.0.0.1", "--", "true"}, 2, "--listen"},
		{"port out of range", []string{"--listen", "127.0.0.1:70000", "--", "true"}, 2, "70000"},
		{"unresolvable host", []string{"--listen", "no-such-host.invalid:80", "--", "true"}, 2, "no-such-host.invalid"},
		{"same address twice", []string{"--listen", free, "--listen", free, "--", "true"}, 2, "twice"},
		{"no command", []string{"--listen", free}, 2, "no command"},
		{"no address", []string{"--", "true"}, 2, "nothing to listen on"},
		{"unknown flag", []string{"--lisen", free, "--", "true"}, 2, "lisen"},
		{"bad ready", []string{"--listen", free, "--ready", "tcp", "--", "true"}, 2, "--ready"},
		{"bad stop signal", []string{"--listen", free, "--stop-signal", "NOPE", "--", "true"}, 2, "--stop-signal"},
		{"command not found", []string{"--listen", free, "--", "no-such-command-rpwrap"}, 127, "no-such-command-rpwrap"},
		{"not executable", []string{"--listen", free, "--", notExec}, 126, "not-executable"},
		{"port held without SO_REUSEPORT", []string{"--listen", held, "--", "true"}, 1,
			fmt.Sprintf("address in use by a socket without SO_REUSEPORT (pid %d, ", os.Getpid())},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := testutil.Take()
			code, _, errOut := runCLI(t, map[string]string{"RUNTIME_DIRECTORY": shortTempDir(t)}, c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, c.code, c.want)
			}
			if err := before.Leaked(testutil.Take()); err != nil {
				t.Errorf("left behind: %v", err)
			}
			if c.name != "port held without SO_REUSEPORT" {
				requirePortFree(t, free)
			}
		})
	}
}

// A privileged port needs CAP_NET_BIND_SERVICE; without it the message says
// so. The test runs rpwrap as nobody.
func TestPrivilegedPortWithoutCapabilityIsExplained(t *testing.T) {
	testutil.RequireRoot(t)
	// The test binary's own directory is not open to nobody: copy it.
	dir := shortTempDir(t)
	os.Chmod(dir, 0o755)
	exe := filepath.Join(dir, "rpwrap")
	b, err := os.ReadFile(testBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run") // nobody's own: rpwrap refuses /tmp, which others can write
	if err := os.Mkdir(run, 0o700); err != nil || os.Chown(run, 65534, 65534) != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(exe, "--listen", "127.0.0.1:81", "--", "/bin/true")
	cmd.Env = append(os.Environ(), asRpwrap+"=1", "RUNTIME_DIRECTORY="+run)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	err = cmd.Run()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(out.String(), "CAP_NET_BIND_SERVICE") {
		t.Errorf("as nobody on port 81: %v, output %q; want exit 1 naming CAP_NET_BIND_SERVICE", err, out.String())
	}
}

// freePort returns a loopback address with a port nobody listens on.
func freePort(t *testing.T) string {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// requirePortFree fails when something still listens on addr.
func requirePortFree(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Errorf("%s is still bound: %v", addr, err)
		return
	}
	l.Close()
}
