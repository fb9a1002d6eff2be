//go:build linux

package examples

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/loadtest"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
	"golang.org/x/sys/unix"
)

// eventTimeout bounds every wait for an event: generous, the machine is shared.
const eventTimeout = 60 * time.Second

// wrapped is a running rpwrap binary.
type wrapped struct {
	t       *testing.T
	cmd     *exec.Cmd
	dir     string
	control string
	out     *testutil.SyncBuffer
	done    chan struct{}
	ready   chan struct{}
}

// startRpwrap runs rpwrap with args (flags, "--", command) and env added to
// its environment, and returns once it told NOTIFY_SOCKET READY=1, or fails
// the test with its output if it exits first.
func startRpwrap(t *testing.T, dir string, env []string, args ...string) *wrapped {
	t.Helper()
	w := launchRpwrap(t, dir, env, args...)
	select {
	case <-w.ready:
	case <-w.done:
		t.Fatalf("rpwrap exited before it was ready (%v); output:\n%s", w.cmd.ProcessState, w.out)
	case <-time.After(eventTimeout):
		t.Fatalf("rpwrap not ready within %v; output:\n%s", eventTimeout, w.out)
	}
	return w
}

// launchRpwrap starts rpwrap without waiting for it; cleanup stops it and
// kills whatever server process is left.
func launchRpwrap(t *testing.T, dir string, env []string, args ...string) *wrapped {
	t.Helper()
	w := &wrapped{t: t, dir: dir, control: filepath.Join(dir, "ctl.sock"), out: &testutil.SyncBuffer{},
		done: make(chan struct{}), ready: make(chan struct{})}
	notify := listenNotify(t, filepath.Join(dir, "notify.sock"), w.ready)
	w.cmd = exec.Command(rpwrapBin, append([]string{"--control", w.control}, args...)...)
	w.cmd.Env = append(append(os.Environ(), "NOTIFY_SOCKET="+notify), env...)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.cmd.Wait(); close(w.done) }()
	t.Cleanup(w.stop)
	return w
}

// stop ends rpwrap with SIGTERM (its servers' graceful stop), then checks
// that no server process outlived it.
func (w *wrapped) stop() {
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(eventTimeout):
		w.t.Errorf("rpwrap did not exit within %v of SIGTERM", eventTimeout)
		w.cmd.Process.Kill()
		<-w.done
	}
	killLeftovers(w.t)
	if w.t.Failed() {
		w.t.Logf("rpwrap output:\n%s", w.out)
		if b, err := os.ReadFile(filepath.Join(w.dir, "error.log")); err == nil {
			w.t.Logf("server's error.log:\n%s", b)
		}
	}
}

// ctl runs `rpwrap ctl --control PATH --json COMMAND` and decodes its answer.
func (w *wrapped) ctl(command string) supervisor.Response {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*eventTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	args := []string{"ctl", "--control", w.control, "--json", command}
	if command == "restart" {
		args = append(args, "--wait") // the tests look at the old generation once it is drained
	}
	c := exec.CommandContext(ctx, rpwrapBin, args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	var resp supervisor.Response
	if jerr := json.Unmarshal(stdout.Bytes(), &resp); jerr != nil {
		w.t.Fatalf("rpwrap ctl %s: %v, %v; stderr: %s", command, err, jerr, stderr.String())
	}
	if (err == nil) != resp.OK {
		w.t.Errorf("rpwrap ctl %s: exit %v with ok=%v, want exit 0 exactly when ok", command, err, resp.OK)
	}
	return resp
}

// restart runs `rpwrap ctl restart` and requires it to succeed.
func (w *wrapped) restart() supervisor.RestartResult {
	w.t.Helper()
	resp := w.ctl("restart")
	if !resp.OK || resp.Restart == nil {
		w.t.Fatalf("rpwrap ctl restart: %s", resp.Error)
	}
	return *resp.Restart
}

// status runs `rpwrap ctl status`.
func (w *wrapped) status() supervisor.Status {
	w.t.Helper()
	resp := w.ctl("status")
	if resp.Status == nil {
		w.t.Fatalf("rpwrap ctl status: %s", resp.Error)
	}
	return *resp.Status
}

// generation returns the pid and state of generation n, or 0 when gone.
func (w *wrapped) generation(n int) (int, supervisor.State) {
	for _, g := range w.status().Generations {
		if g.Generation == n {
			return g.Pid, g.State
		}
	}
	return 0, ""
}

// listenNotify plays systemd's NOTIFY_SOCKET and closes ready on READY=1.
func listenNotify(t *testing.T, path string, ready chan struct{}) string {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for once := false; ; {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if !once && strings.Contains("\n"+string(buf[:n])+"\n", "\nREADY=1\n") {
				once = true
				close(ready)
			}
		}
	}()
	return path
}

// killLeftovers fails the test for every process still a child of this
// one (rpwrap is reaped by now; this process is a child subreaper, so a
// server that outlived rpwrap is here), and kills and reaps it with its
// whole tree.
func killLeftovers(t *testing.T) {
	for range 100 {
		kids := testutil.Children(os.Getpid())
		if len(kids) == 0 {
			return
		}
		for _, pid := range kids {
			t.Errorf("process %d (%s) outlived rpwrap: killing it and its descendants", pid, comm(pid))
			for _, p := range tree(pid) {
				unix.Kill(p, unix.SIGKILL)
			}
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, 0, nil)
		}
	}
}

// tree lists pid and its descendants.
func tree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, testutil.Children(out[i])...)
	}
	return out
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// signalTree sends sig to every process of pid's tree.
func signalTree(t *testing.T, pid int, sig unix.Signal) []int {
	t.Helper()
	pids := tree(pid)
	for _, p := range pids {
		if err := unix.Kill(p, sig); err != nil {
			t.Fatalf("kill %d %v: %v", p, sig, err)
		}
	}
	return pids
}

// workDir is a fresh directory that a server's unprivileged workers can
// read, with a path short enough for unix socket names.
func workDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "rpx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	return dir
}

// freeAddr is a free port on 127.0.0.1.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// startLoad starts a bounded closed-loop load on addr: clients workers,
// a new connection per request.
func startLoad(t *testing.T, addr, path string, clients int) *loadgen.Load {
	t.Helper()
	load, err := loadgen.Start(context.Background(), loadgen.Config{
		Target: addr, Path: path, Clients: clients, Duration: 5 * time.Minute, Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Stop(); load.Wait() })
	return load
}

// waitRequests waits until the load has sent n requests.
func waitRequests(t *testing.T, load *loadgen.Load, n int64) {
	t.Helper()
	loadtest.WaitSent(t, load, n, eventTimeout)
}

// requireNoLoss asserts that every request sent got a whole 200.
func requireNoLoss(t *testing.T, res loadgen.Result, atLeast int64) {
	t.Helper()
	loadtest.RequireNoLoss(t, res, atLeast)
}
