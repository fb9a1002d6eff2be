//go:build linux

package supervisor

import (
	"context"
	"os"
	"syscall"
	"time"
)

// loop is the supervisor's event loop, the one place that decides what
// runs next: it starts restarts and respawns one at a time, queues the
// triggers that come meanwhile, forwards signals, and runs the shutdown.
func (s *Supervisor) loop(ctx context.Context, sigs chan os.Signal, first *generation) int {
	firstReady := make(chan error, 1)
	if first == nil { // resumed after an in-place upgrade: serving already
		firstReady = nil
	} else {
		s.checks.Add(1)
		s.goSafe(func() {
			defer s.checks.Done()
			_, err := s.waitReady(ctx, first)
			firstReady <- err
		})
	}

	// Restarts and respawns end with the shutdown, not with ctx: the end of
	// ctx may only start the stop delay, during which rpwrap serves on.
	rctx, cancelRestarts := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRestarts()
	var (
		restartDone = make(chan restartOutcome, 1)
		running     bool
		pending     []restartRequest
		backoff     = newBackoff()
	)
	startRestart := func(waiters []restartRequest) {
		running = true
		s.goSafe(func() {
			res, drained := s.restart(rctx, s.rolloutFor(waiters))
			restartDone <- restartOutcome{res, drained, waiters}
		})
	}
	// A respawn runs like a restart: signals and triggers keep being
	// served meanwhile, and SIGTERM cancels its backoff.
	startRespawn := func(g *generation) {
		running = true
		s.goSafe(func() { s.respawnLoop(rctx, g, backoff); restartDone <- restartOutcome{} })
	}
	var stopDelay <-chan time.Time // the stop delay runs: serve on until it fires
	ctxDone := ctx.Done()
	trigger := func(r restartRequest) {
		s.emitAsked(r)
		if stopDelay != nil {
			s.refuseRestart(r)
		} else if running || firstReady != nil { // queued until the first generation serves
			pending = append(pending, r)
		} else {
			startRestart([]restartRequest{r})
		}
	}
	// SIGTERM, SIGINT and the end of ctx start the stop delay, when there
	// is one; without one, or the second time, the shutdown.
	stopOrDelay := func(sig os.Signal) (int, bool) {
		if stopDelay == nil {
			if stopDelay = s.beginStopDelay(sig, pending); stopDelay != nil {
				pending = nil
				return 0, false
			}
		}
		cancelRestarts()
		return s.shutdown(sig, running, restartDone, pending), true
	}
	var upQueued *upgradeRequest // an upgrade waits for the restart in progress
	onUpgrade := func(u upgradeRequest) {
		switch {
		case stopDelay != nil:
			u.answer(UpgradeResult{Error: "rpwrap is stopping (--stop-delay): no upgrade"})
		case firstReady != nil:
			u.answer(UpgradeResult{Error: "the first generation is not ready yet: try again once it serves"})
		case running && upQueued != nil:
			u.answer(UpgradeResult{Error: "another upgrade is queued"})
		case running:
			upQueued = &u
		default:
			pending = s.upgrade(u, pending, sigs)
		}
	}
	if first == nil {
		pending = s.takeCarried()
		if len(pending) > 0 {
			startRestart(pending)
			pending = nil
		}
	}
	for {
		select {
		case u := <-s.up.requests:
			onUpgrade(u)
		case err := <-firstReady:
			firstReady = nil
			if err != nil {
				return s.firstFailed(first, err)
			}
			s.setState(first, StateReady)
			s.activate(first)
			close(s.ready)
			first.log.Info("ready", "after", time.Since(first.started).Round(time.Millisecond), "selector", s.Flavour())
			s.notifyReady()
			if first.exited() { // its exit may have come first, and been passed over as not the active one's
				if code, stop := s.activeDied(first); stop {
					return code
				}
				startRespawn(first)
				continue
			}
			if len(pending) > 0 { // triggers that came while it started
				startRestart(pending)
				pending = nil
			}
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				s.cfg.Log.Info("SIGHUP: restart requested")
				trigger(restartRequest{})
			case syscall.SIGTERM, syscall.SIGINT:
				if code, stop := stopOrDelay(sig); stop {
					return code
				}
			case UpgradeSignal:
				s.cfg.Log.Info("upgrade signal: upgrading rpwrap in place onto the binary it was started from")
				onUpgrade(upgradeRequest{at: time.Now()})
			default:
				if err := s.signalTarget().signal(sig.(syscall.Signal)); err != nil {
					s.cfg.Log.Warn("cannot forward a signal to the server", "signal", sig, "err", err)
				}
			}
		case r := <-s.triggers:
			trigger(r)
		case out := <-restartDone:
			running = false
			s.answer(out)
			if u := upQueued; u != nil {
				upQueued = nil
				pending = s.upgrade(*u, pending, sigs)
			}
			if len(pending) > 0 {
				startRestart(pending)
				pending = nil
			} else if a := s.current(); a != nil && a.exited() {
				if code, stop := s.activeDied(a); stop {
					return code
				}
				startRespawn(a)
			}
		case g := <-s.exits:
			g.log.Info("exited", "exit", g.exit.String())
			if g != s.current() || running {
				continue // a restart, a drain or a rollback is taking care of it
			}
			s.emitGen(EventCrashed, g, Event{Reason: g.exit.String()})
			if code, stop := s.activeDied(g); stop {
				return code
			}
			startRespawn(g)
		case <-ctxDone: // as SIGTERM
			ctxDone = nil
			if code, stop := stopOrDelay(syscall.SIGTERM); stop {
				return code
			}
		case <-stopDelay:
			code, _ := stopOrDelay(syscall.SIGTERM)
			return code
		}
	}
}

// firstFailed ends the first generation, which did not get ready, and
// returns rpwrap's exit status: 1 (the log gives the server's own status),
// or 127 and 126 when the exec shim could not find or run the command.
func (s *Supervisor) firstFailed(first *generation, err error) int {
	first.log.Error("not ready", "err", err)
	s.stop(first, time.Second, s.endOfUnready(first))
	if code := first.exit.Code(); first.exit.Status.Exited() && (code == 126 || code == 127) {
		return code
	}
	return exitNotReady
}

// exitNotReady is Run's status when the first generation never got ready:
// it exited, failed its readiness check or ran out of --ready-timeout.
const exitNotReady = 1

type restartOutcome struct {
	result  RestartResult
	drained <-chan struct{} // the predecessor retired; nil when nothing drains
	waiters []restartRequest
}

// answer sends the outcome to each waiter: at once, or for those that
// asked to wait, once the predecessor is drained.
func (s *Supervisor) answer(o restartOutcome) {
	var late []restartRequest
	for _, w := range o.waiters {
		switch {
		case w.reply == nil:
		case w.wait && o.drained != nil:
			late = append(late, w)
		default:
			w.reply <- o.result
		}
	}
	if len(late) == 0 {
		return
	}
	s.up.addLate(late, o.result)
	s.goSafe(func() {
		<-o.drained
		defer s.up.removeLate(late)
		s.mu.Lock()
		r := o.result
		if s.last != nil && s.last.Generation == r.Generation {
			r = *s.last
		}
		for _, h := range s.history {
			if h.Generation == r.Generation {
				r = *h
			}
		}
		s.mu.Unlock()
		for _, w := range late {
			w.reply <- r
		}
	})
}

// activeDied handles the end of the generation that was serving, and
// reports whether rpwrap must exit, with which status. With
// --restart-on-failure it must not: the caller starts respawnLoop, and the
// sockets keep queueing connections meanwhile.
func (s *Supervisor) activeDied(g *generation) (code int, exit bool) {
	s.killWorkers(g)
	if !s.cfg.RestartOnFailure {
		g.log.Error("server exited; rpwrap exits with its status", "exit", g.exit.String())
		s.retire(g, StateCrashed)
		return g.exit.Code(), true
	}
	return 0, false
}

// respawnLoop starts fresh generations on the sockets of g, the serving
// generation that died, waiting longer before each attempt, until one is
// ready (it becomes the active one) or ctx ends (rpwrap is stopping). Every
// generation that failed is retired, the sockets passing to the next.
func (s *Supervisor) respawnLoop(ctx context.Context, g *generation, b *backoff) {
	if time.Since(g.started) >= maxBackoff {
		b.reset() // it served a good while: a new failure, not a crash loop
	}
	why := g.exit.String()
	for {
		wait := b.next()
		s.cfg.Log.Warn("server exited; starting a new generation on the same sockets",
			"generation", g.n, "exit", why, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			s.retire(g, s.deadEnd(g)) // its sockets with it
			return
		}
		ng, err := s.respawn(ctx, g)
		if err == nil {
			s.activate(ng)
			s.mu.Lock()
			s.respawns++
			s.mu.Unlock()
			ng.log.Info("ready: serving on the sockets of the generation that died", "replaces", g.n)
			s.emitGen(EventRespawned, ng, Event{Predecessor: g.n})
			return
		}
		s.cfg.Log.Error("respawn failed", "generation", ng.n, "err", err)
		g, why = ng, err.Error()
	}
}

// deadEnd is the final state of a generation whose process died on its
// own: crashed if it had served, abandoned if it never got ready.
func (s *Supervisor) deadEnd(g *generation) State {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g.flipped.IsZero() {
		return StateAbandoned
	}
	return StateCrashed
}

// respawn starts a new generation on the sockets of g, which died, and
// retires g. The new generation is returned even when it failed, with its
// process killed: it holds the sockets for the next attempt.
func (s *Supervisor) respawn(ctx context.Context, g *generation) (*generation, error) {
	s.mu.Lock()
	ng := newGeneration(s.nextGen)
	s.nextGen++
	ng.listeners, ng.slots = g.listeners, g.slots
	g.inherited = true // read by retire only
	s.mu.Unlock()
	s.inherit(g, ng)
	s.retire(g, s.deadEnd(g))
	if err := s.spawn(ng); err != nil {
		s.publishDead(ng)
		return ng, explainFDLimit(err)
	}
	s.publish(ng)
	s.emitGen(EventStarted, ng, Event{Predecessor: g.n})
	if _, err := s.waitReady(ctx, ng); err != nil {
		s.killWorkers(ng)
		<-ng.done
		return ng, err
	}
	if err := s.system().relisten(ng); err != nil {
		return ng, err
	}
	if !s.setState(ng, StateReady) {
		return ng, errNotReady
	}
	return ng, nil
}

// publishDead publishes a generation that could not even be started, so
// that it holds its sockets until it is retired.
func (s *Supervisor) publishDead(g *generation) {
	g.done = make(chan struct{})
	close(g.done)
	s.publish(g)
}

// shutdown stops every generation and returns the exit status of the one
// that receives new connections at that moment. A restart in progress ends
// first (its context is cancelled): before the flip its successor is
// abandoned and the predecessor is the active one; after the flip the
// successor is the active one. Draining generations are told to stop now,
// each with its own deadline; the active one gets the stop signal and up to
// Config.StopTimeout. Restarts still queued are answered with an error.
func (s *Supervisor) shutdown(sig os.Signal, running bool, restartDone chan restartOutcome, pending []restartRequest) int {
	s.cfg.Log.Info("stopping", "signal", sig)
	s.markStopping(time.Time{})
	s.notify("STOPPING=1", s.cfg.Notifier.Stopping)
	for _, p := range pending {
		if p.reply != nil {
			p.reply <- RestartResult{Error: "rpwrap is stopping: restart not done"}
		}
	}
	if running {
		out := <-restartDone // its context is cancelled: it ends early
		s.answer(out)
	}
	active := s.current()
	for _, g := range s.liveGenerations() {
		if g != active {
			g.endDrain()
		}
	}
	code := exitNotReady
	if active != nil {
		s.stop(active, s.cfg.StopTimeout, StateStopped)
		code = active.exit.Code()
	}
	for _, g := range s.liveGenerations() {
		if s.stateOf(g) == StateStarting { // the first one, not ready yet
			s.stop(g, s.cfg.StopTimeout, StateAbandoned)
		}
	}
	s.drains.Wait()
	return code
}

// stop ends g: the stop signal, up to timeout for it to exit, then SIGKILL
// to its whole process group; then it is retired with final state st.
func (s *Supervisor) stop(g *generation, timeout time.Duration, st State) {
	if g.proc != nil && !g.exited() {
		s.stopSignal(g)
		t := time.NewTimer(timeout)
		select {
		case <-g.done:
		case <-t.C:
			g.log.Warn("did not stop in time: sending SIGKILL to its process group", "timeout", timeout)
		}
		t.Stop()
	}
	s.retire(g, st)
}
