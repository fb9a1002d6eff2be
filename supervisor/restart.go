//go:build linux

package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
)

// RestartResult is what one restart did and how long each step took.
type RestartResult struct {
	Generation int           `json:"generation"`             // the successor's number
	Pid        int           `json:"pid"`                    // the successor's pid
	Error      string        `json:"error,omitempty"`        // why it was rolled back; "" on success
	Ready      time.Duration `json:"ready_ns"`               // successor start to ready
	ToFlip     time.Duration `json:"to_flip_ns"`             // trigger to flip
	Overhead   time.Duration `json:"overhead_ns"`            // ToFlip minus Ready: rpwrap's own share
	Flip       time.Duration `json:"flip_ns"`                // the map updates themselves
	Drain      time.Duration `json:"drain_ns"`               // flip to predecessor stopped
	Migrated   bool          `json:"queue_handed,omitempty"` // the predecessor hung and its queue was handed over
}

// restart replaces the active generation by a new one: DESIGN.md "The data
// path of one restart", steps 2 to 7. It never returns with two generations
// active: either the successor is active and the predecessor stopped, or the
// successor is gone and the predecessor serves as before.
func (s *Supervisor) restart(ctx context.Context) RestartResult {
	t0 := time.Now()
	if s.cfg.Notifier != nil {
		s.cfg.Notifier.Reloading()
	}
	defer s.notifyReady()

	old := s.current()
	s.mu.Lock()
	g := &generation{n: s.nextGen, state: StateStarting}
	s.nextGen++
	s.mu.Unlock()
	res := RestartResult{Generation: g.n}

	fail := func(err error) RestartResult {
		s.mu.Lock()
		s.rolledBack++
		s.mu.Unlock()
		err = explainFDLimit(err)
		res.Error = err.Error()
		s.cfg.Log.Error("restart rolled back; the serving generation keeps serving", "generation", g.n, "err", err)
		return res
	}
	if old == nil || old.exited() && !s.cfg.RestartOnFailure {
		return fail(errors.New("no generation is serving"))
	}
	if err := s.newListeners(g); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	s.gens = append(s.gens, g)
	s.mu.Unlock()
	if err := s.spawn(g); err != nil {
		s.abandon(g)
		return fail(err)
	}
	res.Pid = g.pid
	g.log.Info("started successor", "predecessor", old.n)

	if err := s.waitReady(ctx, g); err != nil {
		s.abandon(g)
		return fail(fmt.Errorf("%s: %w", g, err))
	}
	res.Ready = g.readyAt.Sub(g.started)

	// The flip: one map update per group.
	tf := time.Now()
	for i, grp := range s.groups {
		if err := grp.sel.Activate(g.slots[i]); err != nil {
			for j := 0; j < i; j++ { // put the groups already flipped back
				s.groups[j].sel.Activate(old.slots[j])
			}
			s.abandon(g)
			return fail(fmt.Errorf("flip %s to %s: %w", grp.spec, g, err))
		}
	}
	res.Flip = time.Since(tf)
	res.ToFlip = time.Since(t0)
	res.Overhead = res.ToFlip - res.Ready
	s.activate(g)
	g.log.Info("flipped: new connections go to the successor", "ready_after", res.Ready.Round(time.Millisecond), "flip", res.Flip)

	res.Migrated = s.drain(old)
	res.Drain = time.Since(tf)
	s.mu.Lock()
	s.restarts++
	s.last = &res
	s.mu.Unlock()
	return res
}

// abandon stops a successor that is not going to serve and frees its
// sockets; the selector was never pointed at them.
func (s *Supervisor) abandon(g *generation) {
	if g.pid != 0 {
		if !g.exited() {
			killGroup(g.pid)
			<-g.done
		}
		killGroup(g.pid)
		if g.notify != nil {
			g.notify.Close()
		}
	}
	s.releaseListeners(g)
	s.setState(g, StateStopped)
}

// drain retires the predecessor after the flip: it lets the predecessor
// empty its accept queues, hands them to the successor if it hangs, sends
// the stop signal, waits up to the drain timeout, kills what is left, and
// closes rpwrap's copies of its sockets. It reports whether the queue had
// to be handed over.
func (s *Supervisor) drain(old *generation) (handed bool) {
	if s.cfg.ShutdownAtFlip {
		s.shutdownListeners(old)
	} else if !s.waitQueuesEmpty(old) {
		handed = true
		if s.Flavour() == bpf.EBPF {
			old.log.Warn("predecessor is not accepting: handing its queued connections to the successor", "stall", s.cfg.DrainStall)
			s.shutdownListeners(old)
		} else {
			old.log.Warn("predecessor is not accepting: relaying its queued connections to the successor", "stall", s.cfg.DrainStall)
			s.rescue(old)
		}
	}
	s.stop(old, s.cfg.DrainTimeout)
	if s.Flavour() == bpf.CBPF {
		s.rescue(old) // what completed its handshake meanwhile; closing would reset it
	}
	s.releaseListeners(old)
	return handed
}

// shutdownListeners takes g's sockets out of their groups with shutdown(2);
// with the eBPF selector the kernel migrates their queues to the active
// socket at once.
func (s *Supervisor) shutdownListeners(g *generation) {
	for _, l := range g.listeners {
		if l.Spec().Network == "tcp" {
			l.Shutdown()
		}
	}
}

// waitQueuesEmpty waits until the accept queues of g's TCP sockets are
// empty. It returns false when a queue stays non-empty without shrinking for
// DrainStall (the predecessor hangs), and true once they are empty or g has
// exited (its queue is then migrated or reset on close).
func (s *Supervisor) waitQueuesEmpty(g *generation) bool {
	const poll = 2 * time.Millisecond // the kernel gives no event for an emptied accept queue
	var last uint32
	lastChange := time.Now()
	for {
		var total uint32
		for _, l := range g.listeners {
			if l.Spec().Network != "tcp" {
				continue
			}
			if q, _, err := fdpass.QueueDepth(l); err == nil {
				total += q
			}
		}
		if total == 0 {
			return true
		}
		if g.exited() {
			return true
		}
		if total != last {
			last, lastChange = total, time.Now()
		} else if time.Since(lastChange) >= s.cfg.DrainStall {
			return false
		}
		time.Sleep(poll)
	}
}

// waitReady waits until g passes the readiness check, exits, or the ready
// timeout passes. A generation that is ready but serves on a socket of its
// own instead of the one rpwrap passed fails here too (see guard).
func (s *Supervisor) waitReady(ctx context.Context, g *generation) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	checked := make(chan error, 1)
	go func() { checked <- s.check(ctx, g) }()
	select {
	case err := <-checked:
		if err == nil {
			g.readyAt = time.Now() // what follows is rpwrap's own time
			if err := s.guard(g); err != nil {
				return err // ready, but not on the sockets rpwrap gave it
			}
			if !alive(g) {
				return fmt.Errorf("exited after it was ready, before the flip")
			}
			return nil
		}
		switch {
		case g.exited():
			return fmt.Errorf("exited before it was ready (%s)", g.exit)
		case errors.Is(context.Cause(ctx), context.Canceled):
			return errors.New("abandoned: rpwrap is stopping")
		}
		if gerr := s.guard(g); gerr != nil {
			return gerr // not ready because it serves on a socket of its own: say so
		}
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("not ready within %s (--ready-timeout; readiness check %s): %w", s.cfg.ReadyTimeout, s.cfg.Ready, err)
		}
		return err
	case <-g.done:
		cancel()
		if err := <-checked; err == nil {
			return fmt.Errorf("exited after it was ready, before the flip (%s)", g.exit)
		}
		return fmt.Errorf("exited before it was ready (%s)", g.exit)
	}
}

// alive reports whether g's main process still runs: not reaped, and not a
// zombie waiting to be (its exit is on its way to the reaper).
func alive(g *generation) bool {
	if g.exited() {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(g.pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
