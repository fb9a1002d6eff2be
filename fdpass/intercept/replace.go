//go:build linux

package intercept

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// bindManagedPort answers a bind of a managed port: rpwrap's socket in
// place of the server's on the first bind of a managed address, EADDRINUSE
// on later ones, and the kernel's own answer, with a log line that says
// why, on a bind that is not a managed address.
func (i *Interceptor) bindManagedPort(nfd int, n *seccompNotif, sa sockaddr) answer {
	tid, tfd := int(n.Pid), int(int32(n.Data.Args[0]))
	t, err := inspect(tid, tfd)
	if errors.Is(err, unix.EBADF) || errors.Is(err, unix.ENOTSOCK) {
		return answerContinue // the kernel answers it
	}
	if err != nil {
		i.logf("bind interception: cannot inspect the server's socket; bind refused (is rpwrap allowed to ptrace the server?)",
			"bind", sa.addr.String(), "tid", tid, "fd", tfd, "err", err)
		return answerErrno(errnoOr(err, unix.EPERM))
	}
	defer t.close()
	if m := i.byInode(t.ino); m != nil {
		if m.claimed.Load() {
			return answerContinue // rebinding rpwrap's socket: the kernel answers EINVAL
		}
		// A bind restarted after a signal, ADDFD done: finish it.
		return answer{send: true, claim: m, onReply: func() { i.injected.Add(1) }}
	}
	var misses []match
	for _, m := range i.managed {
		if m.Addr.Port() != sa.addr.Port() {
			continue
		}
		if x, ok := relate(m, sa, t); ok && x.reason == "" {
			return i.claim(nfd, n, t, x)
		} else if ok {
			misses = append(misses, x)
		}
	}
	for _, x := range misses {
		i.logf("bind interception: the server binds a managed port but not a managed address; bind left to the kernel",
			"bind", sa.addr.String(), "managed", x.m.Addr.String(), "reason", x.reason, "use", x.use, "tid", tid, "fd", tfd)
	}
	return answerContinue
}

func (i *Interceptor) byInode(ino uint64) *managed {
	for _, m := range i.managed {
		if m.ino == ino {
			return m
		}
	}
	return nil
}

// claim gives the server x's socket on its first bind of the address, and
// EADDRINUSE on every later one.
func (i *Interceptor) claim(nfd int, n *seccompNotif, t *target, x match) answer {
	if x.m.claimed.Load() {
		i.logf("bind interception: second bind of a managed address refused with EADDRINUSE; "+
			"only the first bind of each address per generation gets rpwrap's socket",
			"bind", x.m.Addr.String(), "tid", n.Pid, "fd", int32(n.Data.Args[0]))
		return answerErrno(unix.EADDRINUSE)
	}
	return i.inject(nfd, n, t, x)
}

// inject copies the server's flags and options to rpwrap's socket and puts
// it at the server's fd number.
func (i *Interceptor) inject(nfd int, n *seccompNotif, t *target, x match) answer {
	tid, tfd, m := int(n.Pid), int(int32(n.Data.Args[0])), x.m
	nonblock, cloexec, dupErr := t.nonblock, t.cloexec, t.dupErr // t is closed before onReply runs
	var copied []string
	err := withFd(m.File, func(mfd int) error {
		if err := unix.SetNonblock(mfd, t.nonblock); err != nil {
			return wrapSyscall("fcntl F_SETFL", err)
		}
		if t.dup >= 0 {
			copied = copyOptions(t.dup, mfd, m.typ)
		}
		return notifAddfdSetfd(nfd, n.ID, mfd, tfd, t.cloexec)
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
		args := []any{"bind", m.Addr.String(), "tid", tid, "fd", tfd,
			"nonblock", nonblock, "cloexec", cloexec, "copied_options", strings.Join(copied, ",")}
		if x.mapped {
			args = append(args, "ipv4_mapped", fmt.Sprintf("the server bound [::ffff:%s]:%d on an IPv6 socket and got rpwrap's IPv4 socket", m.Addr.Addr(), m.Addr.Port()))
		}
		if x.note != "" {
			args = append(args, "note", x.note)
		}
		i.logf("bind interception: server got rpwrap's socket", args...)
		if dupErr != nil {
			i.warnOptionsOnce(m, dupErr)
		}
	}}
}

// warnOptionsOnce reports, once per generation, that the server's socket
// options could not be copied because pidfd_getfd was refused.
func (i *Interceptor) warnOptionsOnce(m *managed, dupErr error) {
	if i.optionsWarned {
		return
	}
	i.optionsWarned = true
	i.logf("bind interception: socket options the server set before bind were not copied to rpwrap's socket: "+
		"pidfd_getfd was refused (a container's seccomp profile, such as Docker's default, allows it only with CAP_SYS_PTRACE); "+
		"O_NONBLOCK and FD_CLOEXEC were copied, and the server serves on rpwrap's socket",
		"bind", m.Addr.String(), "not_copied", strings.Join(optionNames(m.typ), ","),
		"fix", "docker run --cap-add SYS_PTRACE (or CAP_SYS_PTRACE for rpwrap)", "err", dupErr)
}

func errnoOr(err error, def unix.Errno) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return def
}
