//go:build linux

package supervisor

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// jsonKeys is the sorted keys of the JSON object b.
func jsonKeys(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// statusSupervisor has a draining generation 1, an active 2 and a
// starting 3, and one restart recorded.
func statusSupervisor(t *testing.T) (*Supervisor, time.Time) {
	s, _ := newTestSupervisor(Config{MaxDraining: 3})
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g1 := s.newTestGeneration(1, StateDraining)
	g1.pid, g1.started, g1.flipped, g1.deadline = 101, t0, t0.Add(time.Second), t0.Add(time.Minute)
	g2 := s.newTestGeneration(2, StateActive)
	g2.pid, g2.started, g2.flipped = 102, t0.Add(2*time.Second), t0.Add(3*time.Second)
	g2.deadline = t0.Add(time.Hour) // stale: only a draining generation shows one
	g3 := s.newTestGeneration(3, StateStarting)
	g3.pid, g3.started = 103, t0.Add(4*time.Second)
	s.restarts, s.rolledBack, s.respawns = 4, 2, 1 // and the one recorded below
	s.record(&RestartResult{Generation: 2, Pid: 102, Predecessor: 1, At: t0, Ready: time.Millisecond}, true)
	return s, t0
}

// The JSON that `ctl status --json` prints: its keys, the optional ones
// absent when empty, a deadline on draining generations only.
func TestStatusJSONShape(t *testing.T) {
	s, t0 := statusSupervisor(t)
	st := s.Status()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := jsonKeys(t, b), []string{"at", "config", "generations", "history", "kernel", "last_restart", "listeners", "max_draining", "respawns", "restarts", "rolled_back", "rpwrap", "selector"}; !reflect.DeepEqual(got, want) {
		t.Errorf("status keys %v, want %v", got, want)
	}
	var raw struct {
		Generations []json.RawMessage `json:"generations"`
		Last        json.RawMessage   `json:"last_restart"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	wantGen := [][]string{
		{"age", "backlog", "binary", "deadline", "established", "flipped", "generation", "pid", "queued", "slots", "started", "state"}, // draining
		{"age", "backlog", "binary", "established", "flipped", "generation", "pid", "queued", "slots", "started", "state"},             // active
		{"age", "backlog", "binary", "established", "generation", "pid", "queued", "slots", "started", "state"},                        // starting
	}
	for i, g := range raw.Generations {
		if got := jsonKeys(t, g); !reflect.DeepEqual(got, wantGen[i]) {
			t.Errorf("generation %d: keys %v, want %v", i+1, got, wantGen[i])
		}
	}
	if got, want := jsonKeys(t, raw.Last), []string{"at", "drain_ns", "flip_ns", "generation", "overhead_ns", "pid", "predecessor", "ready_ns", "to_flip_ns"}; !reflect.DeepEqual(got, want) {
		t.Errorf("restart keys %v, want %v (error, drained and queue_handed only when set)", got, want)
	}
	if !strings.Contains(string(b), `"state":"draining"`) || !strings.Contains(string(b), `"deadline":"2026-01-02T03:05:05Z"`) ||
		!strings.Contains(string(b), `"restarts":5,"rolled_back":2,"respawns":1,"max_draining":3`) {
		t.Errorf("status JSON: %s", b)
	}

	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Generations) != 3 || !back.Generations[0].Deadline.Equal(t0.Add(time.Minute)) ||
		back.Generations[1].Deadline != nil || back.Generations[2].Flipped != nil || back.Last.Generation != 2 {
		t.Errorf("status after a round trip: %+v", back)
	}

	// Nothing recorded yet: no last_restart, no history.
	s2, _ := newTestSupervisor(Config{})
	b2, _ := json.Marshal(s2.Status())
	if got, want := jsonKeys(t, b2), []string{"at", "config", "generations", "kernel", "listeners", "max_draining", "respawns", "restarts", "rolled_back", "rpwrap", "selector"}; !reflect.DeepEqual(got, want) {
		t.Errorf("fresh status keys %v, want %v", got, want)
	}
	res := RestartResult{Error: "x", Drained: true, Migrated: true}
	b3, _ := json.Marshal(res)
	for _, k := range []string{`"error":"x"`, `"drained":true`, `"queue_handed":true`} {
		if !strings.Contains(string(b3), k) {
			t.Errorf("restart JSON %s lacks %s", b3, k)
		}
	}
}

// Status is a copy: changing what it returned changes nothing in the
// supervisor.
func TestStatusIsASnapshot(t *testing.T) {
	s, _ := statusSupervisor(t)
	st := s.Status()
	st.Last.Error = "changed"
	st.History[0].Error = "changed"
	*st.Generations[0].Deadline = time.Time{}
	again := s.Status()
	if again.Last.Error != "" || again.History[0].Error != "" || again.Generations[0].Deadline.IsZero() {
		t.Errorf("Status shares memory with the supervisor: %+v", again)
	}
}

// The text `ctl status` prints: one row per generation, "-" where there
// is no deadline, and the last restart in words.
func TestStatusWrite(t *testing.T) {
	s, _ := statusSupervisor(t)
	var b strings.Builder
	s.Status().Write(&b)
	out := b.String()
	for _, want := range []string{
		"restarts:  5 done, 2 rolled back, 1 respawned after a crash\n",
		"generation 2 ready in 1ms", "generation 1 draining\n",
		"GEN  PID      STATE     STARTED                   AGE          DEADLINE                  QUEUED\n",
		"1    101      draining  2026-01-02T03:04:05Z      ", "2026-01-02T03:05:05Z      []\n",
		"2    102      active    2026-01-02T03:04:07Z      ", "-                         []\n",
		"3    103      starting  2026-01-02T03:04:09Z      ", "stop:      SIGTERM, SIGKILL after 30s; drain timeout 30s, stall 500ms, delay 0s, at most 3 draining\n",
		"rpwrap:    pid ", "generation 3 binary: unknown\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ctl status lacks %q:\n%s", want, out)
		}
	}
	r := RestartResult{Generation: 4, Predecessor: 3, Drained: true, Drain: 1500 * time.Millisecond}
	if got := r.summary(); !strings.Contains(got, "generation 3 drained in 1.5s") {
		t.Errorf("drained summary: %q", got)
	}
	r = RestartResult{Generation: 4, Error: "exited before it was ready"}
	if got := r.summary(); !strings.Contains(got, "generation 4 rolled back: exited before it was ready") {
		t.Errorf("rollback summary: %q", got)
	}
}

// The last rollback stays in view after a restart that worked.
func TestStatusKeepsTheLastRollbackBehindALaterSuccess(t *testing.T) {
	s, t0 := statusSupervisor(t)
	s.record(&RestartResult{Generation: 3, Pid: 103, Predecessor: 2, At: t0.Add(time.Minute), Error: "exited before it was ready (exit status 1)"}, false)
	s.record(&RestartResult{Generation: 4, Pid: 104, Predecessor: 2, At: t0.Add(2 * time.Minute)}, true)
	st := s.Status()
	if st.LastFailed == nil || st.LastFailed.Generation != 3 || st.Last.Generation != 4 {
		t.Fatalf("last %+v, last rollback %+v; want 4 and 3", st.Last, st.LastFailed)
	}
	b, _ := json.Marshal(st)
	if !strings.Contains(string(b), `"last_rollback":{"generation":3,"pid":103,"predecessor":2,"at":"2026-01-02T03:05:05Z","error":"exited before it was ready (exit status 1)"`) {
		t.Errorf("status JSON: %s", b)
	}
	var out strings.Builder
	st.Write(&out)
	if !strings.Contains(out.String(), "rollback:  2026-01-02T03:05:05Z generation 3 rolled back: exited before it was ready (exit status 1)\n") {
		t.Errorf("ctl status:\n%s", out.String())
	}
}
