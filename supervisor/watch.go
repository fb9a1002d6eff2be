//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// How the --watch-check is repeated during a canary and a watch: one
// attempt every watchCheckEvery, each given up to watchCheckTimeout.
const (
	watchCheckEvery   = time.Second
	watchCheckTimeout = 2 * time.Second
)

// ParseWatchCheck parses a --watch-check: accept, http:PATH or exec:CMD,
// the readiness checks that can be repeated; "" is none.
func ParseWatchCheck(s string) (Ready, error) {
	r, err := ParseReady(s)
	if err != nil {
		return Ready{}, errors.New(strings.Replace(err.Error(), "--ready", "--watch-check", 1))
	}
	switch r.Kind {
	case "", ReadyAccept, ReadyHTTP, ReadyExec:
		return r, nil
	}
	return Ready{}, fmt.Errorf("--watch-check %q: a check that is repeated must be accept, http:PATH or exec:CMD (%s happens once)", s, r.Kind)
}

// checkOnce runs the check r against g once.
func (s *Supervisor) checkOnce(ctx context.Context, g *generation, r Ready) error {
	switch r.Kind {
	case ReadyAccept, ReadyHTTP:
		return s.probe(ctx, g, r)
	case ReadyExec:
		return s.execCheck(ctx, g, r)
	}
	return fmt.Errorf("--watch-check %s cannot be repeated", r)
}

// standBy marks old, the active generation, to stand by instead of
// draining when the flip replaces it: the watch of ro follows.
func (s *Supervisor) standBy(old *generation, ro rollout) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old.standby = ro.watch > 0
}

// watchAfterFlip ends the canary's split, if any, and watches g, active
// since the flip, for ro.watch while old stands by. It returns nil when
// the watch ended well (or `ctl promote` ended it, or there is none): old
// is draining then. Otherwise it has flipped back to old, retired g, and
// says why.
func (s *Supervisor) watchAfterFlip(ctx context.Context, old, g *generation, ro rollout, res *RestartResult) error {
	if len(ro.canary) > 0 {
		s.clearShare() // the flip sends everything to g already
	}
	if ro.watch <= 0 {
		if len(ro.canary) > 0 {
			res.Rollout = s.endRollout("promoted", "", 0)
		}
		return nil
	}
	until := time.Now().Add(ro.watch)
	if len(ro.canary) == 0 {
		s.beginRollout(&RolloutStatus{Generation: g.n, Predecessor: old.n, Phase: "watch"})
	}
	s.updateRollout(func(st *RolloutStatus) { st.Phase, st.Until = "watch", &until })
	g.log.Info("watching the successor; the predecessor stands by, still running", "watch", ro.watch, "predecessor", old.n)
	_, err := s.observe(ctx, old, g, until)
	if err == nil {
		s.setState(old, StateDraining)
		res.Rollout = s.endRollout("promoted", "", 0)
		g.log.Info("watch ended well: the predecessor drains", "predecessor", old.n)
		return nil
	}
	t := time.Now()
	if ferr := s.flipBack(old, g); ferr != nil {
		err = errors.Join(err, ferr)
	}
	back := time.Since(t)
	res.Rollout = s.endRollout("rolled back", err.Error(), back)
	s.cfg.Log.Warn("flipped back: the predecessor serves every new connection again", "generation", old.n, "pid", old.pid,
		"successor", g.n, "why", err, "flip_back", back)
	s.retireRolledBack(g, t)
	return fmt.Errorf("watch failed, flipped back to generation %d (pid %d): %w", old.n, old.pid, err)
}

// flipBack points every group's selector at old again and makes it the
// active generation; g is no longer.
func (s *Supervisor) flipBack(old, g *generation) error {
	var errs []error
	for i, grp := range s.groups {
		if err := grp.sel.Activate(old.slots[i]); err != nil {
			errs = append(errs, fmt.Errorf("flip %s back to %s: %w", grp.spec, old, err))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStateLocked(old, StateActive)
	old.standby = false
	s.active = old
	return errors.Join(errs...)
}

// retireRolledBack ends g, a successor that served part of the traffic and
// was rolled back at t: crashed if it exited, else drained like any
// replaced generation (its queued connections migrate to the active one).
func (s *Supervisor) retireRolledBack(g *generation, t time.Time) {
	if g.exited() || !s.setState(g, StateDraining) {
		s.retire(g, StateCrashed)
		return
	}
	s.startDrain(g, t, &RestartResult{Generation: g.n})
}

// observe watches g until until, and returns (false, nil) then; (true,
// nil) when `ctl promote` ends it early, or when old exits (nothing is
// left to go back to). It returns an error when g exits, when the
// --watch-check fails, on `ctl abort`, and when rpwrap stops (ctx).
func (s *Supervisor) observe(ctx context.Context, old, g *generation, until time.Time) (promoted bool, err error) {
	timer := time.NewTimer(time.Until(until))
	defer timer.Stop()
	var tick <-chan time.Time
	if s.cfg.WatchCheck.Kind != "" {
		t := time.NewTicker(watchCheckEvery)
		defer t.Stop()
		tick = t.C
	}
	cctx, cancel := context.WithCancel(ctx)
	checked, checking := make(chan error, 1), false
	defer func() {
		cancel()
		if checking {
			<-checked
		}
	}()
	for {
		select {
		case <-timer.C:
			return false, nil
		case <-g.done:
			return false, fmt.Errorf("%s exited (%s)", g, g.exit)
		case <-old.done:
			old.log.Warn("the predecessor exited: nothing to go back to, the successor gets every new connection", "exit", old.exit.String())
			return true, nil
		case <-tick:
			if !checking {
				checking = true
				s.checks.Add(1)
				s.goSafe(func() {
					defer s.checks.Done()
					actx, acancel := context.WithTimeout(cctx, watchCheckTimeout)
					defer acancel()
					checked <- s.system().recheck(actx, g, s.cfg.WatchCheck)
				})
			}
		case err := <-checked:
			checking = false
			if err != nil && ctx.Err() == nil {
				return false, fmt.Errorf("%s failed --watch-check %s: %w", g, s.cfg.WatchCheck, err)
			}
		case c := <-s.roll.cmds:
			c.reply <- nil
			if c.promote {
				return true, nil
			}
			return false, errors.New("aborted by rpwrap ctl abort")
		case <-ctx.Done():
			return false, errors.New("rpwrap is stopping")
		}
	}
}
