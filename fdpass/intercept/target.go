//go:build linux

package intercept

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// sockKind is a socket's SO_DOMAIN, SO_TYPE and SO_PROTOCOL.
type sockKind struct{ family, typ, proto int }

// protoKinds maps the protocol names sockfs reports in the
// system.sockprotoname attribute (the kernel's struct proto name) to the
// kinds that can match a Managed socket.
var protoKinds = map[string]sockKind{
	"TCP":   {unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP},
	"TCPv6": {unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_TCP},
	"UDP":   {unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP},
	"UDPv6": {unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDP},
}

// target is what rpwrap learns of the server's socket when it binds: all of
// it from /proc/TID, which needs no more than the /proc/TID/mem read did,
// and a copy of the socket from pidfd_getfd where that is allowed.
type target struct {
	ino      uint64
	proto    string   // "TCP", "TCPv6", "MPTCP", ...
	kind     sockKind // zero unless proto is in protoKinds
	nonblock bool     // O_NONBLOCK, from /proc/TID/fdinfo
	cloexec  bool     // FD_CLOEXEC, from /proc/TID/fdinfo
	dup      int      // rpwrap's copy of the socket, or -1
	dupErr   error    // why dup is -1: pidfd_getfd refused (Docker's default seccomp profile)
}

// inspect reads what the bind of fd tfd in thread tid needs. It fails with
// EBADF when tfd is not open, ENOTSOCK when it is no socket, and with the
// error of /proc or pidfd_open otherwise. A pidfd_getfd that is refused
// (EPERM, ENOSYS) is no failure: dup is -1 and dupErr says why.
func inspect(tid, tfd int) (*target, error) {
	link := fmt.Sprintf("/proc/%d/fd/%d", tid, tfd)
	dest, err := os.Readlink(link)
	if errors.Is(err, unix.ENOENT) {
		return nil, unix.EBADF
	}
	if err != nil {
		return nil, err
	}
	t := &target{dup: -1}
	if _, err := fmt.Sscanf(dest, "socket:[%d]", &t.ino); err != nil {
		return nil, unix.ENOTSOCK
	}
	if t.proto, err = sockProtoName(link); err != nil {
		return nil, err
	}
	t.kind = protoKinds[t.proto]
	if t.nonblock, t.cloexec, err = fdFlags(tid, tfd); err != nil {
		return nil, err
	}
	t.dup, err = targetFd(tid, tfd)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) {
		t.dupErr, err = err, nil
	}
	if err != nil {
		return nil, err
	}
	if t.dup >= 0 {
		if ino, err := inode(t.dup); err != nil || ino != t.ino {
			t.close()
			return nil, fmt.Errorf("fd %d of thread %d changed while rpwrap read it", tfd, tid)
		}
	}
	return t, nil
}

func (t *target) close() {
	if t.dup >= 0 {
		unix.Close(t.dup)
		t.dup = -1
	}
}

// v6only reports IPV6_V6ONLY of the server's socket, and false for ok when
// it cannot be read (no copy of the socket, or not an IPv6 socket).
func (t *target) v6only() (on, ok bool) {
	if t.dup < 0 || t.kind.family != unix.AF_INET6 {
		return false, false
	}
	v, err := unix.GetsockoptInt(t.dup, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
	return v != 0, err == nil
}

// sockProtoName reads the protocol name of the socket link points to.
func sockProtoName(link string) (string, error) {
	buf := make([]byte, 64)
	n, err := unix.Getxattr(link, "system.sockprotoname", buf)
	if err != nil {
		return "", os.NewSyscallError("getxattr "+link+" system.sockprotoname", err)
	}
	return strings.TrimRight(string(buf[:n]), "\x00"), nil
}

// targetFd duplicates fd tfd of thread tid into rpwrap.
func targetFd(tid, tfd int) (int, error) {
	pidfd, err := unix.PidfdOpen(tid, unix.PIDFD_THREAD)
	if err == unix.EINVAL {
		pidfd, err = unix.PidfdOpen(tid, 0) // before Linux 6.9: thread group leaders only
	}
	if err != nil {
		return -1, os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, tfd, 0)
	if err != nil {
		return -1, os.NewSyscallError("pidfd_getfd", err)
	}
	return fd, nil
}

// fdFlags reads O_NONBLOCK and FD_CLOEXEC of fd in thread tid from the
// flags line of /proc/TID/fdinfo/FD (octal; the kernel adds O_CLOEXEC there
// when FD_CLOEXEC is set).
func fdFlags(tid, fd int) (nonblock, cloexec bool, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fdinfo/%d", tid, fd))
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			if err != nil {
				return false, false, fmt.Errorf("parse %s: %w", f.Name(), err)
			}
			return flags&unix.O_NONBLOCK != 0, flags&unix.O_CLOEXEC != 0, nil
		}
	}
	return false, false, fmt.Errorf("no flags line in %s", f.Name())
}
