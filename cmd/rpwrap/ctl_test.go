//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// A mistyped command gets the nearest one and exit 2, not just the usage.
func TestCtlUnknownCommandSuggestsTheNearest(t *testing.T) {
	for _, c := range []struct{ arg, want string }{
		{"restrat", `rpwrap ctl: unknown command "restrat"; did you mean restart?`},
		{"restar", "did you mean restart?"},
		{"statsu", "did you mean status?"},
		{"reload", `unknown command "reload": want restart, status, sockets, events, promote, abort or upgrade`},
	} {
		code, _, errOut := runCLI(t, nil, "ctl", "--control", "/nonexistent/rpwrap.sock", c.arg)
		if code != 2 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "rpwrap ctl: rpwrap") {
			t.Errorf("ctl %s: exit %d, stderr %q; want exit 2 and %q", c.arg, code, errOut, c.want)
		}
	}
}

// `ctl status` against an rpwrap that is stopped (SIGSTOP, Ctrl-Z), whose
// socket still accepts connections into its queue, fails at once and says
// which pid to resume, instead of waiting for an answer that cannot come.
func TestCtlStatusOfAStoppedRpwrapFailsFast(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify"})
	pid := w.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGCONT)
	waitUntil(t, "rpwrap stopped", func() bool { return procState(pid) == "T" })
	type result struct {
		code   int
		errOut string
	}
	done := make(chan result, 1)
	go func() {
		code, _, errOut := runCLI(t, nil, "ctl", "--control", w.control, "status")
		done <- result{code, errOut}
	}()
	select {
	case r := <-done:
		want := "rpwrap at " + w.control + " (pid " + strconv.Itoa(pid) + ") is stopped"
		if r.code != 1 || !strings.Contains(r.errOut, want) || !strings.Contains(r.errOut, "kill -CONT "+strconv.Itoa(pid)) {
			t.Errorf("ctl status: exit %d, %q; want exit 1, %q and kill -CONT", r.code, r.errOut, want)
		}
	case <-time.After(time.Minute): // a hang guard, not a speed limit
		syscall.Kill(pid, syscall.SIGCONT)
		<-done
		t.Fatal("ctl status against a stopped rpwrap did not return")
	}
}

// procState is the state letter of pid in /proc/PID/stat.
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

// A `ctl restart` asked for while another restart waits for a slow server
// waits for it with no deadline of its own, and says on stderr what it
// waits for; with --timeout it gives up, saying that the restart goes on.
func TestCtlRestartBehindASlowOneSaysWhatItWaitsFor(t *testing.T) {
	gate := filepath.Join(shortTempDir(t), "go")
	os.WriteFile(gate, nil, 0o644)
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "exec:test -e " + gate})
	os.Remove(gate)
	first := make(chan supervisor.Response, 1)
	go func() { first <- w.call("restart") }()
	waitUntil(t, "generation 2 starting", func() bool {
		st := w.status()
		return len(st.Generations) == 2 && st.Generations[1].State == supervisor.StateStarting
	})

	code, _, errOut := runCLI(t, nil, "ctl", "--control", w.control, "--timeout", "1500ms", "restart")
	if want := "gave up after 1.5s (--timeout): the restart is not cancelled"; code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("ctl restart --timeout 1500ms: exit %d, %q; want 1 and %q", code, errOut, want)
	}

	var stderr testutil.SyncBuffer
	second := make(chan int, 1)
	go func() {
		second <- run(env{getenv: func(string) string { return "" }, stdout: &testutil.SyncBuffer{}, stderr: &stderr},
			[]string{"ctl", "--control", w.control, "restart"})
	}()
	want := "rpwrap ctl: waiting for the restart in progress: generation 2 (pid "
	waitUntil(t, "the waiting notice", func() bool { return strings.Contains(stderr.String(), want) })
	os.WriteFile(gate, nil, 0o644)
	if r := <-first; !r.OK {
		t.Errorf("first restart: %+v", r)
	}
	if code := <-second; code != 0 || strings.Contains(stderr.String(), "timeout") {
		t.Errorf("queued ctl restart: exit %d, stderr %q; want 0 and no timeout", code, stderr.String())
	}
}

// `ctl restart --wait` asks rpwrap to answer after the drain (Wait in the
// request); without it, the request asks for the answer at the flip.
func TestCtlRestartWaitAsksForTheDrain(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "ctl.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	reqs := make(chan supervisor.Request, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadBytes('\n')
			var req supervisor.Request
			json.Unmarshal(line, &req)
			reqs <- req
			json.NewEncoder(c).Encode(supervisor.Response{OK: true, Restart: &supervisor.RestartResult{Generation: 2}})
			c.Close()
		}
	}()
	for _, c := range []struct {
		args []string
		wait bool
	}{{[]string{"restart", "--wait"}, true}, {[]string{"restart"}, false}} {
		code, out, errOut := runCLI(t, nil, append([]string{"ctl", "--control", path}, c.args...)...)
		req := <-reqs
		if code != 0 || req.Command != "restart" || req.Wait != c.wait {
			t.Errorf("ctl %v: exit %d, %q %q, request %+v; want restart with wait %v", c.args, code, out, errOut, req, c.wait)
		}
	}
}
