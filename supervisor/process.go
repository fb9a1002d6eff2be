//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// procSpec is one child to start: the executable, its argv and env, and the
// files it gets as fds 0, 1, 2, 3, …
type procSpec struct {
	exe   string
	argv  []string
	env   []string
	files []*os.File
}

// fork starts p in a process group of its own, with SIGKILL as its parent
// death signal, so the server cannot outlive rpwrap holding its port. It
// must run on the reaper's spawner thread.
func (p procSpec) fork() (int, error) {
	fds := make([]uintptr, len(p.files))
	for i, f := range p.files {
		fd, err := rawFd(f)
		if err != nil {
			return 0, err
		}
		fds[i] = fd
	}
	pid, err := syscall.ForkExec(p.exe, p.argv, &syscall.ProcAttr{
		Env:   p.env,
		Files: fds,
		Sys: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
		},
	})
	runtime.KeepAlive(p.files)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", p.argv[0], err)
	}
	return pid, nil
}

// rawFd returns the descriptor of f without f.Fd(), which would switch a
// non-blocking file to blocking mode: the socket's O_NONBLOCK flag is shared
// with the server and is the server's business.
func rawFd(f *os.File) (uintptr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("pass %s: %w", f.Name(), err)
	}
	var fd uintptr
	if err := rc.Control(func(d uintptr) { fd = d }); err != nil {
		return 0, fmt.Errorf("pass %s: %w", f.Name(), err)
	}
	return fd, nil
}

// signalProcess sends sig to pid, ignoring a process that is already gone.
// A pid of 0 or less (a generation that never started) is ignored too:
// kill(2) would read it as a process group, rpwrap's own among them.
func signalProcess(pid int, sig syscall.Signal) error {
	if pid <= 0 {
		return nil
	}
	if err := unix.Kill(pid, sig); err != nil && err != unix.ESRCH {
		return fmt.Errorf("send %v to pid %d: %w", sig, pid, err)
	}
	return nil
}

// killGroup sends SIGKILL to every process in the group pgid, so that
// workers a server forked do not keep its listening socket alive. A pgid of
// 0 or less is ignored: kill(0) would hit rpwrap's own group.
func killGroup(pgid int) {
	if pgid > 0 {
		_ = unix.Kill(-pgid, unix.SIGKILL)
	}
}
