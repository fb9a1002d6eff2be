//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
		for _, want := range []string{"Run it from a shell", "Run it from systemd", "ENTRYPOINT", "--listen", "RPWRAP_LISTEN", "--stop-signal", "Exit status",
			"--max-draining N", "RPWRAP_MAX_DRAINING", "--drain-delay DURATION", "RPWRAP_DRAIN_DELAY", "tcp6-8080",
			"--stop-delay DURATION", "RPWRAP_STOP_DELAY", "--health ADDR", "RPWRAP_HEALTH", "/readyz"} {
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
			if strings.Contains(errOut, "rpwrap: rpwrap") {
				t.Errorf("stderr %q says rpwrap twice", errOut)
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

// The same port on an IPv4 and an IPv6 address is two listeners with two
// default names, tcp-P and tcp6-P, not a clash that needs NAME=.
func TestSamePortOnBothFamiliesGetsTwoDefaultNames(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--ready", "notify"})
	st := w.status()
	if len(st.Listeners) != 2 || !strings.HasPrefix(st.Listeners[0], "tcp-0=tcp://127.0.0.1:") || !strings.HasPrefix(st.Listeners[1], "tcp6-0=tcp://[::1]:") {
		t.Errorf("listeners %q, want tcp-0=tcp://127.0.0.1:P and tcp6-0=tcp://[::1]:P", st.Listeners)
	}
}

// A number where a duration belongs, a negative duration, and a backlog or
// --max-draining below 1 are refused before anything starts, with the forms
// that work, from the command line and from RPWRAP_ variables alike.
func TestBadNumbersAreRefusedWithTheForms(t *testing.T) {
	cases := []struct {
		vars map[string]string
		args []string
		want string
	}{
		{nil, []string{"--ready-timeout", "5"}, `--ready-timeout "5": a duration needs a unit: 5s for seconds, 5ms for milliseconds`},
		{nil, []string{"--stop-timeout=30"}, `--stop-timeout "30": a duration needs a unit: 30s`},
		{nil, []string{"--drain-timeout", "soon"}, `--drain-timeout "soon": not a duration: write a number with a unit, e.g. 5s, 500ms`},
		{nil, []string{"--drain-stall", "-1s"}, `--drain-stall "-1s": a duration must not be negative`},
		{nil, []string{"--drain-delay", "2"}, `--drain-delay "2": a duration needs a unit: 2s`},
		{map[string]string{"RPWRAP_READY_TIMEOUT": "5"}, nil, `RPWRAP_READY_TIMEOUT="5": a duration needs a unit: 5s`},
		{map[string]string{"RPWRAP_DRAIN_DELAY": "1.5"}, nil, `RPWRAP_DRAIN_DELAY="1.5": a duration needs a unit: 1.5s`},
		{nil, []string{"--backlog", "-1"}, "--backlog -1: want a number of pending connections from 1 to 2147483647"},
		{nil, []string{"--backlog", "0"}, "--backlog 0: want a number of pending connections from 1"},
		{nil, []string{"--backlog", "many"}, `--backlog "many": want a whole number`},
		{map[string]string{"RPWRAP_BACKLOG": "-5"}, nil, "--backlog -5: want a number of pending connections from 1"},
		{nil, []string{"--max-draining", "0"}, "--max-draining 0: want 1 or more"},
		{nil, []string{"--udp-flows", "sticky"}, `--udp-flows: unknown UDP flow mode "sticky" (want tuple, quic or off)`},
		{map[string]string{"RPWRAP_UDP_FLOWS": "4tuple"}, nil, `--udp-flows: unknown UDP flow mode "4tuple"`},
		{nil, []string{"--udp-flow-idle", "0s"}, "--udp-flow-idle 0s: want a positive duration"},
		{nil, []string{"--shutdown-at-flip=maybe"}, `--shutdown-at-flip "maybe": want true or false`},
		{nil, []string{"--lisen", ":80"}, "unknown flag --lisen"},
	}
	for _, c := range cases {
		args := append(append([]string{"--listen", "127.0.0.1:0"}, c.args...), "--", "true")
		code, _, errOut := runCLI(t, c.vars, args...)
		if code != 2 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "rpwrap: rpwrap") {
			t.Errorf("%v %v: exit %d, stderr %q; want exit 2 and %q", c.vars, c.args, code, errOut, c.want)
		}
	}
}

// A backlog above net.core.somaxconn is allowed, with a warning that names
// the cap.
func TestBacklogAboveSomaxconnIsWarnedAbout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "somaxconn")
	os.WriteFile(path, []byte("4096\n"), 0o644)
	defer func(p string) { somaxconnPath = p }(somaxconnPath)
	somaxconnPath = path
	for _, c := range []struct {
		n    int
		warn bool
	}{{4096, false}, {4097, true}, {65535, true}} {
		var buf bytes.Buffer
		if err := checkBacklog(c.n, slog.New(slog.NewTextHandler(&buf, nil))); err != nil {
			t.Errorf("checkBacklog(%d): %v", c.n, err)
		}
		warned := strings.Contains(buf.String(), "above net.core.somaxconn") && strings.Contains(buf.String(), "somaxconn=4096")
		if warned != c.warn {
			t.Errorf("checkBacklog(%d) logged %q; want a warning naming somaxconn=4096: %v", c.n, buf.String(), c.warn)
		}
	}
}

// A first generation that never gets ready makes rpwrap exit 1, however it
// failed: before, it gave the server's status, 3 or 1 for one that exited
// (1 even for an exit 0), 143 or 137 for one rpwrap had to stop.
func TestFirstGenerationNotReadyExitsOne(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []struct {
		name   string
		args   []string
		reason string
	}{
		{"exits 3", []string{"--", "/bin/sh", "-c", "exit 3"}, "exited before it was ready (exit status 3)"},
		{"exits 0", []string{"--ready", "notify", "--", "/bin/true"}, "exited before it was ready (exit status 0)"},
		{"stops on TERM after the timeout", []string{"--ready", "notify", "--", "/bin/sleep", "60"}, "not ready within 1s"},
		{"ignores TERM", []string{"--ready", "notify", "--", "/bin/sh", "-c", "trap '' TERM; sleep 60"}, "not ready within 1s"},
		{"never accepts", []string{"--", "/bin/sleep", "60"}, "probe connection"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := shortTempDir(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			args := append([]string{"--listen", "127.0.0.1:0", "--ready-timeout", "1s", "--stop-timeout", "1s"}, c.args...)
			cmd := exec.CommandContext(ctx, testBinary(t), args...)
			cmd.Env = append(os.Environ(), asRpwrap+"=1", "RUNTIME_DIRECTORY="+dir)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), c.reason) {
				t.Errorf("exit %d, want 1 with %q; output:\n%s", code, c.reason, out)
			}
		})
	}
}
