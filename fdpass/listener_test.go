//go:build linux

package fdpass

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
	"golang.org/x/sys/unix"
)

func sockopt(t *testing.T, l *Listener, level, opt int) int {
	t.Helper()
	var v int
	if err := control(l, func(fd int) (err error) { v, err = unix.GetsockoptInt(fd, level, opt); return err }); err != nil {
		t.Fatalf("getsockopt %d/%d: %v", level, opt, err)
	}
	return v
}

func TestListenMakesCloexecPlainReusePortSockets(t *testing.T) {
	for _, tc := range []struct {
		spec             string
		proto, reuseAddr int
		listening        int
	}{
		{"tcp://127.0.0.1:0", unix.IPPROTO_TCP, 1, 1},
		{"tcp://[::1]:0", unix.IPPROTO_TCP, 1, 1},
		{"udp://127.0.0.1:0", unix.IPPROTO_UDP, 0, 0},
		{"udp://[::1]:0", unix.IPPROTO_UDP, 0, 0},
	} {
		l := listenLoopback(t, tc.spec)
		got := fmt.Sprintf("SO_REUSEPORT=%d SO_REUSEADDR=%d SO_PROTOCOL=%d SO_ACCEPTCONN=%d",
			sockopt(t, l, unix.SOL_SOCKET, unix.SO_REUSEPORT), sockopt(t, l, unix.SOL_SOCKET, unix.SO_REUSEADDR),
			sockopt(t, l, unix.SOL_SOCKET, unix.SO_PROTOCOL), sockopt(t, l, unix.SOL_SOCKET, unix.SO_ACCEPTCONN))
		want := fmt.Sprintf("SO_REUSEPORT=1 SO_REUSEADDR=%d SO_PROTOCOL=%d SO_ACCEPTCONN=%d", tc.reuseAddr, tc.proto, tc.listening)
		if got != want {
			t.Errorf("%s: %s, want %s", tc.spec, got, want)
		}
		fdFlags, _ := unix.FcntlInt(l.File().Fd(), unix.F_GETFD, 0)
		flFlags, _ := unix.FcntlInt(l.File().Fd(), unix.F_GETFL, 0)
		if fdFlags&unix.FD_CLOEXEC == 0 || flFlags&unix.O_NONBLOCK != 0 {
			t.Errorf("%s: FD_CLOEXEC=%v O_NONBLOCK=%v, want close-on-exec and blocking",
				tc.spec, fdFlags&unix.FD_CLOEXEC != 0, flFlags&unix.O_NONBLOCK != 0)
		}
	}
}

func TestListenResolvesPortZero(t *testing.T) {
	l := listenLoopback(t, "web=127.0.0.1:0")
	if l.Spec().Addr.Port() == 0 || l.Spec().Name != "web" {
		t.Fatalf("Spec() = %+v, want a real port and the name kept", l.Spec())
	}
	sa, err := unix.Getsockname(int(l.File().Fd()))
	if err != nil || sa.(*unix.SockaddrInet4).Port != int(l.Spec().Addr.Port()) {
		t.Fatalf("getsockname = %v, %v; Spec says port %d", sa, err, l.Spec().Addr.Port())
	}
	conn, err := net.DialTimeout("tcp", l.Spec().Addr.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

func TestTwoListenersShareOneAddress(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		a := listenLoopback(t, network+"://127.0.0.1:0")
		b, err := Listen(a.Spec(), 0)
		if err != nil {
			t.Fatalf("second %s listener on %s: %v", network, a.Spec().Addr, err)
		}
		if b.Spec() != a.Spec() || b.Inode() == a.Inode() || b.Inode() == 0 {
			t.Errorf("%s: second listener %+v inode %d, first %+v inode %d", network, b.Spec(), b.Inode(), a.Spec(), a.Inode())
		}
		b.Close()
	}
}

func TestInodeMatchesProcFD(t *testing.T) {
	l := listenLoopback(t, "127.0.0.1:0")
	target, err := readlinkFD(int(l.File().Fd()))
	if err != nil || target != fmt.Sprintf("socket:[%d]", l.Inode()) {
		t.Fatalf("/proc/self/fd says %q (%v), Inode() = %d", target, err, l.Inode())
	}
}

func readlinkFD(fd int) (string, error) {
	buf := make([]byte, 128)
	n, err := unix.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd), buf)
	return string(buf[:max(n, 0)]), err
}

func TestListenNamesHolderOfAddressWithoutReusePort(t *testing.T) {
	port, pid := startHolder(t)
	spec, err := ParseSpec(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(spec, 0)
	if err == nil {
		l.Close()
		t.Fatal("Listen on a port held without SO_REUSEPORT succeeded")
	}
	want := fmt.Sprintf("listen tcp 127.0.0.1:%d: address in use by a socket without SO_REUSEPORT (pid %d, fdpass.test)", port, pid)
	if !errors.Is(err, syscall.EADDRINUSE) || err.Error() != want {
		t.Errorf("error %q (EADDRINUSE: %v), want %q", err, errors.Is(err, syscall.EADDRINUSE), want)
	}
}

func TestListenExplainsPrivilegedPort(t *testing.T) {
	testutil.RequireRoot(t) // to unshare a network namespace and drop a capability
	out, err := childCommand("eacces").Output()
	if err != nil {
		t.Fatalf("eacces child: %v", err)
	}
	isEACCES, msg, _ := strings.Cut(string(out), "\n")
	if isEACCES != "true" {
		t.Errorf("error %q does not match syscall.EACCES", msg)
	}
	for _, want := range []string{"listen tcp 0.0.0.0:80: permission denied: ports below 1024 need CAP_NET_BIND_SERVICE", "net.ipv4.ip_unprivileged_port_start"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestQueueDepthCountsQueuedConnections(t *testing.T) {
	const backlog, n = 16, 5
	spec, _ := ParseSpec("127.0.0.1:0")
	l, err := Listen(spec, backlog)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if queued, size, err := QueueDepth(l); queued != 0 || size != backlog || err != nil {
		t.Fatalf("QueueDepth of an idle listener = %d, %d, %v; want 0, %d", queued, size, err, backlog)
	}
	for range n {
		conn, err := net.DialTimeout("tcp", l.Spec().Addr.String(), ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
	}
	if queued := waitQueued(t, l, n); queued != n {
		t.Fatalf("QueueDepth = %d after %d connections, want %d", queued, n, n)
	}
}

// waitQueued polls QueueDepth until it reports want or a generous deadline
// passes: the final ACK of a loopback handshake may land in the queue just
// after connect(2) returns, and the kernel offers no event for it.
func waitQueued(t *testing.T, sock syscall.Conn, want uint32) uint32 {
	t.Helper()
	for deadline := time.Now().Add(ioTimeout); ; time.Sleep(10 * time.Millisecond) {
		queued, _, err := QueueDepth(sock)
		if err != nil {
			t.Fatal(err)
		}
		if queued == want || time.Now().After(deadline) {
			return queued
		}
	}
}

func TestQueueDepthFailsOnUDP(t *testing.T) {
	if _, _, err := QueueDepth(listenLoopback(t, "udp://127.0.0.1:0")); err == nil {
		t.Fatal("QueueDepth of a UDP socket succeeded")
	}
}

func TestShutdownLeavesReusePortGroup(t *testing.T) {
	const n = 10
	a := listenLoopback(t, "127.0.0.1:0")
	b, err := Listen(a.Spec(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if on := sockopt(t, a, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); on != 0 {
		t.Fatalf("SO_ACCEPTCONN = %d after Shutdown, want 0", on)
	}
	for range n {
		conn, err := net.DialTimeout("tcp", a.Spec().Addr.String(), ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
	}
	if queued := waitQueued(t, b, n); queued != n {
		t.Fatalf("the remaining listener queued %d of %d connections", queued, n)
	}
}

func TestShutdownOfUDPSocketIsENOTCONN(t *testing.T) {
	if err := listenLoopback(t, "udp://127.0.0.1:0").Shutdown(); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("Shutdown of a UDP socket: %v, want ENOTCONN", err)
	}
}

func TestListenerMethodsLeaveONonblockAlone(t *testing.T) {
	l := listenLoopback(t, "127.0.0.1:0")
	before, _ := unix.FcntlInt(l.File().Fd(), unix.F_GETFL, 0)
	if _, _, err := QueueDepth(l); err != nil || l.Inode() == 0 {
		t.Fatalf("QueueDepth: %v, Inode %d", err, l.Inode())
	}
	after, _ := unix.FcntlInt(l.File().Fd(), unix.F_GETFL, 0)
	if before != after || after&unix.O_NONBLOCK != 0 {
		t.Fatalf("file status flags %#x before, %#x after; want unchanged and blocking", before, after)
	}
}
