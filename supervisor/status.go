//go:build linux

package supervisor

import (
	"fmt"
	"io"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
)

// Status is a snapshot of a running supervisor, as `rpwrap ctl status`
// shows it.
type Status struct {
	Selector    string             `json:"selector"`
	Listeners   []string           `json:"listeners"`
	Generations []GenerationStatus `json:"generations"`
	Restarts    int                `json:"restarts"`
	RolledBack  int                `json:"rolled_back"`
	Respawns    int                `json:"respawns"` // generations started because the serving one died (--restart-on-failure)
	Last        *RestartResult     `json:"last_restart,omitempty"`
}

// GenerationStatus describes one live generation.
type GenerationStatus struct {
	Generation int       `json:"generation"`
	Pid        int       `json:"pid"`
	State      State     `json:"state"`
	Started    time.Time `json:"started"`
	Queued     []uint32  `json:"queued"` // accept-queue depth per listener, in --listen order
}

// Status reports the supervisor's generations and counters.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	st := Status{Selector: string(s.Flavour()), Restarts: s.restarts, RolledBack: s.rolledBack, Respawns: s.respawns, Last: s.last}
	gens := append([]*generation(nil), s.gens...)
	states := make([]State, len(gens))
	for i, g := range gens {
		states[i] = g.state
	}
	s.mu.Unlock()
	for _, grp := range s.groups {
		st.Listeners = append(st.Listeners, grp.spec.String())
	}
	for i, g := range gens {
		gs := GenerationStatus{Generation: g.n, Pid: g.pid, State: states[i], Started: g.started}
		for _, l := range g.listeners {
			q, _, _ := fdpass.QueueDepth(l)
			gs.Queued = append(gs.Queued, q)
		}
		st.Generations = append(st.Generations, gs)
	}
	return st
}

// Write prints st for a human.
func (st Status) Write(w io.Writer) {
	fmt.Fprintf(w, "selector:  %s\n", st.Selector)
	for _, l := range st.Listeners {
		fmt.Fprintf(w, "listen:    %s\n", l)
	}
	fmt.Fprintf(w, "restarts:  %d done, %d rolled back, %d respawned after a crash\n", st.Restarts, st.RolledBack, st.Respawns)
	if r := st.Last; r != nil {
		fmt.Fprintf(w, "last:      generation %d ready in %s, flipped %s after the trigger (rpwrap's share %s), drained in %s\n",
			r.Generation, r.Ready.Round(time.Millisecond), r.ToFlip.Round(time.Millisecond), r.Overhead.Round(10*time.Microsecond), r.Drain.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "%-4s %-8s %-9s %-20s %s\n", "GEN", "PID", "STATE", "STARTED", "QUEUED")
	for _, g := range st.Generations {
		fmt.Fprintf(w, "%-4d %-8d %-9s %-20s %v\n", g.Generation, g.Pid, g.State, g.Started.Format(time.DateTime), g.Queued)
	}
}
