//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// asRpwrap makes the test binary act as the rpwrap binary: the wrapper, its
// exec shim, and the built-in server (serve-demo).
const asRpwrap = "RPWRAP_TEST_AS_RPWRAP"

func TestMain(m *testing.M) {
	if os.Getenv(asRpwrap) == "1" {
		fdpass.RunShim()
		os.Exit(run(env{getenv: os.Getenv, stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:]))
	}
	code := testutil.VerifyNoLeaks(m)
	removeUpgradeBinaries()
	os.Exit(code)
}

// testBinary is this test binary, which is also rpwrap (see TestMain).
func testBinary(tb testing.TB) string {
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	return exe
}

// wrapper is a running rpwrap process under test.
type wrapper struct {
	t       *testing.T
	cmd     *exec.Cmd
	control string
	addr    string // the first listener's address, port resolved
	notify  *notifyReader
	out     *testutil.SyncBuffer
	done    chan struct{}
	err     error
}

// startWrapper runs rpwrap with flags, wrapping the built-in server with
// serverArgs, and returns once rpwrap told its NOTIFY_SOCKET READY=1.
func startWrapper(t *testing.T, flags []string, serverArgs ...string) *wrapper {
	t.Helper()
	testutil.RequireRoot(t)
	exe := testBinary(t)
	args := append(append([]string(nil), flags...), "--")
	args = append(args, exe, "serve-demo")
	args = append(args, serverArgs...)
	return startWrapperCommand(t, args)
}

// startWrapperCommand runs rpwrap with args (flags, "--", command).
func startWrapperCommand(t *testing.T, args []string) *wrapper {
	t.Helper()
	return startWrapperWith(t, args, nil)
}

// startWrapperWith is startWrapperCommand with a hook that may change the
// command before it starts (to pass it sockets, as systemd does).
func startWrapperWith(t *testing.T, args []string, prepare func(*exec.Cmd)) *wrapper {
	t.Helper()
	testutil.RequireRoot(t)
	dir := shortTempDir(t)
	w := &wrapper{t: t, control: filepath.Join(dir, "ctl.sock"), out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	w.notify = newNotifyReader(t, filepath.Join(dir, "notify.sock"))
	w.cmd = exec.Command(testBinary(t), append([]string{"--control", w.control}, args...)...)
	w.cmd.Env = append(os.Environ(), asRpwrap+"=1", "NOTIFY_SOCKET="+w.notify.path, "RUNTIME_DIRECTORY="+dir)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	if prepare != nil {
		prepare(w.cmd)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.err = w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		w.cmd.Process.Signal(syscall.SIGKILL)
		<-w.done
		if strings.Contains(w.out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector found a data race in rpwrap (go test -race)")
		}
		if t.Failed() {
			t.Logf("rpwrap output:\n%s", w.out.String())
		}
	})
	if !w.notify.waitFor(t, "READY=1", w.done, 30*time.Second) {
		t.Fatalf("rpwrap did not become ready; output:\n%s", w.out.String())
	}
	st := w.status()
	spec, err := fdpass.ParseSpec(st.Listeners[0])
	if err != nil {
		t.Fatal(err)
	}
	w.addr = spec.Addr.String()
	return w
}

// shortTempDir is a temporary directory with a path short enough for unix
// socket names (108 bytes), which t.TempDir's long names can exceed.
func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "rpw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (w *wrapper) call(cmd string) supervisor.Response {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A restart answers at the flip; the tests that look at the
	// predecessor afterwards want it drained, as "ctl restart --wait".
	resp, err := supervisor.Call(ctx, w.control, supervisor.Request{Command: cmd, Wait: cmd == "restart"})
	if err != nil {
		w.t.Fatalf("ctl %s: %v; output:\n%s", cmd, err, w.out.String())
	}
	return resp
}

func (w *wrapper) status() supervisor.Status {
	w.t.Helper()
	resp := w.call("status")
	if resp.Status == nil {
		w.t.Fatalf("ctl status: %+v", resp)
	}
	return *resp.Status
}

// restart triggers one restart and requires it to succeed.
func (w *wrapper) restart() supervisor.RestartResult {
	w.t.Helper()
	resp := w.call("restart")
	if !resp.OK {
		w.t.Fatalf("restart failed: %s", resp.Error)
	}
	return *resp.Restart
}

// activePid is the pid of the generation receiving connections.
func (w *wrapper) activePid() int {
	for _, g := range w.status().Generations {
		if g.State == supervisor.StateActive {
			return g.Pid
		}
	}
	w.t.Fatal("no active generation")
	return 0
}

// stop sends sig to rpwrap and returns its exit status.
func (w *wrapper) stop(sig syscall.Signal) int {
	w.t.Helper()
	w.cmd.Process.Signal(sig)
	select {
	case <-w.done:
	case <-time.After(time.Minute):
		w.t.Fatal("rpwrap did not exit")
	}
	return w.cmd.ProcessState.ExitCode()
}

// notifyReader plays systemd: it receives what rpwrap sends to
// NOTIFY_SOCKET.
type notifyReader struct {
	path string
	conn *net.UnixConn
	msgs chan string
}

func newNotifyReader(t *testing.T, path string) *notifyReader {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifyReader{path: path, conn: conn, msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

// waitFor reads messages until one contains line, done closes or timeout
// passes; it reports whether the line came.
func (n *notifyReader) waitFor(t *testing.T, line string, done <-chan struct{}, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				return false
			}
			if containsLine(m, line) {
				return true
			}
		case <-done:
			return false
		case <-deadline:
			return false
		}
	}
}

func containsLine(msg, line string) bool {
	for _, l := range strings.Split(msg, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// processGone reports whether pid no longer exists (or is a zombie of
// someone else's).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] == "Z"
}
