//go:build linux

package supervisor

import (
	"runtime"
	"strconv"
)

func itoa(i int) string { return strconv.Itoa(i) }

// lockOSThreadForever pins the calling goroutine to its thread; the
// goroutine must never return, or Go would destroy the thread with it.
func lockOSThreadForever() { runtime.LockOSThread() }
