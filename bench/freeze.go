//go:build linux

package main

import (
	"syscall"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/procfs"
)

// freezeIdle SIGSTOPs pids (an old generation's processes) at a moment
// when none of them holds an accepted connection on port: a request that
// a process had already accepted is lost whatever the restart method, so
// the hang scenario freezes the old generation between requests and
// measures only what the method does with the connections that come after.
// It retries (SIGCONT, 1 ms, SIGSTOP) up to timeout and reports whether
// the processes were frozen; false when they were gone or never idle.
func freezeIdle(pids []int, port uint16, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		if !alive(pids) {
			return false
		}
		signalAll(pids, syscall.SIGSTOP)
		// A stop takes effect on the way back to user space: only then is an
		// accept that was under way visible in the fd table.
		pollUntil(time.Second, func() bool { return allStopped(pids) })
		est, err := fdpass.EstablishedInodes(port)
		if err == nil && !procfs.HoldsAny(pids, est) {
			return true
		}
		signalAll(pids, syscall.SIGCONT)
		time.Sleep(time.Millisecond) // let the in-flight request finish, then try again
	}
	return false
}

func allStopped(pids []int) bool {
	for _, pid := range pids {
		if st, err := procfs.ReadStat(pid); err == nil && st.State != 'T' && st.State != 't' && st.State != 'Z' {
			return false
		}
	}
	return true
}
