//go:build linux

package supervisor

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func stopping(g *generation) bool {
	select {
	case <-g.stopNow:
		return true
	default:
		return false
	}
}

// capDraining stops the oldest draining generations, as many as needed
// for the predecessor of the restart to come to fit under MaxDraining;
// generations told to stop already do not count.
func TestCapDrainingStopsTheOldest(t *testing.T) {
	for _, c := range []struct {
		name        string
		max         int
		draining    int // draining generations, oldest first
		stoppedOnes int // of which the oldest are told to stop already
		want        []bool
	}{
		{"under the cap", 4, 2, 0, []bool{false, false}},
		{"one below the cap", 3, 2, 0, []bool{false, false}},
		{"at the cap", 2, 2, 0, []bool{true, false}},
		{"over the cap", 2, 4, 0, []bool{true, true, true, false}},
		{"cap of one", 1, 3, 0, []bool{true, true, true}},
		{"oldest stopping already", 2, 3, 1, []bool{true, true, false}},
		{"none draining", 1, 0, 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, out := newTestSupervisor(Config{MaxDraining: c.max})
			var gens []*generation
			for i := 0; i < c.draining; i++ {
				g := s.newTestGeneration(i+1, StateDraining)
				if i < c.stoppedOnes {
					g.endDrain()
				}
				gens = append(gens, g)
			}
			s.newTestGeneration(c.draining+1, StateActive)
			s.newTestGeneration(c.draining+2, StateStarting)
			s.capDraining()
			logged := 0
			for i, g := range gens {
				if stopping(g) != c.want[i] {
					t.Errorf("generation %d: told to stop %v, want %v", g.n, stopping(g), c.want[i])
				}
				if strings.Contains(out.String(), "generation="+strconv.Itoa(g.n)+" ") {
					logged++
				}
			}
			if n := strings.Count(out.String(), "stopping it before its drain deadline"); n != logged || n != countTrue(c.want)-c.stoppedOnes {
				t.Errorf("%d cap warnings (%d naming a generation), want one per generation newly stopped:\n%s", n, logged, out.String())
			}
			for _, g := range s.gens[c.draining:] {
				if stopping(g) {
					t.Errorf("generation %d (%s) told to stop", g.n, g.state)
				}
			}
			// endDrain twice must not panic (a cap, then rpwrap stopping).
			for _, g := range gens {
				g.endDrain()
			}
		})
	}
}

func countTrue(bs []bool) (n int) {
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// answer replies at once to who asked for the flip, and to a waiter when
// nothing drains (a rollback); a waiter for the drain gets the result
// only once the predecessor is retired, as the drain completed it.
func TestAnswerWaitsForTheDrainOnlyWhenAsked(t *testing.T) {
	s, _ := newTestSupervisor(Config{})
	flip := RestartResult{Generation: 5, Predecessor: 4}
	kept := s.record(&flip, true)
	drained := make(chan struct{})
	atFlip, afterDrain := make(chan RestartResult, 1), make(chan RestartResult, 1)
	s.answer(restartOutcome{result: flip, drained: drained, waiters: []restartRequest{
		{}, // SIGHUP: nobody waits
		{reply: atFlip},
		{reply: afterDrain, wait: true},
	}})
	select {
	case r := <-atFlip:
		if r.Drained || r.Generation != 5 {
			t.Errorf("answer at the flip: %+v", r)
		}
	default:
		t.Fatal("no answer at the flip")
	}
	select {
	case r := <-afterDrain:
		t.Fatalf("restart --wait answered before the drain: %+v", r)
	default:
	}
	s.mu.Lock()
	kept.Drained, kept.Drain = true, 2*time.Second // as drain records it, before retire
	s.mu.Unlock()
	close(drained)
	select {
	case r := <-afterDrain:
		if !r.Drained || r.Drain != 2*time.Second || r.Generation != 5 {
			t.Errorf("restart --wait answered %+v, want the drained record", r)
		}
	case <-time.After(time.Minute):
		t.Fatal("restart --wait not answered after the drain")
	}

	// A rollback: nothing drains, the waiter is answered at once.
	rolled := RestartResult{Generation: 6, Error: "exited before it was ready"}
	waiter := make(chan RestartResult, 1)
	s.answer(restartOutcome{result: rolled, waiters: []restartRequest{{reply: waiter, wait: true}}})
	select {
	case r := <-waiter:
		if r.Error == "" {
			t.Errorf("rollback answered %+v", r)
		}
	default:
		t.Fatal("restart --wait of a rollback not answered at once")
	}
}

// record counts restarts and rollbacks and keeps the last historySize.
func TestRecordKeepsABoundedHistory(t *testing.T) {
	s, _ := newTestSupervisor(Config{})
	for i := 1; i <= historySize+5; i++ {
		s.record(&RestartResult{Generation: i}, i%3 != 0)
	}
	st := s.Status()
	if st.Restarts+st.RolledBack != historySize+5 || st.RolledBack != (historySize+5)/3 {
		t.Errorf("counted %d restarts, %d rolled back", st.Restarts, st.RolledBack)
	}
	if len(st.History) != historySize || st.History[0].Generation != 6 || st.Last.Generation != historySize+5 ||
		st.History[historySize-1].Generation != historySize+5 {
		t.Errorf("history %+v, last %+v", st.History, st.Last)
	}
}

// pause waits out the drain delay unless the drain is told to end.
func TestPauseEndsWithTheDrain(t *testing.T) {
	s, _ := newTestSupervisor(Config{})
	g := newGeneration(1)
	g.done = make(chan struct{})
	if !s.pause(g, 0) {
		t.Error("no delay: pause reported the drain ended")
	}
	g.endDrain()
	if s.pause(g, time.Hour) {
		t.Error("pause ran out its hour though the drain was told to end")
	}
	g2 := newGeneration(2)
	g2.done = make(chan struct{})
	close(g2.done)
	if !s.pause(g2, time.Hour) {
		t.Error("pause of an exited generation reported the drain ended")
	}
	if !s.waitQueuesEmpty(g2, time.Now().Add(time.Hour)) { // no sockets: nothing queued
		t.Error("waitQueuesEmpty with nothing queued reported a stall")
	}
}
