//go:build linux

package supervisor

import (
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// allStates is every State the package defines.
var allStates = []State{StateStarting, StateReady, StateCanary, StateActive, StateStandby, StateDraining, StateStopped, StateAbandoned, StateCrashed}

// newTestSupervisor is a Supervisor with no process, socket or selector,
// for the parts of the life cycle that need none; its log goes to the
// returned buffer.
func newTestSupervisor(cfg Config) (*Supervisor, *testutil.SyncBuffer) {
	out := &testutil.SyncBuffer{}
	cfg.Log = slog.New(slog.NewTextHandler(out, nil))
	cfg.setDefaults()
	return &Supervisor{cfg: cfg, quit: make(chan struct{}), nextGen: 1}, out
}

// newTestGeneration is generation n in state st, published in s.gens, with
// a log and no process.
func (s *Supervisor) newTestGeneration(n int, st State) *generation {
	g := newGeneration(n)
	g.state = st
	g.log = s.cfg.Log.With("generation", n)
	s.gens = append(s.gens, g)
	return g
}

// The table names only the package's states, final states have no exit,
// every other state has one, and from every state a final state can be
// reached.
func TestLifeCycleEveryStateReachesAnEnd(t *testing.T) {
	for from, tos := range transitions {
		if !slices.Contains(allStates, from) {
			t.Errorf("transitions has unknown state %q", from)
		}
		for _, to := range tos {
			if !slices.Contains(allStates, to) {
				t.Errorf("transition %s -> %q: unknown state", from, to)
			}
			if to == from {
				t.Errorf("transition %s -> %s goes nowhere", from, to)
			}
		}
	}
	finals := 0
	for _, st := range allStates {
		if st.final() {
			finals++
			if len(transitions[st]) != 0 {
				t.Errorf("final state %s has exits %v", st, transitions[st])
			}
			continue
		}
		if len(transitions[st]) == 0 {
			t.Errorf("state %s is not final and has no exit: a generation would be stuck in it", st)
		}
		// Breadth first: which final states st leads to.
		seen, queue, ends := map[State]bool{st: true}, []State{st}, []State(nil)
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			if cur.final() {
				ends = append(ends, cur)
			}
			for _, next := range transitions[cur] {
				if !seen[next] {
					seen[next] = true
					queue = append(queue, next)
				}
			}
		}
		if len(ends) == 0 {
			t.Errorf("no final state can be reached from %s", st)
		}
	}
	if finals != 3 {
		t.Errorf("%d final states, want stopped, abandoned and crashed", finals)
	}
	// A generation that served can only end stopped or crashed, one that
	// never served only abandoned or crashed.
	for _, c := range []struct {
		from State
		not  State
	}{{StateActive, StateAbandoned}, {StateDraining, StateAbandoned}, {StateDraining, StateCrashed},
		{StateStarting, StateStopped}, {StateReady, StateStopped}} {
		if checkTransition(c.from, c.not) == nil {
			t.Errorf("%s -> %s is allowed", c.from, c.not)
		}
	}
}

// checkTransition accepts exactly the table's transitions, and its refusal
// names both states.
func TestCheckTransitionAcceptsOnlyTheTable(t *testing.T) {
	allowed := 0
	for _, from := range allStates {
		for _, to := range allStates {
			err := checkTransition(from, to)
			want := slices.Contains(transitions[from], to)
			if want != (err == nil) {
				t.Errorf("checkTransition(%s, %s) = %v, want allowed=%v", from, to, err, want)
			}
			if want {
				allowed++
			} else if err != nil && (!strings.Contains(err.Error(), string(from)+" -> "+string(to)) || !strings.Contains(err.Error(), "not a transition")) {
				t.Errorf("checkTransition(%s, %s): %q does not name the transition", from, to, err)
			}
		}
	}
	if allowed != 19 {
		t.Errorf("%d transitions allowed, want the 19 of the drawings in lifecycle.go", allowed)
	}
	if checkTransition("", StateActive) == nil || checkTransition(StateActive, "bogus") == nil {
		t.Error("a transition from or to an unknown state is allowed")
	}
}

// setState moves a generation along the table, refuses and logs as a bug
// anything else, and leaves the state as it was.
func TestSetStateRefusesWhatTheTableDoesNotHave(t *testing.T) {
	s, out := newTestSupervisor(Config{})
	g := s.newTestGeneration(1, StateStarting)
	for _, st := range []State{StateReady, StateActive, StateDraining, StateStopped} {
		if !s.setState(g, st) {
			t.Fatalf("setState(%s) refused; log:\n%s", st, out.String())
		}
	}
	if strings.Contains(out.String(), "rpwrap bug") {
		t.Errorf("a transition of the table was logged as a bug:\n%s", out.String())
	}
	for _, c := range []struct{ from, to State }{
		{StateStarting, StateActive}, {StateStarting, StateDraining}, {StateReady, StateDraining},
		{StateActive, StateReady}, {StateDraining, StateActive}, {StateDraining, StateCrashed},
		{StateStopped, StateStarting}, {StateCrashed, StateActive}, {StateAbandoned, StateStopped},
	} {
		g := s.newTestGeneration(2, c.from)
		before := out.String()
		if s.setState(g, c.to) {
			t.Errorf("setState %s -> %s allowed", c.from, c.to)
		}
		if g.state != c.from {
			t.Errorf("refused %s -> %s left the generation in %s", c.from, c.to, g.state)
		}
		logged := strings.TrimPrefix(out.String(), before)
		if !strings.Contains(logged, "rpwrap bug: refused a state change") || !strings.Contains(logged, string(c.from)+" -> "+string(c.to)) {
			t.Errorf("refused %s -> %s logged %q", c.from, c.to, logged)
		}
	}
}

// retire ends a generation in the state asked for, even one the table
// does not allow (logged as a bug), removes it from the live ones, closes
// retired, and does nothing the second time.
func TestRetireIsFinalAndIdempotent(t *testing.T) {
	s, out := newTestSupervisor(Config{})
	keep := s.newTestGeneration(1, StateActive)
	g := s.newTestGeneration(2, StateStarting)
	s.retire(g, StateAbandoned)
	if g.state != StateAbandoned || len(s.gens) != 1 || s.gens[0] != keep {
		t.Errorf("after retire: state %s, live %v", g.state, s.gens)
	}
	select {
	case <-g.retired:
	default:
		t.Error("retired is not closed")
	}
	if !strings.Contains(out.String(), "msg=abandoned") {
		t.Errorf("retire did not log the final state:\n%s", out.String())
	}
	s.retire(g, StateCrashed) // a second time: nothing
	if g.state != StateAbandoned || strings.Count(out.String(), "msg=") != 1 {
		t.Errorf("second retire: state %s; log:\n%s", g.state, out.String())
	}

	d := s.newTestGeneration(3, StateDraining)
	s.retire(d, StateCrashed) // not in the table: a bug, but it must still end
	if d.state != StateCrashed || !strings.Contains(out.String(), "rpwrap bug: refused a state change") {
		t.Errorf("retire draining -> crashed: state %s; log:\n%s", d.state, out.String())
	}
	if len(s.gens) != 1 {
		t.Errorf("live generations after retiring: %v", s.gens)
	}
}

// The final state of a generation depends on what it did: on release,
// never served is abandoned and served is stopped; a successor that was
// not ready is crashed if it exited, abandoned if rpwrap gave up on it; a
// generation that died on its own is crashed if it served.
func TestFinalStateChoices(t *testing.T) {
	for st, want := range map[State]State{
		StateStarting: StateAbandoned, StateReady: StateAbandoned, StateActive: StateStopped, StateDraining: StateStopped,
	} {
		if got := finalOnRelease(st); got != want || checkTransition(st, got) != nil {
			t.Errorf("finalOnRelease(%s) = %s, want %s, a transition of the table", st, got, want)
		}
	}
	s, _ := newTestSupervisor(Config{})
	g := newGeneration(1)
	if s.endOfUnready(g) != StateAbandoned {
		t.Errorf("a successor that was never started: %s, want abandoned", s.endOfUnready(g))
	}
	g.done, g.pid = make(chan struct{}), os.Getpid() // a live process
	if s.endOfUnready(g) != StateAbandoned {
		t.Errorf("a successor still running: %s, want abandoned", s.endOfUnready(g))
	}
	close(g.done)
	if s.endOfUnready(g) != StateCrashed {
		t.Errorf("a successor that exited: %s, want crashed", s.endOfUnready(g))
	}
	if st := s.deadEnd(g); st != StateAbandoned {
		t.Errorf("dead, never flipped: %s, want abandoned", st)
	}
	g.flipped = time.Now()
	if st := s.deadEnd(g); st != StateCrashed {
		t.Errorf("dead after it served: %s, want crashed", st)
	}
}

// activate makes the new generation active and the one it replaces
// draining, in one step: a snapshot never shows two active generations, nor
// a draining one without its deadline. A dead predecessor (respawn) is not
// made draining.
func TestActivateReplacesInOneStep(t *testing.T) {
	s, out := newTestSupervisor(Config{DrainTimeout: 7 * time.Second})
	old := s.newTestGeneration(1, StateReady)
	s.activate(old)
	if old.state != StateActive || old.flipped.IsZero() || s.current() != old {
		t.Fatalf("first activate: %s flipped %v", old.state, old.flipped)
	}
	next := s.newTestGeneration(2, StateReady)
	before := time.Now()
	s.activate(next)
	if old.state != StateDraining || next.state != StateActive || s.current() != next {
		t.Errorf("after activate: old %s, new %s", old.state, next.state)
	}
	if old.deadline.Before(before.Add(7*time.Second)) || old.deadline.After(time.Now().Add(7*time.Second)) {
		t.Errorf("the replaced generation's deadline is %v, want --drain-timeout after the flip", old.deadline)
	}
	st := s.Status()
	if st.Generations[0].State != StateDraining || st.Generations[0].Deadline == nil || st.Generations[1].State != StateActive {
		t.Errorf("status after activate: %+v", st.Generations)
	}

	// Respawn: the active generation died and was retired (crashed).
	s.retire(next, StateCrashed)
	respawned := s.newTestGeneration(3, StateReady)
	s.activate(respawned)
	if next.state != StateCrashed || respawned.state != StateActive || s.current() != respawned {
		t.Errorf("respawn: dead %s, respawned %s", next.state, respawned.state)
	}
	if strings.Contains(out.String(), "rpwrap bug") {
		t.Errorf("activate made a transition the table does not have:\n%s", out.String())
	}
}
