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

// replace answers a bind of a managed address: rpwrap's socket in place of
// the server's on the first bind, EADDRINUSE on later ones.
func (i *Interceptor) replace(nfd int, n *seccompNotif, sa sockaddr, cands []*managed) answer {
	tid, tfd := int(n.Pid), int(int32(n.Data.Args[0]))
	srv, err := targetFd(tid, tfd)
	if errors.Is(err, unix.EBADF) {
		return answerContinue // not an fd: the kernel answers EBADF
	}
	if err != nil {
		i.logf("bind interception: cannot inspect the server's socket; bind refused (is rpwrap allowed to ptrace the server?)",
			"bind", sa.addr.String(), "tid", tid, "fd", tfd, "err", err)
		return answerErrno(errnoOr(err, unix.EPERM))
	}
	defer unix.Close(srv)
	ino, err := inode(srv)
	if err != nil {
		return answerContinue // ENOTSOCK: the kernel answers it
	}
	m := matchKind(srv, cands)
	if m == nil {
		i.logf("bind interception: managed address bound with another kind of socket; bind left to the kernel",
			"bind", sa.addr.String(), "tid", tid, "socket", describeSocket(srv), "managed", cands[0].Network)
		return answerContinue
	}
	if ino == m.ino {
		if m.claimed {
			return answerContinue // rebinding rpwrap's socket: the kernel answers EINVAL
		}
		// A bind restarted after a signal, ADDFD done: finish it.
		return answer{send: true, claim: m, onReply: func() { i.injected.Add(1) }}
	}
	if m.claimed {
		i.logf("bind interception: second bind of a managed address refused with EADDRINUSE; "+
			"only the first bind of each address per generation gets rpwrap's socket",
			"bind", sa.addr.String(), "tid", tid, "fd", tfd)
		return answerErrno(unix.EADDRINUSE)
	}
	return i.inject(nfd, n, srv, m)
}

// inject copies the server's flags and options to rpwrap's socket and puts
// it at the server's fd number.
func (i *Interceptor) inject(nfd int, n *seccompNotif, srv int, m *managed) answer {
	tid, tfd := int(n.Pid), int(int32(n.Data.Args[0]))
	cloexec, err := fdCloexec(tid, tfd)
	if err != nil {
		i.logf("bind interception: cannot read the server's fd flags; bind refused", "tid", tid, "fd", tfd, "err", err)
		return answerErrno(errnoOr(err, unix.EPERM))
	}
	var copied []string
	var nonblock bool
	err = withFd(m.File, func(mfd int) error {
		if nonblock, err = copyNonblock(srv, mfd); err != nil {
			return err
		}
		copied = copyOptions(srv, mfd, m.typ)
		return notifAddfdSetfd(nfd, n.ID, mfd, tfd, cloexec)
	})
	if errors.Is(err, unix.ENOENT) {
		return answerNone // the task was killed
	}
	if err != nil {
		i.logf("bind interception: cannot put rpwrap's socket in the server; bind refused",
			"bind", m.Addr.String(), "tid", tid, "fd", tfd, "err", err)
		return answerErrno(errnoOr(err, unix.EIO))
	}
	return answer{send: true, claim: m, onReply: func() {
		i.injected.Add(1)
		i.logf("bind interception: server got rpwrap's socket", "bind", m.Addr.String(), "tid", tid, "fd", tfd,
			"nonblock", nonblock, "cloexec", cloexec, "copied_options", strings.Join(copied, ","))
	}}
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
	return fd, wrapSyscall("pidfd_getfd", err)
}

// fdCloexec reads FD_CLOEXEC of fd in thread tid from /proc/TID/fdinfo:
// a pidfd_getfd copy does not carry it.
func fdCloexec(tid, fd int) (bool, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fdinfo/%d", tid, fd))
	if err != nil {
		return false, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			if err != nil {
				return false, fmt.Errorf("parse %s: %w", f.Name(), err)
			}
			return flags&unix.O_CLOEXEC != 0, nil
		}
	}
	return false, fmt.Errorf("no flags line in %s", f.Name())
}

// copyNonblock gives mfd the O_NONBLOCK of srv. The flag belongs to the open
// file description, so every holder of rpwrap's socket sees the change.
func copyNonblock(srv, mfd int) (bool, error) {
	sfl, err := unix.FcntlInt(uintptr(srv), unix.F_GETFL, 0)
	if err != nil {
		return false, os.NewSyscallError("fcntl F_GETFL", err)
	}
	mfl, err := unix.FcntlInt(uintptr(mfd), unix.F_GETFL, 0)
	if err != nil {
		return false, os.NewSyscallError("fcntl F_GETFL", err)
	}
	nonblock := sfl&unix.O_NONBLOCK != 0
	if (sfl^mfl)&unix.O_NONBLOCK != 0 {
		if _, err := unix.FcntlInt(uintptr(mfd), unix.F_SETFL, mfl^unix.O_NONBLOCK); err != nil {
			return false, os.NewSyscallError("fcntl F_SETFL", err)
		}
	}
	return nonblock, nil
}

func errnoOr(err error, def unix.Errno) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return def
}
