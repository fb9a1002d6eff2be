//go:build linux

package intercept

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// eventTimeout bounds every wait for an event: generous, the machine is shared.
const eventTimeout = 30 * time.Second

// filtered is a child started through the shim, its notify fd received.
type filtered struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	notify *os.File
	icpt   *Interceptor
	served chan error
	cancel context.CancelFunc
	logs   logRecorder
	exited chan error
}

type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) logf(msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := msg
	for k := 0; k+1 < len(args); k += 2 {
		line += fmt.Sprintf(" %v=%v", args[k], args[k+1])
	}
	l.lines = append(l.lines, line)
}

// containing returns the log lines that contain every one of subs.
func (l *logRecorder) containing(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for _, line := range l.lines {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// startFiltered runs the test binary as shim; the shim execs argv (argv[0]
// "self" is the test binary again, in mode next). stderr goes to errw.
func startFiltered(t testing.TB, next string, errw io.Writer, argv ...string) *filtered {
	return startFilteredEnv(t, nil, next, errw, argv...)
}

// startFilteredEnv is startFiltered with env added to the child's.
func startFilteredEnv(t testing.TB, env []string, next string, errw io.Writer, argv ...string) *filtered {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	parentEnd, childEnd := os.NewFile(uintptr(sp[0]), "parent"), os.NewFile(uintptr(sp[1]), "child")
	defer parentEnd.Close()
	c := &filtered{t: t, lines: make(chan string, 64), exited: make(chan error, 1)}
	c.cmd = exec.Command("/proc/self/exe", argv...)
	c.cmd.Env = append(withoutVar(os.Environ(), childEnv), childEnv+"=shim", nextEnv+"="+next)
	c.cmd.Env = append(c.cmd.Env, env...)
	c.cmd.ExtraFiles = []*os.File{childEnd}
	c.cmd.Stderr = errw
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	childEnd.Close()
	go c.readLines(stdout)
	t.Cleanup(c.stop)
	if c.notify, err = Receive(parentEnd); err != nil {
		t.Fatalf("receive notify fd: %v", err)
	}
	return c
}

func (c *filtered) readLines(r io.Reader) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		c.lines <- s.Text()
	}
	close(c.lines)
	c.exited <- c.cmd.Wait()
}

// serve starts an Interceptor for managed on the child's notify fd.
func (c *filtered) serve(managed ...Managed) {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.served = cancel, make(chan error, 1)
	c.icpt = New(c.notify, managed, c.logs.logf)
	go func() { c.served <- c.icpt.Serve(ctx) }()
}

// line waits for the child's next stdout line, which must start with prefix.
func (c *filtered) line(prefix string) string {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("child exited before printing %q", prefix)
		}
		if !strings.HasPrefix(l, prefix) {
			c.t.Fatalf("child printed %q, want a line starting with %q", l, prefix)
		}
		return l
	case <-time.After(eventTimeout):
		c.t.Fatalf("child printed nothing within %v, want %q", eventTimeout, prefix)
	}
	return ""
}

// wait waits for the child's exit and for Serve to return on POLLHUP.
func (c *filtered) wait() error {
	c.t.Helper()
	var err error
	select {
	case err = <-c.exited:
		c.exited <- err
	case <-time.After(eventTimeout):
		c.t.Fatalf("child did not exit within %v", eventTimeout)
	}
	if c.served != nil {
		select {
		case serr := <-c.served:
			c.served <- serr
			if serr != nil {
				c.t.Errorf("Serve after the child exited = %v, want nil (POLLHUP)", serr)
			}
		case <-time.After(eventTimeout):
			c.t.Errorf("Serve did not return within %v after the child exited", eventTimeout)
		}
	}
	return err
}

func (c *filtered) stop() {
	c.cmd.Process.Kill()
	for range c.lines { // drain until readLines has reaped the child
	}
	if c.cancel != nil {
		c.cancel()
		<-c.served
	}
	if c.notify != nil {
		c.notify.Close()
	}
	c.stdin.Close()
}

// newManagedTCP makes a socket as rpwrap does: SO_REUSEPORT, bound to
// 127.0.0.1 on a port the kernel picks, listening.
func newManagedTCP(t testing.TB) (Managed, uint64) {
	return newManagedTCPOn(t, netip.AddrFrom4([4]byte{127, 0, 0, 1}))
}

// newManagedTCPOn is newManagedTCP on addr (AF_INET6 for an IPv6 one, which
// is dual-stack as net.ipv6.bindv6only leaves it).
func newManagedTCPOn(t testing.TB, addr netip.Addr) (Managed, uint64) {
	t.Helper()
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "managed")
	t.Cleanup(func() { f.Close() })
	must(t, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1))
	if addr.Is6() {
		must(t, unix.Bind(fd, &unix.SockaddrInet6{Addr: addr.As16()}))
	} else {
		must(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.As4()}))
	}
	must(t, unix.Listen(fd, 128))
	sa, err := unix.Getsockname(fd)
	must(t, err)
	ino, err := inode(fd)
	must(t, err)
	var port int
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		port = sa.Port
	case *unix.SockaddrInet6:
		port = sa.Port
	}
	return Managed{Network: "tcp", Addr: netip.AddrPortFrom(addr, uint16(port)), File: f}, ino
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fdInode is the socket inode that fd of pid refers to, or 0.
func fdInode(pid, fd int) uint64 {
	target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	var ino uint64
	fmt.Sscanf(target, "socket:[%d]", &ino)
	return ino
}

func execSelf(mode string, args ...string) *exec.Cmd {
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Env = append(withoutVar(os.Environ(), childEnv), childEnv+"="+mode)
	return cmd
}
