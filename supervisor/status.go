//go:build linux

package supervisor

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
)

// Status is a snapshot of a running supervisor, as `rpwrap ctl status`
// shows it.
type Status struct {
	Rpwrap      *Process           `json:"rpwrap,omitempty"`
	Config      *ConfigStatus      `json:"config,omitempty"`
	At          time.Time          `json:"at"` // when the snapshot was taken
	Selector    string             `json:"selector"`
	Listeners   []string           `json:"listeners"`
	Generations []GenerationStatus `json:"generations"`
	Restarts    int                `json:"restarts"`
	RolledBack  int                `json:"rolled_back"`
	Respawns    int                `json:"respawns"` // generations started because the serving one died (--restart-on-failure)
	MaxDraining int                `json:"max_draining"`
	Last        *RestartResult     `json:"last_restart,omitempty"` // the last restart, rolled back or not
	History     []RestartResult    `json:"history,omitempty"`      // recent restarts, oldest first
}

// GenerationStatus describes one live generation.
type GenerationStatus struct {
	Generation int        `json:"generation"`
	Pid        int        `json:"pid"`
	State      State      `json:"state"`
	Started    time.Time  `json:"started"`
	Flipped    *time.Time `json:"flipped,omitempty"`  // when it became the active one
	Deadline   *time.Time `json:"deadline,omitempty"` // draining: when it is killed
	Queued     []uint32   `json:"queued"`             // accept-queue depth per listener, in --listen order
	Age        string     `json:"age"`                // since Started
	Binary     Binary     `json:"binary"`             // the server's executable at spawn time
}

// Status reports the supervisor's generations and counters, from one
// snapshot: the state is read under the lock, the queues after it from
// sockets that stay valid (a closed socket reads as 0).
func (s *Supervisor) Status() Status {
	now := time.Now()
	proc, cfg := s.about(now)
	s.mu.Lock()
	st := Status{Rpwrap: proc, Config: cfg, At: now, Selector: string(s.Flavour()), Restarts: s.restarts, RolledBack: s.rolledBack,
		Respawns: s.respawns, MaxDraining: s.cfg.MaxDraining}
	if s.last != nil {
		last := *s.last
		st.Last = &last
	}
	for _, h := range s.history {
		st.History = append(st.History, *h)
	}
	gens := append([]*generation(nil), s.gens...)
	for _, g := range gens {
		gs := GenerationStatus{Generation: g.n, Pid: g.pid, State: g.state, Started: g.started,
			Age: age(now, g.started), Binary: g.binary}
		if !g.flipped.IsZero() {
			t := g.flipped
			gs.Flipped = &t
		}
		if g.state == StateDraining && !g.deadline.IsZero() {
			t := g.deadline
			gs.Deadline = &t
		}
		st.Generations = append(st.Generations, gs)
	}
	s.mu.Unlock()
	for _, grp := range s.groups {
		st.Listeners = append(st.Listeners, grp.spec.String())
	}
	for i, g := range gens {
		for _, l := range g.listeners {
			q := uint32(0)
			if l.Spec().Network == "tcp" {
				q, _, _ = fdpass.QueueDepth(l) // closed meanwhile: 0
			}
			st.Generations[i].Queued = append(st.Generations[i].Queued, q)
		}
	}
	return st
}

// Write prints st for a human.
func (st Status) Write(w io.Writer) {
	if p := st.Rpwrap; p != nil {
		fmt.Fprintf(w, "rpwrap:    pid %d, version %s, %s\n", p.Pid, p.Version, p.Executable)
		fmt.Fprintf(w, "up:        %s, since %s\n", p.Uptime, p.Started.Format(time.RFC3339))
		p.writeBinary(w)
	}
	fmt.Fprintf(w, "selector:  %s\n", st.Selector)
	for _, l := range st.Listeners {
		fmt.Fprintf(w, "listen:    %s\n", l)
	}
	if c := st.Config; c != nil {
		c.write(w)
	}
	fmt.Fprintf(w, "restarts:  %d done, %d rolled back, %d respawned after a crash\n", st.Restarts, st.RolledBack, st.Respawns)
	if r := st.Last; r != nil {
		fmt.Fprintf(w, "last:      %s\n", r.summary())
	}
	fmt.Fprintf(w, "\n%-4s %-8s %-9s %-25s %-12s %-25s %s\n", "GEN", "PID", "STATE", "STARTED", "AGE", "DEADLINE", "QUEUED")
	for _, g := range st.Generations {
		deadline := "-"
		if g.Deadline != nil {
			deadline = g.Deadline.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%-4d %-8d %-9s %-25s %-12s %-25s %v\n", g.Generation, g.Pid, g.State, g.Started.Format(time.RFC3339), g.Age, deadline, g.Queued)
	}
	fmt.Fprintln(w)
	for _, g := range st.Generations {
		fmt.Fprintf(w, "generation %d binary: %s\n", g.Generation, g.Binary)
	}
}

// write prints the configuration, a few settings a line.
func (c *ConfigStatus) write(w io.Writer) {
	fmt.Fprintf(w, "command:   %s\n", strings.Join(c.Command, " "))
	fmt.Fprintf(w, "pass:      %s, ready %s (timeout %s), selector asked %s, backlog %d\n", c.Route, c.Ready, c.ReadyTimeout, c.Selector, c.Backlog)
	fmt.Fprintf(w, "stop:      SIG%s, SIGKILL after %s; drain timeout %s, stall %s, delay %s, at most %d draining",
		c.StopSignal, c.StopTimeout, c.DrainTimeout, c.DrainStall, c.DrainDelay, c.MaxDraining)
	if c.ShutdownAtFlip {
		fmt.Fprint(w, ", shutdown at flip")
	}
	if c.RestartOnFailure {
		fmt.Fprint(w, ", restart on failure")
	}
	fmt.Fprintln(w)
}

// summary describes one restart on a line.
func (r *RestartResult) summary() string {
	at := r.At.Format(time.RFC3339)
	if r.Error != "" {
		return fmt.Sprintf("%s generation %d rolled back: %s", at, r.Generation, r.Error)
	}
	s := fmt.Sprintf("%s generation %d ready in %s, flipped %s after the trigger (rpwrap's share %s)",
		at, r.Generation, r.Ready.Round(time.Millisecond), r.ToFlip.Round(time.Millisecond), r.Overhead.Round(10*time.Microsecond))
	if r.Drained {
		return s + fmt.Sprintf(", generation %d drained in %s", r.Predecessor, r.Drain.Round(time.Millisecond))
	}
	return s + fmt.Sprintf(", generation %d draining", r.Predecessor)
}
