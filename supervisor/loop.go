//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
)

// loop is the supervisor's event loop. Restarts run on their own goroutine;
// everything that changes which generation is active happens here or under
// s.mu.
func (s *Supervisor) loop(ctx context.Context, sigs chan os.Signal, first *generation) int {
	firstReady := make(chan error, 1)
	go func() { firstReady <- s.waitReady(ctx, first) }()

	rctx, cancelRestarts := context.WithCancel(ctx)
	defer cancelRestarts()
	var (
		restartDone = make(chan restartOutcome, 1)
		running     bool
		pending     []chan<- RestartResult
		backoff     = newBackoff()
	)
	startRestart := func(waiters []chan<- RestartResult) {
		running = true
		go func() { restartDone <- restartOutcome{s.restart(rctx), waiters} }()
	}
	// A respawn runs like a restart: signals and triggers keep being
	// served meanwhile, and SIGTERM cancels its backoff.
	startRespawn := func(g *generation) {
		running = true
		go func() { s.respawnLoop(rctx, g, backoff); restartDone <- restartOutcome{} }()
	}
	for {
		select {
		case err := <-firstReady:
			firstReady = nil
			if err != nil {
				first.log.Error("not ready", "err", err)
				s.stop(first, time.Second)
				if first.exit.Status.Exited() || first.exit.Status.Signaled() {
					if code := first.exit.Code(); code != 0 && !s.cfg.RestartOnFailure {
						return code
					}
				}
				return 1
			}
			s.activate(first)
			close(s.ready)
			first.log.Info("ready", "after", time.Since(first.started).Round(time.Millisecond), "selector", s.Flavour())
			s.notifyReady()
			if len(pending) > 0 { // triggers that came while it started
				startRestart(pending)
				pending = nil
			}
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				s.cfg.Log.Info("SIGHUP: restart requested")
				if running || firstReady != nil {
					pending = append(pending, nil)
				} else {
					startRestart(nil)
				}
			case syscall.SIGTERM, syscall.SIGINT:
				cancelRestarts()
				return s.shutdown(sig, running, restartDone, pending)
			default:
				if pid := s.signalTarget(); pid != 0 {
					signalProcess(pid, sig.(syscall.Signal))
				}
			}
		case reply := <-s.triggers:
			if running || firstReady != nil { // queued until the first generation serves
				pending = append(pending, reply)
			} else {
				startRestart([]chan<- RestartResult{reply})
			}
		case out := <-restartDone:
			running = false
			out.answer(out.result)
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
			if g != s.current() || running || s.stateOf(g) == StateStopped {
				continue // a restart or a stop is taking care of it
			}
			if code, stop := s.activeDied(g); stop {
				return code
			}
			startRespawn(g)
		case <-ctx.Done():
			cancelRestarts()
			return s.shutdown(syscall.SIGTERM, running, restartDone, pending)
		}
	}
}

type restartOutcome struct {
	result  RestartResult
	waiters []chan<- RestartResult
}

// answer sends r to every waiter of the outcome.
func (o restartOutcome) answer(r RestartResult) {
	for _, w := range o.waiters {
		if w != nil {
			w <- r
		}
	}
}

// activeDied handles the end of the generation that was serving: it kills
// what is left of its process group, and reports whether rpwrap must exit,
// with which status. With --restart-on-failure it must not: the caller
// starts respawnLoop, and the sockets keep queueing connections meanwhile.
func (s *Supervisor) activeDied(g *generation) (code int, exit bool) {
	killGroup(g.pid)
	if !s.cfg.RestartOnFailure {
		g.log.Error("server exited; rpwrap exits with its status", "exit", g.exit.String())
		s.setState(g, StateStopped)
		return g.exit.Code(), true
	}
	return 0, false
}

// respawnLoop starts fresh generations on the sockets of g, the serving
// generation that died, waiting longer before each attempt, until one is
// ready (it becomes the active one) or ctx ends (rpwrap is stopping).
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
			return
		}
		ng, err := s.respawn(ctx, g)
		if err == nil {
			s.activate(ng)
			s.mu.Lock()
			s.respawns++
			s.mu.Unlock()
			ng.log.Info("ready: serving on the sockets of the generation that died", "replaces", g.n)
			return
		}
		s.cfg.Log.Error("respawn failed", "generation", ng.n, "err", err)
		g, why = ng, err.Error()
	}
}

// respawn starts a new generation on the sockets of g, which died.
func (s *Supervisor) respawn(ctx context.Context, g *generation) (*generation, error) {
	s.mu.Lock()
	ng := &generation{n: s.nextGen, state: StateStarting, listeners: g.listeners, slots: g.slots}
	s.nextGen++
	s.gens = append(s.gens, ng)
	s.removeLocked(g)
	s.mu.Unlock()
	g.listeners, g.slots = nil, nil
	if err := s.spawn(ng); err != nil {
		return ng, explainFDLimit(err)
	}
	if err := s.waitReady(ctx, ng); err != nil {
		killGroup(ng.pid)
		<-ng.done
		return ng, fmt.Errorf("%s: %w", ng, err)
	}
	return ng, nil
}

// shutdown stops every generation and returns the exit status of the one
// that receives new connections at that moment. A restart in progress ends
// first (its context is cancelled): before the flip its successor is killed
// and the predecessor is the active one; after the flip the predecessor is
// drained as usual and the successor is the active one. Then every other
// generation is stopped, and the active one last. Restarts still queued are
// answered with an error.
func (s *Supervisor) shutdown(sig os.Signal, running bool, restartDone chan restartOutcome, pending []chan<- RestartResult) int {
	s.cfg.Log.Info("stopping", "signal", sig)
	if s.cfg.Notifier != nil {
		s.cfg.Notifier.Stopping()
	}
	restartOutcome{waiters: pending}.answer(RestartResult{Error: "rpwrap is stopping: restart not done"})
	if running {
		out := <-restartDone // its context is cancelled: it ends early
		out.answer(out.result)
	}
	active := s.current()
	for _, g := range s.liveGenerations() {
		if g != active {
			s.stop(g, s.cfg.StopTimeout)
		}
	}
	if active == nil {
		return 1
	}
	s.stop(active, s.cfg.StopTimeout)
	return active.exit.Code()
}
