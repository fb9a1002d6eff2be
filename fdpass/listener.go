//go:build linux

package fdpass

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listener is a listening (TCP) or bound (UDP) socket that rpwrap owns. Every
// Listener has SO_REUSEPORT (and SO_REUSEADDR for TCP), is plain TCP (never
// MPTCP), and its fd is close-on-exec. Listen creates it blocking and rpwrap
// never changes O_NONBLOCK afterwards: the flag belongs to the open file
// description rpwrap shares with the server. The one exception is the shim of
// the Nginx route, which sets O_NONBLOCK as nginx expects of an inherited
// socket before it execs nginx.
type Listener struct {
	spec Spec
	file *os.File
}

// Listen creates the socket for spec with raw socket(2), bind(2) and
// listen(2) (not net.ListenConfig, which makes MPTCP sockets). backlog <= 0
// means the kernel's maximum, net.core.somaxconn; UDP ignores it. Port 0 is
// resolved: the returned Listener's Spec().Addr has the port the kernel chose.
//
// Errors say what was done to which address and wrap the errno, so
// errors.Is(err, syscall.EADDRINUSE) and the like hold. When the address is
// held by a socket without SO_REUSEPORT, the message names the holder found
// through sock_diag(7) and /proc: "listen tcp 127.0.0.1:8080: address in use
// by a socket without SO_REUSEPORT (pid 812, nginx)", or "(holder unknown)".
// EACCES on a privileged port names CAP_NET_BIND_SERVICE and
// net.ipv4.ip_unprivileged_port_start.
func Listen(spec Spec, backlog int) (_ *Listener, err error) {
	fd, err := newSocket(spec)
	if err != nil {
		return nil, listenError(spec, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if err := bindListen(fd, spec, backlog); err != nil {
		return nil, listenError(spec, err)
	}
	if spec.Addr, err = localAddr(fd); err != nil {
		return nil, listenError(spec, err)
	}
	return &Listener{spec: spec, file: os.NewFile(uintptr(fd), spec.String())}, nil
}

func newSocket(spec Spec) (int, error) {
	family, typ, proto := unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP
	if spec.Addr.Addr().Is6() {
		family = unix.AF_INET6
	}
	if spec.Network == "udp" {
		typ, proto = unix.SOCK_DGRAM, unix.IPPROTO_UDP
	} else if spec.Network != "tcp" {
		return -1, fmt.Errorf("unknown network %q: want tcp or udp", spec.Network)
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := setReuse(fd, spec.Network == "tcp"); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func setReuse(fd int, reuseAddr bool) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return os.NewSyscallError("setsockopt SO_REUSEPORT", err)
	}
	if !reuseAddr {
		return nil
	}
	return os.NewSyscallError("setsockopt SO_REUSEADDR", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
}

func bindListen(fd int, spec Spec, backlog int) error {
	if err := ignoringEINTR(func() error { return unix.Bind(fd, sockaddr(spec.Addr)) }); err != nil {
		return os.NewSyscallError("bind", err)
	}
	if spec.Network == "udp" {
		return nil
	}
	if backlog <= 0 {
		backlog = math.MaxInt32 // the kernel caps it at net.core.somaxconn
	}
	return os.NewSyscallError("listen", unix.Listen(fd, backlog))
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is6() {
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

func localAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, os.NewSyscallError("getsockname", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("socket has address %T, not an IPv4 or IPv6 one", sa)
}

func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// Spec returns what l listens on, with port 0 resolved to the real port.
func (l *Listener) Spec() Spec { return l.spec }

// File returns rpwrap's copy of the socket, to pass to a child (as
// exec.Cmd.ExtraFiles). It stays owned by l: do not close it; call
// runtime.KeepAlive(l) after starting the child. rpwrap itself never
// switches its O_NONBLOCK flag (see Listener for the Nginx route).
func (l *Listener) File() *os.File { return l.file }

// SyscallConn gives raw access to the socket, so a *Listener is a
// syscall.Conn (for QueueDepth, or attaching a BPF program). It fails only
// when l is closed.
func (l *Listener) SyscallConn() (syscall.RawConn, error) { return l.file.SyscallConn() }

// Inode returns the socket's inode number, the N in "socket:[N]" that
// readlink shows for it in /proc/PID/fd, or 0 when l is closed.
func (l *Listener) Inode() uint64 {
	var st unix.Stat_t
	if err := control(l, func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		return 0
	}
	return st.Ino
}

// Shutdown calls shutdown(2) with SHUT_RD on a TCP listener: it stops
// listening and leaves the reuseport group, and the kernel migrates or resets
// what was queued on it (see DESIGN.md); the fd stays open until Close. For a
// UDP socket the kernel refuses with ENOTCONN and the socket stays in its
// group; the error wraps syscall.ENOTCONN. It fails as well when l is closed.
func (l *Listener) Shutdown() error {
	err := control(l, func(fd int) error { return unix.Shutdown(fd, unix.SHUT_RD) })
	if err != nil {
		return fmt.Errorf("shut down %s listener %s: %w", l.spec.Network, l.spec.Addr, os.NewSyscallError("shutdown", err))
	}
	return nil
}

// Close closes rpwrap's copy of the socket. The socket itself lives on while
// a child or a BPF map still holds it. Closing twice returns os.ErrClosed.
func (l *Listener) Close() error { return l.file.Close() }

// QueueDepth reads TCP_INFO of a listening TCP socket: queued is the number of
// connections waiting in the accept queue now (tcpi_unacked), backlog the
// queue's size (tcpi_sacked, the listen(2) backlog capped at somaxconn). It
// fails for a socket that is not TCP (ENOPROTOOPT or EOPNOTSUPP) or is closed.
func QueueDepth(sock syscall.Conn) (queued, backlog uint32, err error) {
	var info *unix.TCPInfo
	err = control(sock, func(fd int) (err error) {
		info, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("read accept queue depth: %w", os.NewSyscallError("getsockopt TCP_INFO", err))
	}
	return info.Unacked, info.Sacked, nil
}

// control runs fn on the fd of sock and returns either error.
func control(sock syscall.Conn, fn func(fd int) error) error {
	raw, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	var fnErr error
	if err := raw.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return err
	}
	return fnErr
}
