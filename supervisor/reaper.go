//go:build linux

package supervisor

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exit is how a child process ended.
type Exit struct {
	Pid    int
	Status unix.WaitStatus
}

// Code is the exit status a wrapper reports for this child, as a shell
// does: the exit code, or 128+signal when a signal killed it.
func (e Exit) Code() int {
	if e.Status.Signaled() {
		return 128 + int(e.Status.Signal())
	}
	return e.Status.ExitStatus()
}

// String describes the exit for a log line: "exit status 3" or "killed by
// signal terminated".
func (e Exit) String() string {
	if e.Status.Signaled() {
		return "killed by signal " + e.Status.Signal().String()
	}
	return "exit status " + itoa(e.Status.ExitStatus())
}

// reaper is the single place where rpwrap waits for children. A wait4(-1)
// beside exec.Cmd.Wait would steal exit statuses, so every child rpwrap
// starts goes through start, and every status, including those of orphans
// re-parented to rpwrap as PID 1 or subreaper, is collected here and handed
// to whoever waits for that pid.
type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan Exit // pid -> buffered(1), closed never
	sigs    chan os.Signal
	spawn   chan spawnReq
	done    chan struct{}
	adopted map[int]<-chan Exit // the exits of the children adopted at start
}

type spawnReq struct {
	fn    func() (int, error)
	reply chan spawnRes
	raw   func() error // instead of fn: run on the spawner thread without the lock (the upgrade's execve)
}

type spawnRes struct {
	proc *process
	exit chan Exit
	err  error
}

// newReaper makes rpwrap a child subreaper, so that orphans of its servers
// are re-parented to it and reaped, and starts reaping on SIGCHLD. The
// children in adopt (started by rpwrap before an in-place upgrade) are
// waited for from the start: see adopted.
func newReaper(adopt []int) (*reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, os.NewSyscallError("prctl(PR_SET_CHILD_SUBREAPER)", err)
	}
	r := &reaper{
		waiting: map[int]chan Exit{},
		sigs:    make(chan os.Signal, 1),
		spawn:   make(chan spawnReq),
		done:    make(chan struct{}),
		adopted: map[int]<-chan Exit{},
	}
	for _, pid := range adopt {
		ch := make(chan Exit, 1)
		r.waiting[pid], r.adopted[pid] = ch, ch
	}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	if len(adopt) > 0 {
		r.sigs <- syscall.SIGCHLD // what exited during the upgrade: reap it now
	}
	go r.loop()
	go r.spawner()
	return r, nil
}

func (r *reaper) loop() {
	for {
		select {
		case <-r.done:
			return
		case <-r.sigs:
			r.reap()
		}
	}
}

// reap collects every exited child without blocking. It holds the lock
// from wait4 to the hand-over, so that an upgrade, which holds it too, sees
// every status reaped in its generation's hands or still in the kernel.
func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no child left; 0: none exited yet
		}
		if ws.Stopped() || ws.Continued() {
			continue
		}
		ch, ok := r.waiting[pid]
		delete(r.waiting, pid)
		if ok {
			ch <- Exit{Pid: pid, Status: ws}
		}
	}
}

// spawner runs on an OS thread that it locks and never releases, so the
// thread lives as long as rpwrap. PR_SET_PDEATHSIG fires when the thread
// that forked a child exits, not the process: forking from a Go thread
// that may later be destroyed would kill the server at a random moment.
//
// In the rpwrap binary the thread is the main thread (ServeMainThread): an
// in-place upgrade execs from it, and the servers' parent thread then
// lives on as the new rpwrap's main thread.
func (r *reaper) spawner() {
	run := onMainThread
	if run == nil {
		lockOSThreadForever()
		run = func(f func()) { f() }
	}
	for {
		select {
		case <-r.done:
			return
		case req := <-r.spawn:
			if req.raw != nil {
				run(func() { req.reply <- spawnRes{err: req.raw()} })
				continue
			}
			run(func() { req.reply <- r.startLocked(req.fn) })
		}
	}
}

// onThread runs fn on the spawner thread, without the reaper's lock.
func (r *reaper) onThread(fn func() error) error {
	reply := make(chan spawnRes, 1)
	select {
	case r.spawn <- spawnReq{raw: fn, reply: reply}:
	case <-r.done:
		return errors.New("supervisor is closed")
	}
	return (<-reply).err
}

// waitingLocked reports whether pid's exit is still to be reaped.
func (r *reaper) waitingLocked(pid int) bool {
	_, ok := r.waiting[pid]
	return ok
}

// startLocked runs fn, which forks, while the reaper cannot dispatch, so a
// child that exits at once still finds its waiter.
func (r *reaper) startLocked(fn func() (int, error)) spawnRes {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := fn()
	if err != nil {
		return spawnRes{err: err}
	}
	ch := make(chan Exit, 1)
	r.waiting[pid] = ch
	return spawnRes{proc: openProcess(pid), exit: ch} // not reaped before the lock is released
}

// start forks a child with fn on the spawner thread and returns it and a
// channel that receives its exit exactly once. The caller releases the
// process once it has received the exit.
func (r *reaper) start(fn func() (int, error)) (*process, <-chan Exit, error) {
	reply := make(chan spawnRes, 1)
	select {
	case r.spawn <- spawnReq{fn: fn, reply: reply}:
	case <-r.done:
		return nil, nil, errors.New("start process: supervisor is closed")
	}
	res := <-reply
	return res.proc, res.exit, res.err
}

// close stops reaping. Children still running are not waited for.
func (r *reaper) close() {
	signal.Stop(r.sigs)
	close(r.done)
}
