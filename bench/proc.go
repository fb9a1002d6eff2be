//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rpwrap/rpwrap/internal/procfs"
)

// usage is what /proc says about one process at one instant.
type usage struct {
	RSSKiB  int64         `json:"rss_kib"`
	CPU     time.Duration `json:"cpu_ns"` // utime+stime
	FDs     int           `json:"fds"`
	BPFObjs int           `json:"bpf_objects"` // fds that are BPF programs, maps or links
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// 100 on every Linux architecture Go supports.
const clockTick = 100

// readUsage reads pid's RSS (VmRSS), CPU time (utime+stime), fd count and
// BPF object fds. It fails when the process is gone.
func readUsage(pid int) (usage, error) {
	var u usage
	dir := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return u, fmt.Errorf("read usage of pid %d: %w", pid, err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			u.RSSKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	st, err := procfs.ReadStat(pid)
	if err != nil {
		return u, fmt.Errorf("read state of pid %d: %w", pid, err)
	}
	u.CPU = time.Duration(st.UTime+st.STime) * time.Second / clockTick
	ents, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return u, fmt.Errorf("list fds of pid %d: %w", pid, err)
	}
	u.FDs = len(ents)
	for _, e := range ents {
		if t, err := os.Readlink(dir + "/fd/" + e.Name()); err == nil && strings.HasPrefix(t, "anon_inode:bpf") {
			u.BPFObjs++
		}
	}
	return u, nil
}

// hang makes the demo server pid hang (SIGUSR2: it stops accepting,
// answers what it had accepted, and stops itself) and returns once its
// state is T (stopped). It fails after timeout or when pid is gone.
func hang(pid int, timeout time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		return fmt.Errorf("send SIGUSR2 to demo server pid %d: %w", pid, err)
	}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		st, err := procfs.ReadStat(pid)
		if err != nil {
			return fmt.Errorf("read state of pid %d: %w", pid, err)
		}
		if st.State == 'T' {
			return nil
		}
		time.Sleep(2 * time.Millisecond) // no event tells that a process stopped itself
	}
	return errors.New("demo server pid " + strconv.Itoa(pid) + " did not stop itself within " + timeout.String() + " of SIGUSR2")
}
