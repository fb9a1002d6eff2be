//go:build linux

package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/bpf"
)

// stateLocked describes the supervisor for the binary that takes over, and
// returns the descriptors the document names. The caller holds s.mu.
func (s *Supervisor) stateLocked(bin string, u upgradeRequest, res UpgradeResult, pending []restartRequest, signals []syscall.Signal) (*UpgradeState, []int) {
	var fds []int
	fd := func(c syscall.Conn) int {
		if c == nil {
			return -1
		}
		n, err := connFd(c)
		if err != nil {
			return -1
		}
		fds = append(fds, n)
		return n
	}
	s.up.mu.Lock()
	st := &UpgradeState{Version: StateVersion, From: s.cfg.Version, Binary: bin, Self: s.up.self, Argv: os.Args,
		Started: s.up.started, Upgrades: append([]UpgradeResult(nil), s.up.history...), Current: res, Trigger: u.at,
		Control: -1, Health: -1, Reply: -1, Fallback: -1, Document: -1,
		NextGen: s.nextGen, Restarts: s.restarts, RolledBack: s.rolledBack, Respawns: s.respawns}
	for w, lw := range s.up.late {
		if w.conn != nil {
			st.Waiters = append(st.Waiters, WaiterState{FD: fd(w.conn), Drains: lw.drains, Restart: lw.result})
		}
	}
	s.up.mu.Unlock()
	for _, sig := range signals {
		st.Signals = append(st.Signals, int(sig))
	}
	if s.control != nil {
		st.Control, st.ControlPath = fd(s.control.l), s.control.path
	}
	if s.health != nil {
		if c, ok := s.health.ln.(syscall.Conn); ok {
			st.Health = fd(c)
		}
	}
	if s.metricsSrv != nil {
		if c, ok := s.metricsSrv.ln.(syscall.Conn); ok {
			n := fd(c)
			st.Metrics = &n
		}
	}
	if u.conn != nil {
		st.Reply = fd(u.conn)
	}
	for _, grp := range s.groups {
		h, err := bpf.Export(grp.sel)
		if err != nil {
			s.cfg.Log.Error("upgrade: describe selector", "address", grp.spec, "err", err)
		}
		for _, o := range h.Objects {
			fds = append(fds, o.FD)
		}
		st.Groups = append(st.Groups, GroupState{Spec: grp.spec, Selector: h})
	}
	for _, g := range s.gens {
		st.Generations = append(st.Generations, s.generationState(g, fd))
	}
	if s.active != nil {
		st.Active = s.active.n
	}
	for _, h := range s.history {
		st.History = append(st.History, *h)
	}
	if s.last != nil {
		st.LastIsHistory = len(s.history) > 0 && s.history[len(s.history)-1] == s.last
		last := *s.last
		st.Last = &last
	}
	if s.lastFailed != nil {
		failed := *s.lastFailed
		st.LastFailed = &failed
	}
	for _, p := range pending {
		ps := PendingState{FD: -1, Wait: p.wait, Options: p.opts}
		if p.conn != nil {
			ps.FD = fd(p.conn)
		}
		st.Pending = append(st.Pending, ps)
	}
	return st, fds
}

// generationState describes g; fd registers a descriptor to pass.
func (s *Supervisor) generationState(g *generation, fd func(syscall.Conn) int) GenerationState {
	gs := GenerationState{N: g.n, Pid: g.pid, State: g.state, Started: g.started, Flipped: g.flipped, Deadline: g.deadline,
		Signalled: g.signalled, Binary: g.binary, Inherited: g.inherited, Slots: g.slots, Seccomp: -1}
	for _, l := range g.listeners {
		ls := ListenerState{FD: -1}
		if ino := l.Inode(); ino != 0 {
			ls.FD, ls.Inode = fd(l), ino
		}
		gs.Listeners = append(gs.Listeners, ls)
	}
	if g.notify != nil {
		if n, err := g.notify.File(); err == nil {
			gs.Notify = &FDPath{FD: fd(rawConn(n)), Path: g.notify.Path()}
		}
	}
	if g.seccomp != nil {
		gs.Seccomp = fd(g.seccomp)
		if gs.Seccomp >= 0 && g.ic != nil {
			gs.Claimed = g.ic.Claimed()
		}
	}
	if g.exited() {
		gs.Exited = &ExitState{Status: uint32(g.exit.Status)}
	}
	return gs
}

// rawConn is a descriptor number as a syscall.Conn.
type rawConn int

func (r rawConn) SyscallConn() (syscall.RawConn, error) { return r, nil }
func (r rawConn) Control(f func(uintptr)) error         { f(uintptr(r)); return nil }
func (r rawConn) Read(func(uintptr) bool) error         { return nil }
func (r rawConn) Write(func(uintptr) bool) error        { return nil }

// connFd returns c's descriptor number, failing when c is closed.
func connFd(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	n := -1
	if err := rc.Control(func(d uintptr) { n = int(d) }); err != nil {
		return -1, err
	}
	return n, nil
}

// writeState writes st into the memfd, from its start.
func writeState(memfd int, st *UpgradeState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("write the state document: %w", err)
	}
	if err := unix.Ftruncate(memfd, 0); err != nil {
		return fmt.Errorf("write the state document: %w", os.NewSyscallError("ftruncate", err))
	}
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(memfd, b[off:], int64(off))
		if err != nil {
			return fmt.Errorf("write the state document: %w", os.NewSyscallError("pwrite", err))
		}
		off += n
	}
	return nil
}

// readState reads the state document from memfd.
func readState(memfd int) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(memfd, &st); err != nil {
		return nil, fmt.Errorf("read the state document (fd %d): %w", memfd, os.NewSyscallError("fstat", err))
	}
	b := make([]byte, st.Size)
	for off := 0; off < len(b); {
		n, err := unix.Pread(memfd, b[off:], int64(off))
		if err != nil {
			return nil, fmt.Errorf("read the state document (fd %d): %w", memfd, os.NewSyscallError("pread", err))
		}
		if n == 0 {
			return nil, fmt.Errorf("read the state document (fd %d): short", memfd)
		}
		off += n
	}
	return b, nil
}
