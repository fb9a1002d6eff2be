//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

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

// process is a child rpwrap started, leader of its own process group. It
// holds a pidfd (pidfd_open(2)) opened before the child could be reaped,
// so that a signal never reaches another process that reused the pid.
type process struct {
	pid int
	ctl processControl // nil for a real child; a test's fake otherwise

	mu       sync.Mutex
	pidfd    int  // -1 where the kernel has no pidfd_open
	released bool // reaped and released: its pid may belong to another process
}

// openProcess opens the pidfd of pid, a child that has not been reaped.
func openProcess(pid int) *process {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		fd = -1
	}
	return &process{pid: pid, pidfd: fd}
}

// signal sends sig to the process. A process that has exited (ESRCH) is no
// error.
func (p *process) signal(sig syscall.Signal) error {
	if p == nil || p.pid <= 0 {
		return nil
	}
	if p.ctl != nil {
		return p.ctl.signal(sig)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return nil
	}
	var err error
	if p.pidfd >= 0 {
		err = unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	} else {
		err = unix.Kill(p.pid, sig)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("send %v to pid %d: %w", sig, p.pid, os.NewSyscallError("pidfd_send_signal", err))
	}
	return nil
}

// killGroup sends SIGKILL to every process in the process group the child
// leads, so that workers a server forked do not keep its listening socket
// alive. An empty group (ESRCH) is no error.
func (p *process) killGroup() error {
	if p == nil || p.pid <= 0 {
		return nil // kill(0) would hit rpwrap's own group
	}
	if p.ctl != nil {
		return p.ctl.killGroup()
	}
	if err := unix.Kill(-p.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", p.pid, os.NewSyscallError("kill", err))
	}
	return nil
}

// waitGroupGone waits, up to d, until no process of the group is left,
// not even a zombie the reaper has not collected yet, so that rpwrap does
// not exit while the workers it killed are still dying. It reports whether
// the group is gone.
func (p *process) waitGroupGone(d time.Duration) bool {
	if p == nil || p.pid <= 0 || p.ctl != nil {
		return true
	}
	for deadline := time.Now().Add(d); ; {
		if err := unix.Kill(-p.pid, 0); errors.Is(err, unix.ESRCH) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond) // no event tells that a process group emptied
	}
}

// release closes the pidfd.
func (p *process) release() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.released = true
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}
