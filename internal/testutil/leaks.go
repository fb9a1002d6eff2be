//go:build linux

package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/rpwrap/rpwrap/internal/procfs"
)

// Snapshot is what a process holds that a test could leak: its open file
// descriptors, its child processes and the BPF programs and maps on the
// system.
type Snapshot struct {
	FDs      map[int]string // fd -> readlink target
	Children []int
	Progs    map[ebpf.ProgramID]bool
	Maps     map[ebpf.MapID]bool
}

// Take records the current Snapshot.
func Take() Snapshot {
	s := Snapshot{FDs: map[int]string{}, Progs: map[ebpf.ProgramID]bool{}, Maps: map[ebpf.MapID]bool{}}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the fd ReadDir itself used
		}
		s.FDs[fd] = target
	}
	s.Children = Children(os.Getpid())
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break
		}
		s.Progs[next], id = true, next
	}
	for id := ebpf.MapID(0); ; {
		next, err := ebpf.MapGetNextID(id)
		if err != nil {
			break
		}
		s.Maps[next], id = true, next
	}
	return s
}

// NewBPFIDs lists the BPF programs and maps in cur that base did not have.
func (base Snapshot) NewBPFIDs(cur Snapshot) (progs []ebpf.ProgramID, maps []ebpf.MapID) {
	for id := range cur.Progs {
		if !base.Progs[id] {
			progs = append(progs, id)
		}
	}
	for id := range cur.Maps {
		if !base.Maps[id] {
			maps = append(maps, id)
		}
	}
	return progs, maps
}

// Children lists the pids whose parent is ppid, zombies included.
func Children(ppid int) []int { return procfs.Children(ppid) }

// Leaked describes what cur holds that base did not, or returns nil: file
// descriptors (a BPF program or map this process keeps alive is one, and so
// is a socket that carries a reuseport program) and child processes. The
// system-wide BPF IDs are not compared: tests of other packages run at the
// same time and create their own; a test that owns objects compares their
// IDs itself (see NewBPFIDs).
func (base Snapshot) Leaked(cur Snapshot) error {
	var errs []error
	for fd, target := range cur.FDs {
		if _, ok := base.FDs[fd]; !ok {
			errs = append(errs, fmt.Errorf("fd %d (%s) leaked", fd, target))
		}
	}
	for _, pid := range cur.Children {
		errs = append(errs, fmt.Errorf("child process %d (%s) leaked", pid, comm(pid)))
	}
	return errors.Join(errs...)
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// VerifyNoLeaks runs the package's tests and fails the run when a file
// descriptor (BPF objects included) or a child process outlives them. Use it from
// TestMain: os.Exit(testutil.VerifyNoLeaks(m)). The kernel frees BPF objects
// and reaps children asynchronously, so the check allows them a few seconds
// to go.
func VerifyNoLeaks(m *testing.M) int {
	// The first pollable os.File opens the Go runtime's epoll and eventfd
	// descriptors for good; open them now so they are in the baseline.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	base := Take()
	code := m.Run()
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err = base.Leaked(Take()); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling: the kernel gives no event for these
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "leak check: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
