//go:build linux

package supervisor

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
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
	Last        *RestartResult     `json:"last_restart,omitempty"`  // the last restart, rolled back or not
	LastFailed  *RestartResult     `json:"last_rollback,omitempty"` // the last restart rolled back, even if others worked since
	History     []RestartResult    `json:"history,omitempty"`       // recent restarts, oldest first
	Kernel      *KernelCounters    `json:"kernel,omitempty"`        // the network namespace's TcpExt counters
	Rollout     *RolloutStatus     `json:"rollout,omitempty"`       // the canary or watch in progress, else the last one
	// Steered is what the eBPF selector gave each generation, the live ones
	// and the last 32 that let go of their sockets; absent under cBPF,
	// where CountersNote says what cannot be counted.
	Steered      []GenerationCounts `json:"steered,omitempty"`
	CountersNote string             `json:"counters_note,omitempty"`
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
	Flows      []int      `json:"flows,omitempty"`    // UDP flows it serves per listener (flow table), when a group keeps flows
	Age        string     `json:"age"`                // since Started
	Binary     Binary     `json:"binary"`             // the server's executable at spawn time
	// Per listener, in --listen order, like Queued:
	Backlog     []uint32     `json:"backlog"`            // the accept queue's size (0 for UDP)
	Slots       []uint32     `json:"slots"`              // the selector slot its socket holds
	Established []int        `json:"established"`        // established connections its processes hold
	Selected    []bpf.Counts `json:"selected,omitempty"` // what the eBPF program gave it; absent under cBPF
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
	if s.lastFailed != nil {
		failed := *s.lastFailed
		st.LastFailed = &failed
	}
	for _, h := range s.history {
		st.History = append(st.History, *h)
	}
	st.Rollout = s.rolloutSnapshotLocked()
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
	for i, f := range s.flowCounts(gens) {
		st.Generations[i].Flows = f
	}
	for i, g := range gens {
		for _, l := range g.listeners {
			q, b := uint32(0), uint32(0)
			if l.Spec().Network == "tcp" {
				q, b, _ = fdpass.QueueDepth(l) // closed meanwhile: 0
			}
			st.Generations[i].Queued = append(st.Generations[i].Queued, q)
			st.Generations[i].Backlog = append(st.Generations[i].Backlog, b)
		}
	}
	s.dataPath(&st, gens)
	return st
}

// dataPath adds to st what the kernel tells: the selector's counters, the
// slots and established connections of each generation, and the TcpExt
// counters.
func (s *Supervisor) dataPath(st *Status, gens []*generation) {
	st.Kernel = kernelCounters()
	if s.Flavour() == bpf.CBPF {
		st.CountersNote = CountersUnavailable
	}
	st.Steered = s.steeredByGeneration(gens)
	live := s.liveCounts()
	for i, g := range gens {
		gs := &st.Generations[i]
		for _, slot := range g.slots {
			gs.Slots = append(gs.Slots, uint32(slot))
		}
		if g.pid > 0 && !g.exited() {
			gs.Established = established(g.pid, s.groups)
		}
		if s.Flavour() != bpf.EBPF {
			continue
		}
		for j := range g.listeners {
			c, _ := s.countsOf(g, j, live)
			gs.Selected = append(gs.Selected, c)
		}
	}
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
	if r := st.Rollout; r != nil {
		fmt.Fprintf(w, "rollout:   %s\n", r.Summary())
	}
	if r := st.LastFailed; r != nil && (st.Last == nil || r.Generation != st.Last.Generation) {
		fmt.Fprintf(w, "rollback:  %s\n", r.summary())
	}
	if k := st.Kernel; k != nil {
		fmt.Fprintf(w, "kernel:    ListenOverflows %d, ListenDrops %d, TCPMigrateReqSuccess %d, TCPMigrateReqFailure %d (netns totals since boot)\n",
			k.ListenOverflows, k.ListenDrops, k.TCPMigrateReqSuccess, k.TCPMigrateReqFailure)
	}
	if st.CountersNote != "" {
		fmt.Fprintf(w, "counters:  %s\n", st.CountersNote)
	}
	if len(st.Steered) > 0 {
		fmt.Fprintf(w, "steered:   %s\n", steeredLine(st.Steered))
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
		g.writeDataPath(w, st.Listeners)
	}
	writeFlows(w, st.Generations)
}

// writeDataPath prints, per listener, g's slot, queue against backlog,
// established connections and what the selector gave it.
func (g GenerationStatus) writeDataPath(w io.Writer, listeners []string) {
	for i := range g.Slots {
		name := fmt.Sprint(i)
		if i < len(listeners) {
			name = listeners[i]
		}
		line := fmt.Sprintf("  %s: slot %d", name, g.Slots[i])
		if i < len(g.Queued) && i < len(g.Backlog) {
			line += fmt.Sprintf(", queue %d of %d", g.Queued[i], g.Backlog[i])
		}
		if i < len(g.Established) {
			line += fmt.Sprintf(", %d established", g.Established[i])
		}
		if i < len(g.Selected) {
			c := g.Selected[i]
			line += fmt.Sprintf(", selected %d (active %d, probe %d, scan %d), migrated in %d, stray %d", c.Steered(), c.Active, c.Probe, c.Scan, c.Migrated, c.Stray)
		}
		fmt.Fprintln(w, line)
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
	if c.Canary != "" || c.Watch != "0s" {
		fmt.Fprintf(w, "watch:     %s, check %s; canary %s\n", c.Watch, orNone(c.WatchCheck), orNone(c.Canary))
	}
}

// summary describes one restart on a line.
func (r *RestartResult) summary() string {
	at := r.At.Format(time.RFC3339)
	if r.Error != "" {
		return fmt.Sprintf("%s generation %d rolled back: %s", at, r.Generation, r.Error)
	}
	s := fmt.Sprintf("%s generation %d ready in %s, flipped %s after the trigger (rpwrap's share %s)",
		at, r.Generation, r.Ready.Round(time.Millisecond), r.ToFlip.Round(time.Millisecond), r.Overhead.Round(10*time.Microsecond))
	if r.Canary > 0 {
		s += fmt.Sprintf(", after a canary of %s", r.Canary.Round(time.Millisecond))
	}
	if r.Drained {
		return s + fmt.Sprintf(", generation %d drained in %s", r.Predecessor, r.Drain.Round(time.Millisecond))
	}
	return s + fmt.Sprintf(", generation %d draining", r.Predecessor)
}

// steeredLine sums, per generation, the new connections or datagrams the
// selector gave it over the listeners: "gen 1: 120, gen 2: 80 (200 in all)".
func steeredLine(gcs []GenerationCounts) string {
	var parts []string
	var total uint64
	for _, gc := range gcs {
		var n uint64
		for _, c := range gc.Selected {
			n += c.Steered()
		}
		total += n
		parts = append(parts, fmt.Sprintf("gen %d: %d", gc.Generation, n))
	}
	return fmt.Sprintf("%s (%d in all, probes included)", strings.Join(parts, ", "), total)
}
