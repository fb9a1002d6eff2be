//go:build linux

package supervisor

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/procfs"
)

// The drain of a replaced generation, in the background, one goroutine per
// draining generation (DESIGN.md, step 7):
//
//  1. After Config.DrainDelay, wait until its queues are empty: the accept
//     queues of its TCP sockets and the receive queues of its UDP sockets.
//     A queue that does not shrink for Config.DrainStall means it hangs:
//     hand the queued connections over (eBPF: the kernel migrates them;
//     cBPF: rpwrap relays them).
//  2. Send the stop signal, and watch until it exits or its deadline
//     (Config.DrainTimeout after its flip) passes, then SIGKILL its group.
//     While it runs, a connection may still land on its socket: one that
//     completed its handshake before the flip but is let into the accept
//     queue only with its first data (TCP_DEFER_ACCEPT). Once no process of
//     the generation holds the socket, rpwrap lets go of its own copy
//     (eBPF: the kernel migrates what arrives later) or relays what
//     arrives (cBPF), so nothing waits on a socket nobody accepts from.
//  3. Retire it.
//
// endDrain (the --max-draining cap, rpwrap stopping) skips the waits: the
// stop signal goes out at once and SIGKILL follows after Config.StopTimeout
// at most, or its own deadline if that comes first.

const (
	maxLinger  = 2 * time.Second       // see relayLingering
	drainPoll  = 2 * time.Millisecond  // the kernel gives no event for an emptied queue
	holderPoll = 50 * time.Millisecond // how often /proc is read to see who still holds a socket
)

// drain retires old, replaced at tf, and records in rec, before old is
// retired, how long it took and whether its queued connections had to be
// handed over.
func (s *Supervisor) drain(old *generation, tf, deadline time.Time, rec *RestartResult) {
	handed := false
	if s.cfg.ShutdownAtFlip { // eBPF only (New)
		s.shutdownListeners(old)
	}
	if s.pause(old, s.cfg.DrainDelay) && s.holdFlows(old, tf, deadline) && !s.waitQueuesEmpty(old, deadline) {
		handed = true
		s.handOver(old, "not accepting")
	}
	s.stopSignal(old)
	if s.watch(old, deadline) {
		handed = true
	}
	if s.Flavour() == bpf.CBPF {
		s.relayLingering(old, deadline)
	}
	s.mu.Lock()
	rec.Drained, rec.Drain, rec.Migrated = true, time.Since(tf), handed
	s.metrics.observeDrain(rec)
	s.mu.Unlock()
	s.retire(old, StateStopped)
	s.emitGen(EventDrainEnded, old, Event{Took: time.Since(tf), HandedOver: handed})
}

// pause waits d, and reports false when the drain was told to end first.
func (s *Supervisor) pause(g *generation, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-g.stopNow:
		return false
	case <-g.done:
		return true
	}
}

// queued sums what waits on g's sockets: connections in the TCP accept
// queues, bytes in the UDP receive queues.
func queued(g *generation) (total uint64) {
	for _, l := range g.listeners {
		if l.Spec().Network == "tcp" {
			if q, _, err := fdpass.QueueDepth(l); err == nil {
				total += uint64(q)
			}
		} else if q, err := fdpass.ReceiveQueue(l); err == nil {
			total += uint64(q)
		}
	}
	return total
}

// waitQueuesEmpty waits until g's queues are empty. It returns false when
// they stay non-empty without shrinking for DrainStall (g hangs), and true
// once they are empty, g has exited, the drain was told to end, or its
// deadline has come.
func (s *Supervisor) waitQueuesEmpty(g *generation, deadline time.Time) bool {
	var last uint64
	lastChange := time.Now()
	for {
		total := queued(g)
		if total == 0 || g.exited() || time.Now().After(deadline) {
			return true
		}
		if total < last || last == 0 {
			lastChange = time.Now()
		}
		last = total
		if time.Since(lastChange) >= s.cfg.DrainStall {
			return false
		}
		select {
		case <-g.stopNow:
			return true
		case <-time.After(drainPoll):
		}
	}
}

// stopSignal sends the stop signal to g's main process.
func (s *Supervisor) stopSignal(g *generation) {
	if g.exited() {
		return
	}
	g.log.Info("stopping", "signal", sigName(s.cfg.StopSignal))
	s.mu.Lock() // one step for an upgrade: signalled and sent, or neither
	g.signalled = true
	err := g.proc.signal(s.cfg.StopSignal)
	s.mu.Unlock()
	if err != nil {
		g.log.Error("cannot send the stop signal: it is killed at its deadline", "err", err)
	}
}

// watch waits until g's main process exits, or its deadline passes (then
// its process group is killed), and meanwhile keeps its sockets from
// holding connections nobody accepts. It reports whether it handed queued
// connections over.
func (s *Supervisor) watch(g *generation, deadline time.Time) (handed bool) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	stopNow := g.stopNow
	var lastHolderCheck time.Time
	var last uint64
	lastChange, letGo := time.Now(), false
	early := false // told to stop before its deadline: killed after StopTimeout
	for {
		select {
		case <-g.done:
			s.killWorkers(g)
			return handed
		case <-timer.C:
			if early {
				g.log.Warn("did not stop within --stop-timeout of being told to stop: sending SIGKILL to its process group", "stop_timeout", s.cfg.StopTimeout)
			} else {
				g.log.Warn("did not stop by its deadline: sending SIGKILL to its process group", "drain_timeout", s.cfg.DrainTimeout)
			}
			s.killWorkers(g)
			<-g.done
			return handed
		case <-stopNow:
			stopNow = nil
			if time.Until(deadline) > s.cfg.StopTimeout {
				early = true
				timer.Reset(s.cfg.StopTimeout)
			}
		case <-tick.C:
		}
		if letGo && s.Flavour() == bpf.EBPF {
			continue
		}
		total := queued(g)
		if !letGo && time.Since(lastHolderCheck) >= holderPoll {
			lastHolderCheck = time.Now()
			if !s.system().holdsSockets(g) {
				letGo = true
				handed = s.letGo(g) || handed
				continue
			}
		}
		switch {
		case total == 0:
			last, lastChange = 0, time.Now()
		case letGo: // cBPF: nobody of g accepts any more
			s.rescue(g)
			handed = true
		case total < last || last == 0:
			last, lastChange = total, time.Now()
		case time.Since(lastChange) >= s.cfg.DrainStall:
			s.handOver(g, "stopped accepting")
			handed, last, lastChange = true, 0, time.Now()
		}
	}
}

// holdsSockets reports whether a process of g's tree still holds one of
// g's sockets.
func (s *Supervisor) holdsSockets(g *generation) bool {
	inodes := map[uint64]bool{}
	for _, l := range g.listeners {
		if ino := l.Inode(); ino != 0 {
			inodes[ino] = true
		}
	}
	return len(inodes) > 0 && procfs.HoldsAny(procfs.Tree(g.pid), inodes)
}

// letGo is called once no process of g holds its sockets any more: with
// the eBPF selector rpwrap closes its copies, so the sockets leave their
// groups and the kernel migrates whatever is queued or arrives later; with
// cBPF it relays what is queued now (and keeps relaying in watch).
func (s *Supervisor) letGo(g *generation) (handed bool) {
	if s.Flavour() == bpf.CBPF {
		g.log.Info("no process of it holds its sockets any more: rpwrap relays what still arrives on them")
		return s.rescue(g) > 0
	}
	handed = queued(g) > 0
	g.log.Info("no process of it holds its sockets any more: rpwrap lets go of them, the kernel migrates what still arrives")
	if err := s.releaseListeners(g); err != nil {
		g.log.Error("release sockets", "err", err)
	}
	return handed
}

// handOver moves the connections queued on g's TCP sockets to the active
// generation while g still holds them but does not accept: the kernel
// migrates them after shutdown(2) (eBPF), or rpwrap relays them (cBPF).
// Datagrams queued on a UDP socket cannot be moved: they are read by g or
// lost when it closes the socket.
func (s *Supervisor) handOver(g *generation, why string) {
	if !hasTCP(g) {
		g.log.Warn(why+": its datagrams still queued are lost when it closes its sockets", "stall", s.cfg.DrainStall)
		return
	}
	if s.Flavour() == bpf.EBPF {
		g.log.Warn(why+": handing its queued connections to the active generation", "stall", s.cfg.DrainStall)
		s.shutdownListeners(g)
		return
	}
	g.log.Warn(why+": relaying its queued connections to the active generation", "stall", s.cfg.DrainStall)
	s.rescue(g)
}

// shutdownListeners takes g's TCP sockets out of their groups with
// shutdown(2); with the eBPF selector the kernel migrates their queues to
// the active socket at once.
func (s *Supervisor) shutdownListeners(g *generation) {
	for _, l := range g.listeners {
		if l.Spec().Network != "tcp" || l.Inode() == 0 {
			continue
		}
		if err := l.Shutdown(); err != nil {
			g.log.Error("cannot hand its queue over: its queued connections wait until it exits", "err", err)
		}
	}
}

// relayLingering, with cBPF, keeps relaying what lands on g's TCP sockets
// for a while after g exited when they have TCP_DEFER_ACCEPT (a client that
// connected before the flip may send its first bytes only now), and then
// once more: closing a socket with a connection on it resets that
// connection. The while is the defer period, at most maxLinger: a client
// silent for longer than that after the old generation ended is reset
// (the eBPF selector migrates it instead).
func (s *Supervisor) relayLingering(g *generation, deadline time.Time) {
	var longest time.Duration
	for _, l := range g.listeners {
		if d := deferAccept(l); d > longest {
			longest = d
		}
	}
	until := time.Now().Add(min(longest, maxLinger))
	if until.After(deadline) {
		until = deadline
	}
	for time.Now().Before(until) {
		s.rescue(g)
		select {
		case <-g.stopNow:
			until = time.Now()
		case <-time.After(5 * drainPoll):
		}
	}
	s.rescue(g)
}

// deferAccept reads TCP_DEFER_ACCEPT of a TCP listener: 0 when unset.
func deferAccept(l *fdpass.Listener) time.Duration {
	if l.Spec().Network != "tcp" || l.Inode() == 0 {
		return 0
	}
	rc, err := l.SyscallConn()
	if err != nil {
		return 0
	}
	var secs int
	rc.Control(func(fd uintptr) {
		secs, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT)
	})
	return time.Duration(secs) * time.Second
}

// killWorkers kills what is left of g's process group once its main
// process is gone or late.
func (s *Supervisor) killWorkers(g *generation) {
	if err := g.proc.killGroup(); err != nil {
		g.log.Warn("kill process group", "err", err)
	}
}

// hasTCP reports whether g has a TCP socket.
func hasTCP(g *generation) bool {
	for _, l := range g.listeners {
		if l.Spec().Network == "tcp" {
			return true
		}
	}
	return false
}
