//go:build linux

package intercept

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNotMainThread is returned by InstallAndSend when it runs on another
// thread than the process's main thread. A seccomp filter installed without
// TSYNC holds for the calling thread only, and execve(2) keeps the filter of
// the thread that calls it: the shim must lock its main goroutine to the main
// thread from init() and exec from there.
var ErrNotMainThread = errors.New("seccomp filter must be installed on the main OS thread (call runtime.LockOSThread from init)")

// bindFilter returns USER_NOTIF for bind(2) of the native architecture and
// ALLOW for everything else (other architectures' and x32 binds included).
func bindFilter() []unix.SockFilter {
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK  = unix.BPF_RET | unix.BPF_K
	)
	return []unix.SockFilter{
		{Code: ldAbs, K: 4},                            // seccomp_data.arch
		{Code: jeqK, K: nativeAuditArch, Jt: 0, Jf: 3}, // other arch: allow
		{Code: ldAbs, K: 0},                            // seccomp_data.nr
		{Code: jeqK, K: unix.SYS_BIND, Jt: 0, Jf: 1},   // not bind: allow
		{Code: retK, K: unix.SECCOMP_RET_USER_NOTIF},   // bind: ask rpwrap
		{Code: retK, K: unix.SECCOMP_RET_ALLOW},
	}
}

// InstallAndSend is the child side. It installs a seccomp filter on the
// calling thread that sends every bind(2) to a listener (SECCOMP_RET_USER_NOTIF,
// flag SECCOMP_FILTER_FLAG_NEW_LISTENER), sends the listener fd over the unix
// socket sockFd with SCM_RIGHTS, and closes both fds. The filter is installed
// with a raw seccomp(2) call and without TSYNC, so call InstallAndSend on the
// main thread, locked to the main goroutine from init(), and execve(2) right
// after it on that same thread: until rpwrap answers, any bind of this process
// blocks.
//
// PR_SET_NO_NEW_PRIVS is set only when the kernel asks for it (EACCES: the
// caller lacks CAP_SYS_ADMIN); a root shim leaves setuid programs working.
//
// It fails with ErrNotMainThread on another thread, with the seccomp(2) or
// sendmsg(2) error otherwise. The filter cannot be removed: after an error
// past installation the process must not exec the server (its binds would
// block until the listener fd is closed, then fail with ENOSYS).
func InstallAndSend(sockFd int) error {
	defer unix.Close(sockFd)
	if unix.Gettid() != unix.Getpid() {
		return ErrNotMainThread
	}
	lfd, err := installFilter()
	if err != nil {
		return fmt.Errorf("install seccomp bind filter: %w", err)
	}
	defer unix.Close(lfd)
	if err := sendFd(sockFd, lfd); err != nil {
		return fmt.Errorf("send seccomp notify fd to rpwrap: %w", err)
	}
	return nil
}

// installFilter loads the filter, trying WAIT_KILLABLE_RECV first and adding
// NO_NEW_PRIVS when unprivileged.
func installFilter() (int, error) {
	filter := bindFilter()
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | seccompFilterFlagWaitKillableRecv)
	for {
		fd, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
		runtime.KeepAlive(filter)
		switch {
		case errno == 0:
			return int(fd), nil
		case errno == unix.EINVAL && flags&seccompFilterFlagWaitKillableRecv != 0:
			flags &^= seccompFilterFlagWaitKillableRecv // before Linux 5.19
		case errno == unix.EACCES && !noNewPrivs():
			if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				return -1, os.NewSyscallError("prctl PR_SET_NO_NEW_PRIVS", err)
			}
		default:
			return -1, os.NewSyscallError("seccomp SECCOMP_SET_MODE_FILTER", errno)
		}
	}
}

func noNewPrivs() bool {
	v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	return err == nil && v == 1
}

func sendFd(sockFd, fd int) error {
	for {
		err := unix.Sendmsg(sockFd, []byte{'S'}, unix.UnixRights(fd), nil, 0)
		if err != unix.EINTR {
			return wrapSyscall("sendmsg", err)
		}
	}
}
