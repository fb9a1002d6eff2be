//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rpwrap/rpwrap/internal/procfs"
)

// RestartResult is what one restart did and how long each step took.
type RestartResult struct {
	Generation  int            `json:"generation"`             // the successor's number
	Pid         int            `json:"pid"`                    // the successor's pid
	Predecessor int            `json:"predecessor,omitempty"`  // the generation it replaced
	At          time.Time      `json:"at"`                     // when the restart began
	Error       string         `json:"error,omitempty"`        // why it was rolled back; "" on success
	Ready       time.Duration  `json:"ready_ns"`               // successor start to ready
	ToFlip      time.Duration  `json:"to_flip_ns"`             // trigger to flip
	Overhead    time.Duration  `json:"overhead_ns"`            // ToFlip minus Ready and Canary: rpwrap's own share
	Canary      time.Duration  `json:"canary_ns,omitempty"`    // the canary stages, part of ToFlip
	Flip        time.Duration  `json:"flip_ns"`                // the map updates themselves
	Drained     bool           `json:"drained,omitempty"`      // the predecessor has been drained and retired
	Drain       time.Duration  `json:"drain_ns"`               // flip to predecessor retired, once Drained
	Migrated    bool           `json:"queue_handed,omitempty"` // the predecessor's queued connections were handed over
	Rollout     *RolloutStatus `json:"rollout,omitempty"`      // its canary and watch, when it had one
}

// restart replaces the active generation by a new one: DESIGN.md "The data
// path of one restart", steps 2 to 6. It returns at the flip, with the
// predecessor draining in the background (drained is closed once it is
// retired), or, on failure, with the successor retired and the
// predecessor serving as before (drained is nil).
func (s *Supervisor) restart(ctx context.Context, ro rollout) (res RestartResult, drained <-chan struct{}) {
	t0 := time.Now()
	s.notify("reloading", s.cfg.Notifier.Reloading)
	defer s.notifyReady()

	old := s.current()
	s.mu.Lock()
	g := newGeneration(s.nextGen)
	s.nextGen++
	s.mu.Unlock()
	res = RestartResult{Generation: g.n, At: t0}
	fail := func(err error) (RestartResult, <-chan struct{}) {
		err = explainFDLimit(err)
		res.Error = err.Error()
		s.record(&res, false)
		s.emitGen(EventRolledBack, g, Event{Predecessor: res.Predecessor, Reason: res.Error})
		s.cfg.Log.Error("restart rolled back; the serving generation keeps serving", "generation", g.n, "err", err)
		return res, nil
	}
	if old == nil || old.exited() {
		return fail(errors.New("no generation is serving"))
	}
	res.Predecessor = old.n
	if err := s.newListeners(g); err != nil {
		return fail(err)
	}
	if err := s.spawn(g); err != nil {
		s.retire(g, StateAbandoned) // never started: retire frees its sockets
		return fail(err)
	}
	s.publish(g)
	res.Pid = g.pid
	g.log.Info("started successor", "predecessor", old.n)
	s.emitGen(EventStarted, g, Event{Predecessor: old.n})

	readyAt, err := s.waitReady(ctx, g)
	if err != nil {
		s.retire(g, s.endOfUnready(g))
		return fail(fmt.Errorf("%s: %w", g, err))
	}
	res.Ready = readyAt.Sub(g.started)
	s.emitGen(EventReady, g, Event{Took: res.Ready})
	if ctx.Err() != nil { // rpwrap is stopping: a check that passed regardless must not flip to it
		s.retire(g, StateAbandoned)
		return fail(fmt.Errorf("%s: abandoned: rpwrap is stopping", g))
	}
	s.capDraining() // only now is one more generation going to drain
	if err := s.runCanary(ctx, old, g, ro, &res); err != nil {
		return fail(err) // g is retired already
	}
	s.standBy(old, ro)
	tf := time.Now()
	if err := s.flip(old, g); err != nil {
		s.standBy(old, rollout{})
		s.clearShare()
		s.endRollout("rolled back", err.Error(), 0)
		s.retire(g, StateAbandoned)
		return fail(err)
	}
	res.Flip = time.Since(tf)
	res.ToFlip = time.Since(t0)
	res.Overhead = res.ToFlip - res.Ready - res.Canary
	g.log.Info("flipped: new connections go to the successor", "ready_after", res.Ready.Round(time.Millisecond), "flip", res.Flip)
	if err := s.watchAfterFlip(ctx, old, g, ro, &res); err != nil {
		return fail(err) // flipped back, g retired
	}
	if ro.watch > 0 {
		tf = time.Now() // the drain begins when the watch ends
	}
	rec := s.record(&res, true)
	s.emitGen(EventFlipped, g, Event{Predecessor: old.n, Took: res.ToFlip})
	s.startDrain(old, tf, rec)
	return res, old.retired
}

// endOfUnready is the final state of a successor that did not get ready:
// crashed when it exited on its own (a zombie not reaped yet counts), else
// abandoned.
func (s *Supervisor) endOfUnready(g *generation) State {
	if g.done != nil && !g.exited() && !s.system().alive(g) {
		<-g.done // it is a zombie: its exit is on its way
	}
	if g.exited() {
		return StateCrashed
	}
	return StateAbandoned
}

// flip points every group's selector at g and makes g the active
// generation. When a group refuses, the groups already flipped are put
// back to old and old stays active.
func (s *Supervisor) flip(old, g *generation) error {
	if s.stateOf(g) != StateCanary && !s.setState(g, StateReady) {
		return fmt.Errorf("flip to %s: not in a state to be flipped to", g)
	}
	for i, grp := range s.groups {
		err := grp.sel.Activate(g.slots[i])
		if err == nil {
			continue
		}
		for j := 0; j < i; j++ {
			if berr := s.groups[j].sel.Activate(old.slots[j]); berr != nil {
				// Nothing is left to try: say which group now serves whom.
				s.cfg.Log.Error("cannot put the selector back after a failed flip: this address now sends new connections to the successor, which is being stopped",
					"address", s.groups[j].spec, "err", berr)
			}
		}
		return fmt.Errorf("flip %s to %s: %w", grp.spec, g, err)
	}
	s.activate(g)
	return nil
}

// startDrain drains old in the background from the flip at tf, recording
// the outcome in rec.
func (s *Supervisor) startDrain(old *generation, tf time.Time, rec *RestartResult) {
	deadline := tf.Add(s.cfg.DrainTimeout)
	s.mu.Lock()
	old.deadline = deadline
	s.mu.Unlock()
	s.emitGen(EventDrainBegan, old, Event{Deadline: &deadline})
	s.drains.Add(1)
	s.goSafe(func() {
		defer s.drains.Done()
		s.drain(old, tf, deadline, rec)
	})
}

// capDraining ends the drain of the oldest draining generations when one
// more would exceed Config.MaxDraining.
func (s *Supervisor) capDraining() {
	s.mu.Lock()
	var draining []*generation
	for _, g := range s.gens {
		if g.state == StateDraining {
			select {
			case <-g.stopNow: // being stopped already
			default:
				draining = append(draining, g)
			}
		}
	}
	s.mu.Unlock()
	for i := 0; i <= len(draining)-s.cfg.MaxDraining; i++ {
		g := draining[i] // oldest first
		g.log.Warn("stopping it before its drain deadline: --max-draining generations are draining already", "max_draining", s.cfg.MaxDraining)
		g.endDrain()
	}
}

// record keeps res as the last restart and in the history, counts it, and
// returns the kept copy, which the drain completes later.
func (s *Supervisor) record(res *RestartResult, ok bool) *RestartResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		s.restarts++
	} else {
		s.rolledBack++
	}
	kept := *res
	if !ok {
		s.lastFailed = &kept
	}
	s.metrics.observeRestart(&kept, ok)
	s.last = &kept
	s.history = append(s.history, &kept)
	if len(s.history) > historySize {
		s.history = s.history[len(s.history)-historySize:]
	}
	return &kept
}

// historySize is how many restarts Status reports.
const historySize = 10

// waitReady waits until g passes the readiness check, exits, or the ready
// timeout passes, and returns when it was ready. A generation that serves
// on a socket of its own instead of the one rpwrap passed fails here too,
// as soon as that is seen (see guard).
func (s *Supervisor) waitReady(ctx context.Context, g *generation) (time.Time, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.ReadyTimeout, errReadyTimeout)
	defer cancel()
	checked := make(chan error, 1)
	s.checks.Add(1)
	s.goSafe(func() { defer s.checks.Done(); checked <- s.system().check(ctx, g) })
	guardTick := time.NewTicker(100 * time.Millisecond)
	defer guardTick.Stop()
	for {
		select {
		case err := <-checked:
			if err != nil {
				return time.Time{}, s.notReady(ctx, g, err)
			}
			readyAt := time.Now() // what follows is rpwrap's own time
			if err := s.system().guard(ctx, g, true); err != nil {
				if !s.system().alive(g) { // a dying server holds no socket: say what happened
					return time.Time{}, fmt.Errorf("exited after it was ready, before the flip")
				}
				return time.Time{}, err // ready, but not on the sockets rpwrap gave it
			}
			if err := s.system().relisten(g); err != nil {
				return time.Time{}, err
			}
			if !s.system().alive(g) {
				return time.Time{}, fmt.Errorf("exited after it was ready, before the flip")
			}
			return readyAt, nil
		case <-guardTick.C:
			if err := s.foreignSocket(g); err != nil {
				cancel()
				<-checked
				return time.Time{}, err // it will never be ready on rpwrap's socket: say so now
			}
		case <-g.done:
			cancel()
			if err := <-checked; err == nil {
				return time.Time{}, fmt.Errorf("exited after it was ready, before the flip (%s)", g.exit)
			}
			return time.Time{}, s.exitedUnready(g)
		}
	}
}

var errReadyTimeout = errors.New("ready timeout")

// notReady explains why the readiness check of g failed with err.
func (s *Supervisor) notReady(ctx context.Context, g *generation, err error) error {
	switch {
	case g.exited():
		return s.exitedUnready(g)
	case errors.Is(context.Cause(ctx), context.Canceled):
		return errors.New("abandoned: rpwrap is stopping")
	}
	if gerr := s.foreignSocket(g); gerr != nil {
		return gerr // not ready because it serves on a socket of its own: say so
	}
	if errors.Is(context.Cause(ctx), errReadyTimeout) {
		return fmt.Errorf("not ready within %s (--ready-timeout; readiness check %s): %w", s.cfg.ReadyTimeout, s.cfg.Ready, err)
	}
	return err
}

// exitedUnready describes a generation that exited before it was ready.
func (s *Supervisor) exitedUnready(g *generation) error {
	err := fmt.Errorf("exited before it was ready (%s)", g.exit)
	if s.cfg.Route != "bind" && g.exit.Status.Exited() && g.exit.Status.ExitStatus() != 0 {
		// The most common cause: it tried to bind the port rpwrap holds.
		return fmt.Errorf("%w; if its log says \"Address already in use\", it binds the port itself: run it with --pass bind (or give it the socket rpwrap passes, fd 3)", err)
	}
	return err
}

// alive reports whether g's main process still runs: not reaped, and not a
// zombie waiting to be (its exit is on its way to the reaper).
func alive(g *generation) bool {
	return !g.exited() && procfs.Alive(g.pid)
}

// relisten gives g's TCP sockets the configured backlog again: a server
// that called listen(2) on its socket with a backlog of its own changed it.
func (s *Supervisor) relisten(g *generation) error {
	for _, l := range g.listeners {
		if err := l.Relisten(s.cfg.Backlog); err != nil {
			return fmt.Errorf("%s: %w", g, err)
		}
	}
	return nil
}
