//go:build linux

package intercept

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestFirstBindOfManagedAddressGetsRpwrapsSocket(t *testing.T) {
	testutil.RequireRoot(t)
	m, ino := newManagedTCP(t)
	c := startFiltered(t, "server", os.Stderr, "self", m.Addr.String(), "accept")
	c.serve(m)
	var fd, port int
	fmt.Sscanf(c.line("bind fd="), "bind fd=%d err=ok port=%d", &fd, &port)
	if port != int(m.Addr.Port()) {
		t.Fatalf("server's bind reported port %d, want the managed %d", port, m.Addr.Port())
	}
	c.line("listening")
	pid := c.cmd.Process.Pid
	if got := fdInode(pid, fd); got != ino {
		t.Errorf("server's fd %d is socket inode %d, want rpwrap's %d", fd, got, ino)
	}
	flags := fdinfoFlags(t, pid, fd)
	if flags&unix.O_NONBLOCK == 0 || flags&unix.O_CLOEXEC == 0 {
		t.Errorf("server's fd flags %#o, want O_NONBLOCK and O_CLOEXEC copied from the server's own socket", flags)
	}
	for _, o := range []struct {
		level, opt int
		name       string
	}{{unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE"}, {unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY"}} {
		withFd(m.File, func(mfd int) error {
			v, err := unix.GetsockoptInt(mfd, o.level, o.opt)
			switch {
			case err != nil:
				t.Errorf("%s on rpwrap's socket: %v", o.name, err)
			case pidfdGetfdDenied && v != 0:
				t.Errorf("%s on rpwrap's socket = %d with pidfd_getfd refused, want 0: nothing can read the server's options", o.name, v)
			case !pidfdGetfdDenied && v == 0:
				t.Errorf("%s on rpwrap's socket = 0, want the server's 1 re-applied", o.name)
			}
			return nil
		})
	}
	if got := readHello(t, m.Addr.String()); got != "hello\n" {
		t.Errorf("connection to rpwrap's socket got %q, want the server's hello", got)
	}
	if err := c.wait(); err != nil {
		t.Errorf("server: %v", err)
	}
	if got := c.icpt.Injected(); got != 1 {
		t.Errorf("Injected() = %d, want 1", got)
	}
	checkOptionsWarning(t, c)
}

func TestUnmanagedBindGoesThroughUnchanged(t *testing.T) {
	testutil.RequireRoot(t)
	m, ino := newManagedTCP(t)
	c := startFiltered(t, "server", os.Stderr, "self", "127.0.0.1:0", "accept")
	c.serve(m)
	var fd, port int
	fmt.Sscanf(c.line("bind fd="), "bind fd=%d err=ok port=%d", &fd, &port)
	c.line("listening")
	if port == 0 || port == int(m.Addr.Port()) {
		t.Fatalf("server bound port %d, want a port of its own", port)
	}
	if got := fdInode(c.cmd.Process.Pid, fd); got == 0 || got == ino {
		t.Errorf("server's fd %d is socket inode %d, want its own socket (rpwrap's is %d)", fd, got, ino)
	}
	if got := readHello(t, fmt.Sprintf("127.0.0.1:%d", port)); got != "hello\n" {
		t.Errorf("connection to the server's own port got %q, want hello", got)
	}
	if err := c.wait(); err != nil {
		t.Errorf("server: %v", err)
	}
	if got := c.icpt.Injected(); got != 0 {
		t.Errorf("Injected() = %d, want 0", got)
	}
}

func TestWildcardBindOfManagedPortIsLeftToKernelAndLogged(t *testing.T) {
	testutil.RequireRoot(t)
	m, _ := newManagedTCP(t)
	wild := fmt.Sprintf("0.0.0.0:%d", m.Addr.Port())
	c := startFiltered(t, "server", os.Stderr, "self", wild)
	c.serve(m)
	// The kernel's own answer: rpwrap's 127.0.0.1:P listens and the server's
	// socket lacks SO_REUSEPORT.
	if l := c.line("bind fd="); !strings.Contains(l, "err=EADDRINUSE") {
		t.Errorf("server's bind of %s: %q, want the kernel's EADDRINUSE", wild, l)
	}
	c.wait()
	if got := c.icpt.Injected(); got != 0 {
		t.Errorf("Injected() = %d, want 0", got)
	}
	if got := c.logs.containing(wild, m.Addr.String()); len(got) != 1 {
		t.Errorf("log lines naming %s and %s: %q, want 1 (all: %q)", wild, m.Addr, got, c.logs.lines)
	}
}

func TestSecondBindOfManagedAddressFailsWithEADDRINUSE(t *testing.T) {
	testutil.RequireRoot(t)
	m, _ := newManagedTCP(t)
	c := startFiltered(t, "server", os.Stderr, "self", m.Addr.String(), "twice")
	c.serve(m)
	c.line("bind fd=")
	if l := c.line("bind2 "); l != "bind2 err=EADDRINUSE" {
		t.Errorf("second bind of the managed address: %q, want EADDRINUSE", l)
	}
	c.wait()
	if got := c.icpt.Injected(); got != 1 {
		t.Errorf("Injected() = %d, want 1", got)
	}
	if got := c.logs.containing("second bind", m.Addr.String()); len(got) != 1 {
		t.Errorf("log lines about the second bind: %q, want 1", got)
	}
}

func TestBindFailsWithENOSYSOnceNotifyFdIsClosed(t *testing.T) {
	testutil.RequireRoot(t)
	m, _ := newManagedTCP(t)
	c := startFiltered(t, "server", os.Stderr, "self", m.Addr.String(), "wait")
	c.notify.Close()
	c.notify = nil
	fmt.Fprintln(c.stdin, "go")
	if l := c.line("bind fd="); !strings.Contains(l, "err=ENOSYS") {
		t.Errorf("bind with no listener left: %q, want ENOSYS", l)
	}
	c.wait()
}

func TestServeReturnsWhenContextIsDone(t *testing.T) {
	testutil.RequireRoot(t)
	m, _ := newManagedTCP(t)
	c := startFiltered(t, "server", os.Stderr, "self", m.Addr.String(), "wait")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(c.notify, []Managed{m}, nil).Serve(ctx) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(eventTimeout):
		t.Fatalf("Serve did not return within %v of cancel", eventTimeout)
	}
}

func TestInstallAndSendRefusesOtherThanMainThread(t *testing.T) {
	testutil.RequireRoot(t)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must(t, err)
	parentEnd, childEnd := os.NewFile(uintptr(sp[0]), "parent"), os.NewFile(uintptr(sp[1]), "child")
	defer parentEnd.Close()
	cmd := execSelf("notmain")
	cmd.ExtraFiles = []*os.File{childEnd}
	out, err := cmd.Output()
	childEnd.Close()
	if err != nil || strings.TrimSpace(string(out)) != "ErrNotMainThread" {
		t.Errorf("InstallAndSend off the main thread: %q, %v; want ErrNotMainThread", out, err)
	}
	if _, err := Receive(parentEnd); !errors.Is(err, ErrNoNotifyFd) {
		t.Errorf("Receive after the child sent nothing = %v, want ErrNoNotifyFd", err)
	}
}

func TestReceiveRejectsAnFdThatIsNotASeccompListener(t *testing.T) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	must(t, unix.Sendmsg(sp[1], []byte{'S'}, unix.UnixRights(sp[1]), nil, 0))
	f := os.NewFile(uintptr(sp[0]), "parent")
	if got, err := Receive(f); !errors.Is(err, ErrNoNotifyFd) || !strings.Contains(err.Error(), "socket:[") {
		t.Errorf("Receive of a socket fd = %v, %v; want ErrNoNotifyFd naming the socket", got, err)
	}
}

// checkOptionsWarning checks that the options left uncopied are reported
// once when pidfd_getfd is refused, and never otherwise.
func checkOptionsWarning(t *testing.T, c *filtered) {
	t.Helper()
	want := 0
	if pidfdGetfdDenied {
		want = 1
	}
	got := c.logs.containing("were not copied", "pidfd_getfd was refused", "not_copied=SO_KEEPALIVE,", "--cap-add SYS_PTRACE")
	if len(got) != want {
		t.Errorf("log lines about options left uncopied: %q, want %d (all: %q)", got, want, c.logs.lines)
	}
}

func readHello(t *testing.T, addr string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, eventTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(eventTimeout))
	s, _ := bufio.NewReader(conn).ReadString('\n')
	return s
}

func fdinfoFlags(t *testing.T, pid, fd int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	must(t, err)
	var flags uint64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%o", &flags)
		}
	}
	return flags
}
