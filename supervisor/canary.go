//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
)

// A rollout is what a restart does between the successor's readiness and
// the predecessor's drain, when a canary or a watch is asked for:
//
//	ready ──canary stages──▶ flip ──watch──▶ predecessor drains
//	  │          │                    │
//	  │          └─exit, check, abort─┴──▶ back to the predecessor,
//	  │                                    successor retired
//	  └──(no canary, no watch: the flip, then the drain, as always)
//
// During a canary stage the successor is in StateCanary and the selector
// sends it about Percent% of new connections, by a hash of the 4-tuple
// (bpf.SetCanary; cBPF: by a hash of the source port, uncounted); the
// predecessor stays active. During the watch the
// successor is active and the predecessor in StateStandby: deselected,
// still running, not told to stop. Going back is one map write: the
// canary's weight to 0, or the active slot back to the predecessor.

// CanaryStage is one stage of a canary: Percent of the new connections go
// to the successor for For.
type CanaryStage struct {
	Percent float64       `json:"percent"`
	For     time.Duration `json:"for_ns"`
}

func (c CanaryStage) String() string {
	return strconv.FormatFloat(c.Percent, 'f', -1, 64) + "%:" + c.For.String()
}

// ParseCanary parses PCT:DURATION[,PCT:DURATION...] ("20%:6s",
// "5%:1m,50%:5m"; the % sign is optional); "" is no canary. Each share
// must be above 0 and below 100, each duration positive.
func ParseCanary(s string) ([]CanaryStage, error) {
	if s == "" {
		return nil, nil
	}
	var stages []CanaryStage
	for _, part := range strings.Split(s, ",") {
		bad := func(why string) error {
			return fmt.Errorf("--canary %q: stage %q: %s (want PCT:DURATION[,PCT:DURATION...], e.g. 20%%:6s or 5%%:1m,50%%:5m)", s, part, why)
		}
		pct, dur, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return nil, bad("no duration")
		}
		p, err := strconv.ParseFloat(strings.TrimSuffix(pct, "%"), 64)
		if err != nil || p <= 0 || p >= 100 {
			return nil, bad("the share must be a number above 0 and below 100")
		}
		d, err := time.ParseDuration(dur)
		if err != nil || d <= 0 {
			return nil, bad("the duration must be positive and have a unit: 500ms, 6s, 5m")
		}
		stages = append(stages, CanaryStage{Percent: p, For: d})
	}
	return stages, nil
}

// RestartOptions are the per-restart settings of RestartWith; nil fields
// take the Config's.
type RestartOptions struct {
	Wait   bool           `json:"wait,omitempty"`     // answer once the predecessor is drained
	Watch  *time.Duration `json:"watch_ns,omitempty"` // Config.Watch
	Canary []CanaryStage  `json:"canary,omitempty"`   // Config.Canary
}

// RestartWith is Restart (or, with Wait, RestartAndDrain) with its own
// watch and canary. With either, the answer comes once the rollout has
// ended: promoted (the predecessor drains), or rolled back (the error says
// why: the successor exited, a --watch-check failed, `ctl abort`).
func (s *Supervisor) RestartWith(ctx context.Context, o RestartOptions) (RestartResult, error) {
	return s.request(ctx, restartRequest{wait: o.Wait, opts: &o})
}

// rollout is the plan of one restart's canary and watch.
type rollout struct {
	watch  time.Duration
	canary []CanaryStage
}

// rolloutFor is the plan of the restart that serves waiters: the options
// of the first waiter that gave some, else the Config's.
func (s *Supervisor) rolloutFor(waiters []restartRequest) rollout {
	ro := rollout{watch: s.cfg.Watch, canary: s.cfg.Canary}
	for _, w := range waiters {
		if w.opts == nil {
			continue
		}
		if w.opts.Watch != nil {
			ro.watch = *w.opts.Watch
		}
		if w.opts.Canary != nil {
			ro.canary = w.opts.Canary
		}
		break
	}
	return ro
}

// RolloutStatus describes the canary and watch of a restart, running or
// ended.
type RolloutStatus struct {
	Generation  int           `json:"generation"`  // the successor
	Predecessor int           `json:"predecessor"` // the generation it replaces
	Phase       string        `json:"phase"`       // canary, watch; when ended: promoted, rolled back
	Stage       int           `json:"stage,omitempty"`
	Stages      []CanaryStage `json:"stages,omitempty"`
	Until       *time.Time    `json:"until,omitempty"` // when the current stage or the watch ends
	Shares      []StageShare  `json:"shares,omitempty"`
	Aborted     string        `json:"aborted,omitempty"`      // why it was rolled back
	FlipBack    time.Duration `json:"flip_back_ns,omitempty"` // from the failure seen to the predecessor serving again
}

// StageShare is what the selector counted during one canary stage: new
// connections sent to the successor and to the predecessor, summed over
// the listeners.
type StageShare struct {
	Percent     float64 `json:"percent"` // asked
	Successor   uint64  `json:"successor"`
	Predecessor uint64  `json:"predecessor"`
	Measured    float64 `json:"measured"`       // percent
	Note        string  `json:"note,omitempty"` // why nothing was counted
}

// rollouts is the supervisor's view of the rollout in progress.
type rollouts struct {
	cmds chan rolloutCmd // ctl promote and abort, to the rollout in progress

	// guarded by Supervisor.mu
	cur   *RolloutStatus // nil when none runs
	last  *RolloutStatus
	ended chan struct{} // closed when cur ends
}

type rolloutCmd struct {
	promote bool
	reply   chan<- error
}

var errNoRollout = errors.New("no canary or watch is running (see rpwrap ctl status)")

// Promote ends the canary or the watch in progress as if its time were up
// and every check had passed: the successor gets every new connection and
// the predecessor drains. Abort rolls it back: every new connection to the
// predecessor, the successor retired. Both fail when none is running.
func (s *Supervisor) Promote(ctx context.Context) error { return s.rolloutCommand(ctx, true) }

// Abort: see Promote.
func (s *Supervisor) Abort(ctx context.Context) error { return s.rolloutCommand(ctx, false) }

func (s *Supervisor) rolloutCommand(ctx context.Context, promote bool) error {
	s.mu.Lock()
	ended := s.roll.ended
	s.mu.Unlock()
	if ended == nil {
		return errNoRollout
	}
	reply := make(chan error, 1)
	select {
	case s.roll.cmds <- rolloutCmd{promote: promote, reply: reply}:
		return <-reply
	case <-ended:
		return errNoRollout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// beginRollout publishes st as the rollout in progress.
func (s *Supervisor) beginRollout(st *RolloutStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roll.cur, s.roll.ended = st, make(chan struct{})
	s.emit(Event{Type: EventRolloutBegan, Generation: st.Generation, Predecessor: st.Predecessor, Phase: st.Phase})
}

// updateRollout changes the rollout in progress under the lock.
func (s *Supervisor) updateRollout(fn func(st *RolloutStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.roll.cur != nil {
		fn(s.roll.cur)
	}
}

// endRollout keeps the rollout in progress as the last one, ended in
// phase (and, when rolled back, why and how long the way back took), and
// returns a copy, and publishes the end as an event.
func (s *Supervisor) endRollout(phase, why string, back time.Duration) *RolloutStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.roll.cur
	if st == nil {
		return nil
	}
	st.Phase, st.Aborted, st.FlipBack, st.Until = phase, why, back, nil
	s.emit(Event{Type: EventRolloutEnded, Generation: st.Generation, Predecessor: st.Predecessor, Phase: phase, Reason: why, Took: back})
	s.roll.last, s.roll.cur = st, nil
	close(s.roll.ended)
	s.roll.ended = nil
	c := *st
	return &c
}

// rolloutSnapshot is the rollout in progress, or the last one, for
// Status; call with mu held.
func (s *Supervisor) rolloutSnapshotLocked() *RolloutStatus {
	st := s.roll.cur
	if st == nil {
		st = s.roll.last
	}
	if st == nil {
		return nil
	}
	c := *st
	c.Shares = append([]StageShare(nil), st.Shares...)
	return &c
}

// runCanary runs the canary stages of ro between old, active, and g,
// ready: each sends its share of new connections to g for its time, while
// g is watched (observe). It returns nil when the stages have ended or
// `ctl promote` ended them early, with the split still in place: the flip
// follows. Otherwise it has rolled back (everything to old, g retired) and
// says why. Without stages it does nothing.
func (s *Supervisor) runCanary(ctx context.Context, old, g *generation, ro rollout, res *RestartResult) error {
	if len(ro.canary) == 0 {
		return nil
	}
	if !s.setState(g, StateReady) || !s.setState(g, StateCanary) {
		s.retire(g, StateAbandoned)
		return fmt.Errorf("%s: not in a state to receive a canary share", g)
	}
	s.beginRollout(&RolloutStatus{Generation: g.n, Predecessor: old.n, Phase: "canary", Stages: ro.canary})
	t0 := time.Now()
	defer func() { res.Canary = time.Since(t0) }()
	g.log.Info("canary begins", "stages", ro.canary)
	for i, stage := range ro.canary {
		if err := s.setShare(g, stage.Percent); err != nil {
			return s.abortCanary(old, g, err, res)
		}
		until := time.Now().Add(stage.For)
		s.updateRollout(func(st *RolloutStatus) { st.Stage, st.Until = i+1, &until })
		g.log.Info("canary stage", "stage", i+1, "percent", stage.Percent, "for", stage.For)
		promoted, err := s.observe(ctx, old, g, until)
		s.countStage(stage)
		if err != nil {
			return s.abortCanary(old, g, err, res)
		}
		if promoted {
			g.log.Info("canary promoted (ctl promote)", "stage", i+1)
			break
		}
	}
	s.updateRollout(func(st *RolloutStatus) { st.Until = nil })
	return nil
}

// setShare sends percent% of every group's new connections to g.
func (s *Supervisor) setShare(g *generation, percent float64) error {
	for i, grp := range s.groups {
		if err := bpf.SetCanary(grp.sel, g.slots[i], percent); err != nil {
			return fmt.Errorf("canary %s on %s: %w", g, grp.spec, err)
		}
	}
	return nil
}

// clearShare ends every group's split; the failures are logged, since
// nothing more can be tried.
func (s *Supervisor) clearShare() {
	for _, grp := range s.groups {
		if err := bpf.SetCanary(grp.sel, 0, 0); err != nil && !errors.Is(err, bpf.ErrNotSupported) {
			s.cfg.Log.Error("cannot end the canary split: part of the new connections still goes to the canary's slot", "address", grp.spec, "err", err)
		}
	}
}

// countStage records what the selectors counted in the stage that ends
// and publishes it as an event.
func (s *Supervisor) countStage(stage CanaryStage) {
	sh := StageShare{Percent: stage.Percent}
	for _, grp := range s.groups {
		c, err := bpf.CanaryCounts(grp.sel)
		if err != nil {
			sh.Note = "not counted: " + err.Error()
			continue
		}
		sh.Successor += c.Canary
		sh.Predecessor += c.Rest
	}
	sh.Measured = bpf.CanaryCount{Canary: sh.Successor, Rest: sh.Predecessor}.Share()
	gen := 0
	s.updateRollout(func(st *RolloutStatus) { st.Shares, gen = append(st.Shares, sh), st.Generation })
	s.emit(Event{Type: EventCanaryStage, Generation: gen, Percent: stage.Percent, ToSuccessor: sh.Successor, ToPredecessor: sh.Predecessor})
	s.cfg.Log.Info("canary stage ended", "percent", stage.Percent, "to_successor", sh.Successor, "to_predecessor", sh.Predecessor,
		"measured_percent", strconv.FormatFloat(sh.Measured, 'f', 1, 64))
}

// abortCanary sends every new connection to old again (one map write per
// group) and retires g: it drains, its queued connections migrate back.
func (s *Supervisor) abortCanary(old, g *generation, why error, res *RestartResult) error {
	t := time.Now()
	s.clearShare()
	back := time.Since(t)
	err := fmt.Errorf("canary aborted, generation %d serves every new connection again: %w", old.n, why)
	res.Rollout = s.endRollout("rolled back", why.Error(), back)
	s.retireRolledBack(g, time.Now())
	return err
}

// Summary describes the rollout on a line: phase, stage, the shares
// measured, and why it was rolled back.
func (r *RolloutStatus) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "generation %d after %d: %s", r.Generation, r.Predecessor, r.Phase)
	if r.Phase == "canary" && r.Stage > 0 {
		fmt.Fprintf(&b, ", stage %d of %d (%s)", r.Stage, len(r.Stages), r.Stages[r.Stage-1])
	}
	if r.Until != nil {
		fmt.Fprintf(&b, " until %s", r.Until.Format(time.RFC3339))
	}
	for i, sh := range r.Shares {
		if sh.Note != "" {
			fmt.Fprintf(&b, "; stage %d (asked %g%%): %s", i+1, sh.Percent, sh.Note)
			continue
		}
		fmt.Fprintf(&b, "; stage %d: %d of %d new connections to the successor (%.1f%%, asked %g%%)",
			i+1, sh.Successor, sh.Successor+sh.Predecessor, sh.Measured, sh.Percent)
	}
	if r.Aborted != "" {
		fmt.Fprintf(&b, "; rolled back: %s (back in %s)", r.Aborted, r.FlipBack)
	}
	return b.String()
}

// canaryString is the --canary form of stages.
func canaryString(stages []CanaryStage) string {
	parts := make([]string, len(stages))
	for i, st := range stages {
		parts[i] = st.String()
	}
	return strings.Join(parts, ",")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
