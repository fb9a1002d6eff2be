//go:build linux

package demoserver

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// childEnv marks the test binary re-executed as the demo server. Its value
// "setpid" makes the child set LISTEN_PID to its own pid before calling Main,
// which exec.Cmd cannot do for it (rpwrap's exec shim does it in production).
const childEnv = "DEMOSERVER_TEST_CHILD"

// eventTimeout bounds every wait for an event from a child: generous, for a
// noisy machine.
const eventTimeout = 20 * time.Second

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Unsetenv(childEnv)
		if mode == "setpid" {
			os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		}
		os.Exit(Main(os.Args[1:]))
	}
	startNetpoller()
	os.Exit(testutil.VerifyNoLeaks(m))
}

// startNetpoller makes the Go runtime open its epoll and eventfd
// descriptors, which it does on first use and keeps for good, so that the
// leak check does not count them.
func startNetpoller() {
	r, w, err := os.Pipe()
	if err == nil {
		r.Close()
		w.Close()
	}
}

// child is the demo server running in a re-executed test binary on one
// loopback socket passed as fd 3.
type child struct {
	cmd    *exec.Cmd
	addr   string
	notify *net.UnixConn
	stderr lockedBuffer
	done   chan struct{}
	err    error // from Wait, once done is closed
}

// startChild starts the demo server with args on a fresh 127.0.0.1 socket,
// with its own NOTIFY_SOCKET, and stops it at the end of the test.
func startChild(t testing.TB, args ...string) *child {
	t.Helper()
	ln := listenLoopback(t)
	f := dupListener(t, ln)
	c := &child{addr: ln.Addr().String(), notify: notifySocket(t), done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], args...)
	c.cmd.Env = append(cleanEnv(), childEnv+"=setpid", "LISTEN_FDS=1", "RPWRAP_GENERATION=7",
		"NOTIFY_SOCKET="+c.notify.LocalAddr().String())
	c.cmd.ExtraFiles = []*os.File{f}
	c.cmd.Stderr = &c.stderr
	err := c.cmd.Start()
	f.Close()
	ln.Close() // the child holds the socket now
	if err != nil {
		t.Fatalf("start demo server: %v", err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.kill(t) })
	return c
}

func (c *child) kill(t testing.TB) {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Kill()
	<-c.done
	if t.Failed() {
		t.Logf("demo server stderr:\n%s", c.stderr.String())
	}
}

// exitCode waits for the child to exit and returns its status.
func (c *child) exitCode(t testing.TB) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(eventTimeout):
		t.Fatalf("demo server pid %d did not exit within %v; stderr:\n%s", c.cmd.Process.Pid, eventTimeout, c.stderr.String())
	}
	var ee *exec.ExitError
	if c.err != nil && !errors.As(c.err, &ee) {
		t.Fatalf("wait for demo server: %v", c.err)
	}
	return c.cmd.ProcessState.ExitCode()
}

// signal sends sig to the child.
func (c *child) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("send %v to demo server: %v", sig, err)
	}
}

// waitReady waits for READY=1 on the child's NOTIFY_SOCKET.
func (c *child) waitReady(t testing.TB) {
	t.Helper()
	c.notify.SetReadDeadline(time.Now().Add(eventTimeout))
	buf := make([]byte, 4096)
	n, err := c.notify.Read(buf)
	if err != nil {
		t.Fatalf("wait for READY=1 from demo server: %v; stderr:\n%s", err, c.stderr.String())
	}
	if got := string(buf[:n]); !strings.Contains(got, "READY=1") {
		t.Fatalf("notification = %q, want READY=1", got)
	}
}

// pendingNotification returns what the child sent to NOTIFY_SOCKET and is
// still unread, without waiting.
func (c *child) pendingNotification(t testing.TB) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, _, err := unixRecv(c.notify, buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

func unixRecv(conn *net.UnixConn, buf []byte) (n int, from unix.Sockaddr, err error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, nil, err
	}
	rerr := rc.Control(func(fd uintptr) {
		n, from, err = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
	})
	return n, from, errors.Join(rerr, err)
}

func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.1: %v", err)
	}
	return ln
}

// dupListener duplicates ln's socket without switching it to blocking mode,
// which (*net.TCPListener).File would do.
func dupListener(t testing.TB, ln net.Listener) *os.File {
	t.Helper()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		t.Fatal(err)
	}
	if dupErr != nil {
		t.Fatalf("dup listening socket: %v", dupErr)
	}
	return os.NewFile(uintptr(fd), "listener")
}

func notifySocket(t testing.TB) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on notify socket %s: %v", path, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// cleanEnv is the test's environment without anything that would confuse
// the child about its sockets or its supervisor.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "RPWRAP_GENERATION", childEnv:
			continue
		}
		env = append(env, kv)
	}
	return env
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
