//go:build linux

package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/rpwrap/rpwrap/internal/procfs"
	"golang.org/x/sys/unix"
)

// The real servers daemonize, re-exec and fork masters of their own; the
// bench is a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER) so that
// every server process stays its descendant, where it can be found, frozen
// and killed, and it reaps the orphans that come to it.

// tracked are the pids that an exec.Cmd of the bench waits for; the
// orphan reaper leaves them to it.
var tracked sync.Map // pid → struct{}

// becomeSubreaper makes the bench the reaper of its orphaned descendants
// and starts reaping them. It fails when prctl does.
func becomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	go reapOrphans()
	return nil
}

// reapOrphans reaps exited children that no exec.Cmd waits for. It peeks
// with WNOWAIT first so that it never steals a tracked child's status.
func reapOrphans() {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		pid := siginfoPid(&info)
		if err == nil && pid > 0 {
			if _, ok := tracked.Load(pid); !ok {
				var ws unix.WaitStatus
				unix.Wait4(pid, &ws, unix.WNOHANG, nil)
				continue
			}
		}
		time.Sleep(20 * time.Millisecond) // polling: SIGCHLD belongs to os/exec
	}
}

// siginfoPid is si_pid of a SIGCHLD siginfo (offset 16 on 64-bit Linux).
func siginfoPid(info *unix.Siginfo) int {
	b := (*[128]byte)(unsafe.Pointer(info))
	return int(int32(uint32(b[16]) | uint32(b[17])<<8 | uint32(b[18])<<16 | uint32(b[19])<<24))
}

// proc is one process of the bench's tree.
type proc struct {
	Pid, PPid int
	Comm      string
	State     string
}

// descendants lists the processes below the bench (not the bench).
func descendants() []proc {
	all := map[int][]proc{}
	for pid, st := range procfs.All() {
		all[st.PPid] = append(all[st.PPid], proc{Pid: pid, PPid: st.PPid, Comm: st.Comm, State: string(st.State)})
	}
	var out []proc
	queue := []int{os.Getpid()}
	for len(queue) > 0 {
		for _, c := range all[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.Pid)
		}
		queue = queue[1:]
	}
	return out
}

// serverProcs are the live (not zombie) descendants named comm.
func serverProcs(comm string) []proc {
	var out []proc
	for _, p := range descendants() {
		if p.Comm == comm && p.State != "Z" {
			out = append(out, p)
		}
	}
	return out
}

// masters are the processes of ps whose parent is not in ps: the top of
// each server tree.
func masters(ps []proc) map[int]bool {
	in := map[int]bool{}
	for _, p := range ps {
		in[p.Pid] = true
	}
	out := map[int]bool{}
	for _, p := range ps {
		if !in[p.PPid] {
			out[p.Pid] = true
		}
	}
	return out
}

// subtree lists pid and its live descendants named like it.
func subtree(pid int, ps []proc) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		for _, p := range ps {
			if p.PPid == out[i] {
				out = append(out, p.Pid)
			}
		}
	}
	return out
}

// alive tells whether any of pids is a live process (not a zombie).
func alive(pids []int) bool {
	for _, pid := range pids {
		if procfs.Alive(pid) {
			return true
		}
	}
	return false
}

// waitGone waits up to grace for pids to exit, then SIGKILLs the rest and
// waits for them. It reports whether they had to be killed.
func waitGone(pids []int, grace time.Duration) bool {
	if pollUntil(grace, func() bool { return !alive(pids) }) {
		return false
	}
	signalAll(pids, syscall.SIGKILL)
	pollUntil(10*time.Second, func() bool { return !alive(pids) })
	return true
}

func signalAll(pids []int, sig syscall.Signal) {
	for _, pid := range pids {
		syscall.Kill(pid, sig)
	}
}

// pollUntil polls cond every 2 ms for up to timeout (process states have
// no event the bench can wait on).
func pollUntil(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond) // polling /proc; bounded by timeout
	}
}

// killComm SIGKILLs every descendant named comm and waits until none is
// left: no server outlives a row.
func killComm(comm string) {
	var pids []int
	for _, p := range serverProcs(comm) {
		pids = append(pids, p.Pid)
	}
	if len(pids) > 0 {
		waitGone(pids, 0)
	}
}

type unixStat = unix.Stat_t

func statInode(path string, st *unix.Stat_t) error { return unix.Stat(path, st) }

// exeInode is the inode of the binary pid runs.
func exeInode(pid int) uint64 {
	var st unix.Stat_t
	if unix.Stat("/proc/"+strconv.Itoa(pid)+"/exe", &st) != nil {
		return 0
	}
	return st.Ino
}
