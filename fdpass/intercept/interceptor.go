//go:build linux

package intercept

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Managed is one socket rpwrap owns and hands to the server in place of the
// server's own when the server binds Addr.
type Managed struct {
	Network string         // "tcp" or "udp" ("tcp4", "tcp6", "udp4", "udp6" too)
	Addr    netip.AddrPort // exact address; the family follows Addr (4-in-6 is AF_INET6)
	File    *os.File       // rpwrap's socket, already bound (and listening for TCP)
}

// managed is a Managed with what matching needs, computed once.
type managed struct {
	Managed
	family, typ, proto int
	ino                uint64
	v6only             bool        // IPV6_V6ONLY of an AF_INET6 socket
	claimed            atomic.Bool // its one bind of this generation happened; written by Serve's goroutine only
}

// Interceptor answers the bind(2) notifications of one generation's process
// tree. Who gets a managed socket: the first bind of each managed address
// (exact family, address, port, SO_TYPE and SO_PROTOCOL, or the
// IPv4-mapped form of a managed IPv4 address on an AF_INET6 socket) in the
// tree gets rpwrap's socket; every later bind of that address fails with
// EADDRINUSE, so no second listener of the server, a CGI's or a worker's,
// can join the reuseport group. Binds of any other address go on unchanged.
type Interceptor struct {
	notify   *os.File
	managed  []*managed
	logf     func(msg string, args ...any)
	injected atomic.Int64

	optionsWarned bool // the options that pidfd_getfd's refusal left uncopied were reported; Serve's goroutine only
}

// New returns an Interceptor that serves the notify fd from Receive. Each
// generation needs its own Interceptor. The caller keeps ownership of
// notifyFd and the managed files and closes them after Serve returns. logf,
// if not nil, receives one line per decision worth an operator's attention
// (an injection, a refused second bind, a near miss such as 0.0.0.0:P while
// 127.0.0.1:P is managed, with the --listen that fits, socket options left
// uncopied because pidfd_getfd is denied), in log/slog's (msg, key, value,
// ...) form. A
// Managed entry with an unknown Network or a File that is not a socket is
// reported through logf and never matches.
func New(notifyFd *os.File, managed []Managed, logf func(msg string, args ...any)) *Interceptor {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	i := &Interceptor{notify: notifyFd, logf: logf}
	for _, m := range managed {
		mm, err := newManaged(m)
		if err != nil {
			logf("bind interception: managed socket ignored", "addr", m.Addr.String(), "network", m.Network, "err", err)
			continue
		}
		i.managed = append(i.managed, mm)
	}
	return i
}

func newManaged(m Managed) (*managed, error) {
	mm := &managed{Managed: m, family: familyOf(m.Addr.Addr())}
	switch m.Network {
	case "tcp", "tcp4", "tcp6":
		mm.typ, mm.proto = unix.SOCK_STREAM, unix.IPPROTO_TCP
	case "udp", "udp4", "udp6":
		mm.typ, mm.proto = unix.SOCK_DGRAM, unix.IPPROTO_UDP
	default:
		return nil, fmt.Errorf("unknown network %q, want tcp or udp", m.Network)
	}
	if m.File == nil {
		return nil, errors.New("no socket file")
	}
	err := withFd(m.File, func(fd int) (err error) {
		if mm.ino, err = inode(fd); err != nil || mm.family != unix.AF_INET6 {
			return err
		}
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		mm.v6only = v != 0
		return wrapSyscall("getsockopt IPV6_V6ONLY", err)
	})
	return mm, err
}

// Injected reports how many binds were answered with rpwrap's socket.
func (i *Interceptor) Injected() int { return int(i.injected.Load()) }

// Serve answers bind notifications until no task is left under the filter
// (POLLHUP on the notify fd: it returns nil) or ctx is done (it returns
// ctx.Err()). Tasks still blocked in bind when Serve returns wait for the
// next Serve, or fail with ENOSYS once the notify fd is closed. It fails when
// polling or receiving from the notify fd fails; errors about one bind are
// answered to that bind and reported through logf, never returned.
func (i *Interceptor) Serve(ctx context.Context) error {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("serve bind notifications: %w", os.NewSyscallError("eventfd", err))
	}
	defer unix.Close(wake)
	stop := context.AfterFunc(ctx, func() { unix.Write(wake, []byte{1, 0, 0, 0, 0, 0, 0, 0}) })
	defer stop()
	return withFd(i.notify, func(nfd int) error {
		for {
			ev, err := waitNotify(nfd, wake)
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case err != nil:
				return fmt.Errorf("serve bind notifications: %w", err)
			case ev&unix.POLLIN != 0:
				if err := i.handleOne(nfd); err != nil {
					return fmt.Errorf("serve bind notifications: %w", err)
				}
			case ev&unix.POLLHUP != 0:
				return nil // no task left under the filter
			default:
				return fmt.Errorf("serve bind notifications: notify fd reported poll events %#x", ev)
			}
		}
	})
}

// waitNotify polls the notify fd and the wake eventfd.
func waitNotify(nfd, wake int) (int16, error) {
	fds := []unix.PollFd{{Fd: int32(nfd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		return fds[0].Revents, wrapSyscall("poll", err)
	}
}

// withFd runs fn with f's descriptor without switching f to blocking mode.
func withFd(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var fnErr error
	if err := rc.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return err
	}
	return fnErr
}

func inode(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, os.NewSyscallError("fstat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return 0, unix.ENOTSOCK
	}
	return st.Ino, nil
}
