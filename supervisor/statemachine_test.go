//go:build linux

package supervisor

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
)

// TestRollback fails the successor at each step of a restart: the
// predecessor keeps serving, the successor ends in its final state, and
// nothing of it is left.
func TestRollback(t *testing.T) {
	for _, tc := range []struct {
		name   string
		groups int
		tune   func(*Config)
		plan   func(r *rig, fp *fakeProc)
		final  State // the successor's final state; "" when it was never started
		err    string
	}{
		{name: "new socket refused by the 2nd selector", groups: 2,
			plan:  func(r *rig, _ *fakeProc) { r.sels[1].addErr = errors.New("injected add failure") },
			final: "", err: "to the selector of generation 2: injected add failure"},
		{name: "spawn fails", groups: 2,
			plan:  func(_ *rig, fp *fakeProc) { fp.startErr = errors.New("injected fork failure") },
			final: StateAbandoned, err: "injected fork failure"},
		{name: "exits before ready", groups: 1,
			plan:  func(_ *rig, fp *fakeProc) { fp.exitAt, fp.exitStatus = "check", exitCode(98) },
			final: StateCrashed, err: "exited before it was ready (exit status 98); if its log says \"Address already in use\""},
		{name: "never ready", groups: 1,
			tune:  func(c *Config) { c.ReadyTimeout = 300 * time.Millisecond },
			plan:  func(_ *rig, fp *fakeProc) { fp.checkGate = make(chan struct{}) },
			final: StateAbandoned, err: "not ready within 300ms (--ready-timeout; readiness check accept): probe not accepted"},
		{name: "readiness check fails", groups: 1,
			plan:  func(_ *rig, fp *fakeProc) { fp.checkErr = errors.New("injected check failure") },
			final: StateAbandoned, err: "injected check failure"},
		{name: "guard fails", groups: 2,
			plan:  func(_ *rig, fp *fakeProc) { fp.guardErr = errors.New("injected: serves on a socket of its own") },
			final: StateAbandoned, err: "injected: serves on a socket of its own"},
		{name: "exits after ready, in the guard", groups: 1,
			plan:  func(_ *rig, fp *fakeProc) { fp.exitAt, fp.exitStatus = "guard", exitCode(0) },
			final: StateCrashed, err: "exited after it was ready, before the flip"},
		{name: "exits after ready, before the flip", groups: 1,
			plan:  func(_ *rig, fp *fakeProc) { fp.exitAt, fp.exitStatus = "relisten", killedBy(syscall.SIGSEGV) },
			final: StateCrashed, err: "exited after it was ready, before the flip"},
		{name: "relisten fails", groups: 1,
			plan:  func(_ *rig, fp *fakeProc) { fp.relistErr = errors.New("injected listen failure") },
			final: StateAbandoned, err: "injected listen failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.groups, tc.tune)
			r.os.plan(1).stopStatus = exitCode(7)
			tc.plan(r, r.os.plan(2))
			r.run(context.Background(), true)
			res, err := r.restart(false)
			wantErr(t, "restart", err, tc.err)
			if res.Generation != 2 || res.Predecessor != 1 || res.Error == "" || res.Drained {
				t.Errorf("result %+v, want generation 2 rolled back from 1", res)
			}
			r.wantFinal(2, tc.final)
			if g := r.os.gen(2); g != nil {
				if g.proc != nil {
					r.retired(2)
				}
				for _, l := range g.listeners {
					if l.Inode() != 0 {
						t.Errorf("successor's socket %s left open", l.Spec())
					}
				}
			}
			r.wantStates("1:active")
			r.wantSlots(1)
			for i, sel := range r.sels {
				if sel.Active() != r.os.gen(1).slots[i] {
					t.Errorf("group %d: active slot %d, want the predecessor's %d", i, sel.Active(), r.os.gen(1).slots[i])
				}
			}
			if st := r.s.Status(); st.Restarts != 0 || st.RolledBack != 1 || st.Last == nil || st.Last.Error != res.Error {
				t.Errorf("status: %d restarts, %d rolled back, last %+v", st.Restarts, st.RolledBack, st.Last)
			}
			if got := r.os.plan(1).received(); len(got) > 0 {
				t.Errorf("predecessor received %v during the rollback", got)
			}

			// The predecessor still serves: a second restart works.
			if _, err := r.restart(true); err != nil {
				t.Fatalf("restart after the rollback: %v", err)
			}
			r.wantFinal(1, StateStopped)
			r.wantStates("3:active")
			if code := r.stop(); code != 0 {
				t.Errorf("exit status %d, want generation 3's, 0", code)
			}
			r.wantFinal(3, StateStopped)
			r.clean()
		})
	}
}

// TestFlipFailsOnSecondGroup: the first group, flipped already, is put
// back to the predecessor's slot; the successor is abandoned.
func TestFlipFailsOnSecondGroup(t *testing.T) {
	r := newRig(t, 2, nil)
	r.sels[1].failFlips = []error{errors.New("injected map update failure")}
	r.run(context.Background(), true)
	old := slices.Clone(r.os.gen(1).slots)
	res, err := r.restart(false)
	wantErr(t, "restart", err, "flip l1=tcp://127.0.0.1:")
	wantErr(t, "restart", err, "injected map update failure")
	if res.Drained || res.Flip != 0 {
		t.Errorf("result %+v, want a rollback", res)
	}
	r.wantFinal(2, StateAbandoned)
	r.retired(2)
	r.wantStates("1:active")
	r.wantSlots(1)
	succ := r.os.gen(2).slots
	if got, want := r.sels[0].flips(), []bpf.Slot{succ[0], old[0]}; !slices.Equal(got, want) {
		t.Errorf("group 0 flips %v, want to the successor and back %v", got, want)
	}
	for i, sel := range r.sels {
		if sel.Active() != old[i] {
			t.Errorf("group %d: active slot %d, want the predecessor's %d", i, sel.Active(), old[i])
		}
	}
	if code := r.stop(); code != 0 {
		t.Errorf("exit status %d, want the predecessor's 0", code)
	}
	r.wantFinal(1, StateStopped)
	r.clean()
}

// TestFlipCannotBePutBack: when putting the first group back fails too,
// the operator is told which address now goes where.
func TestFlipCannotBePutBack(t *testing.T) {
	r := newRig(t, 2, nil)
	r.sels[0].failFlips = []error{nil, errors.New("injected put-back failure")}
	r.sels[1].failFlips = []error{errors.New("injected map update failure")}
	r.run(context.Background(), true)
	_, err := r.restart(false)
	wantErr(t, "restart", err, "injected map update failure")
	if !strings.Contains(r.log.String(), "cannot put the selector back after a failed flip") {
		t.Error("no log line about the selector that could not be put back")
	}
	r.wantFinal(2, StateAbandoned)
	r.wantStates("1:active")
	r.stop()
	r.clean()
}

// TestShutdownDuringRestart stops rpwrap at each stage of a restart.
// Before the flip the successor is abandoned and the exit status is the
// predecessor's; after it the successor is the active one.
func TestShutdownDuringRestart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tune    func(*Config)
		plan    func(old, succ *fakeProc)
		at      func(old, succ *fakeProc) // returns once the restart is at that stage
		after   func(old, succ *fakeProc) // once rpwrap was told to stop
		sigterm bool                      // a real SIGTERM instead of ctx
		flipped bool
		code    int
	}{
		{name: "while it starts",
			plan:  func(_, s *fakeProc) { s.startGate = make(chan struct{}) },
			at:    func(_, s *fakeProc) { <-s.starting },
			after: func(_, s *fakeProc) { time.Sleep(50 * time.Millisecond); close(s.startGate) },
			code:  7},
		{name: "during the readiness check",
			plan: func(_, s *fakeProc) { s.checkGate = make(chan struct{}) },
			at:   func(_, s *fakeProc) { <-s.checking },
			code: 7},
		{name: "during the readiness check, SIGTERM", sigterm: true,
			plan: func(_, s *fakeProc) { s.checkGate = make(chan struct{}) },
			at:   func(_, s *fakeProc) { <-s.checking },
			code: 7},
		{name: "in the guard",
			plan: func(_, s *fakeProc) { s.guardWaits = true },
			at:   func(_, s *fakeProc) { <-s.checking; time.Sleep(20 * time.Millisecond) },
			code: 7},
		{name: "during the drain delay", flipped: true,
			tune: func(c *Config) { c.DrainDelay = time.Minute },
			code: 8},
		{name: "during the drain", flipped: true,
			plan: func(o, _ *fakeProc) { o.ignoreStop = true },
			at:   func(o, _ *fakeProc) { waitSignal(o, syscall.SIGTERM) },
			code: 8},
		{name: "during the drain, SIGTERM", flipped: true, sigterm: true,
			plan: func(o, _ *fakeProc) { o.ignoreStop = true },
			at:   func(o, _ *fakeProc) { waitSignal(o, syscall.SIGTERM) },
			code: 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 1, tc.tune)
			old, succ := r.os.plan(1), r.os.plan(2)
			old.stopStatus, succ.stopStatus = exitCode(7), exitCode(8)
			if tc.plan != nil {
				tc.plan(old, succ)
			}
			r.run(context.Background(), true)
			type answer struct {
				res RestartResult
				err error
			}
			answered := make(chan answer, 1)
			go func() { res, err := r.restart(false); answered <- answer{res, err} }()
			var a answer
			if tc.flipped {
				a = <-answered
				if a.err != nil {
					t.Fatalf("restart: %v", a.err)
				}
			}
			if tc.at != nil {
				tc.at(old, succ)
			}
			if tc.sigterm {
				if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil { // Run catches it
					t.Fatal(err)
				}
			} else {
				r.cancel()
			}
			if tc.after != nil {
				tc.after(old, succ)
			}
			code := r.wait()
			if !tc.flipped {
				a = <-answered
				if a.err == nil || a.res.Drained {
					t.Errorf("restart stopped before the flip answered %+v, %v; want an error", a.res, a.err)
				}
			}
			if code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
			r.wantFinal(1, StateStopped)
			if tc.flipped {
				r.wantFinal(2, StateStopped)
			} else {
				r.wantFinal(2, StateAbandoned)
			}
			r.clean()
		})
	}
}

// waitSignal waits until fp has received sig.
func waitSignal(fp *fakeProc, sig syscall.Signal) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if slices.Contains(fp.received(), sig) {
			return
		}
	}
}

// TestDrainingGenerationCrashes: a draining generation that exits on its
// own is retired as stopped, and nothing else changes.
func TestDrainingGenerationCrashes(t *testing.T) {
	for _, delay := range []time.Duration{0, time.Minute} {
		t.Run("drain delay "+delay.String(), func(t *testing.T) {
			r := newRig(t, 1, func(c *Config) { c.DrainDelay = delay })
			old := r.os.plan(1)
			old.ignoreStop = true
			r.run(context.Background(), true)
			if _, err := r.restart(false); err != nil {
				t.Fatal(err)
			}
			if delay == 0 {
				waitSignal(old, syscall.SIGTERM) // in the drain's watch
			}
			r.wantStates("1:draining", "2:active")
			old.exit(exitCode(139))
			r.retired(1)
			r.wantFinal(1, StateStopped)
			r.wantStates("2:active")
			r.wantSlots(2)
			st := r.s.Status()
			if st.Restarts != 1 || st.RolledBack != 0 || st.Respawns != 0 || st.Last == nil || !st.Last.Drained {
				t.Errorf("status %+v, want 1 restart, drained", st)
			}
			if got := r.os.plan(2).received(); len(got) > 0 {
				t.Errorf("the active generation received %v", got)
			}
			if code := r.stop(); code != 0 {
				t.Errorf("exit status %d, want the active one's 0", code)
			}
			r.clean()
		})
	}
}

// TestTriggerDuringDrainRestartsAtOnce: a restart asked while a
// predecessor drains runs at once; both replaced generations drain side by
// side.
func TestTriggerDuringDrainRestartsAtOnce(t *testing.T) {
	r := newRig(t, 1, nil)
	r.os.plan(1).ignoreStop = true
	r.os.plan(2).ignoreStop = true
	r.os.plan(3).stopStatus = exitCode(9)
	r.run(context.Background(), true)
	for n := 2; n <= 3; n++ {
		res, err := r.restart(false)
		if err != nil || res.Generation != n {
			t.Fatalf("restart %d: %+v, %v", n, res, err)
		}
	}
	r.wantStates("1:draining", "2:draining", "3:active")
	r.wantSlots(1, 2, 3)
	if code := r.stop(); code != 9 {
		t.Errorf("exit status %d, want generation 3's, 9", code)
	}
	for n := 1; n <= 3; n++ {
		r.wantFinal(n, StateStopped)
	}
	for n := 1; n <= 2; n++ { // they ignored the stop signal: killed after StopTimeout
		if got := r.os.plan(n).received(); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}) {
			t.Errorf("generation %d received %v, want TERM then KILL", n, got)
		}
	}
	r.clean()
}

// TestMaxDraining: a restart that would exceed MaxDraining ends the drain
// of the oldest draining generation, long before its deadline.
func TestMaxDraining(t *testing.T) {
	for _, max := range []int{1, 2} {
		t.Run("max "+string(rune('0'+max)), func(t *testing.T) {
			r := newRig(t, 1, func(c *Config) { c.MaxDraining = max; c.DrainTimeout = 10 * time.Minute })
			r.os.plan(1).ignoreStop = true
			r.os.plan(2).ignoreStop = true
			r.run(context.Background(), true)
			for range 2 {
				if _, err := r.restart(false); err != nil {
					t.Fatal(err)
				}
			}
			if max == 1 {
				r.retired(1)
				r.wantFinal(1, StateStopped)
				r.wantStates("2:draining", "3:active")
				r.wantSlots(2, 3)
				if !strings.Contains(r.log.String(), "stopping it before its drain deadline") {
					t.Error("no log line for the drain ended early")
				}
			} else {
				r.wantStates("1:draining", "2:draining", "3:active")
			}
			r.stop()
			r.clean()
		})
	}
}

// TestRestartAndDrainWaits: RestartAndDrain answers once the predecessor
// is retired.
func TestRestartAndDrainWaits(t *testing.T) {
	r := newRig(t, 2, nil)
	r.run(context.Background(), true)
	res, err := r.restart(true)
	if err != nil || !res.Drained || res.Predecessor != 1 || res.Generation != 2 {
		t.Fatalf("restart: %+v, %v", res, err)
	}
	r.wantFinal(1, StateStopped)
	r.wantStates("2:active")
	r.wantSlots(2)
	r.stop()
	r.clean()
}

// TestRespawn: with RestartOnFailure the serving generation that dies is
// replaced on the same sockets; a failed attempt hands them on to the next.
func TestRespawn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		plan   func(r *rig)
		finals map[int]State
		active int
	}{
		{name: "at the first attempt", finals: map[int]State{1: StateCrashed}, active: 2},
		{name: "after a failed spawn",
			plan:   func(r *rig) { r.os.plan(2).startErr = errors.New("injected fork failure") },
			finals: map[int]State{1: StateCrashed, 2: StateAbandoned}, active: 3},
		{name: "after one that exited before ready",
			plan:   func(r *rig) { r.os.plan(2).exitAt, r.os.plan(2).exitStatus = "check", exitCode(1) },
			finals: map[int]State{1: StateCrashed, 2: StateAbandoned}, active: 3},
		{name: "after one never ready",
			plan:   func(r *rig) { r.os.plan(2).checkGate = make(chan struct{}) },
			finals: map[int]State{1: StateCrashed, 2: StateAbandoned}, active: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 2, func(c *Config) { c.RestartOnFailure = true; c.ReadyTimeout = 300 * time.Millisecond })
			if tc.plan != nil {
				tc.plan(r)
			}
			r.run(context.Background(), true)
			first := slices.Clone(r.os.gen(1).listeners)
			inodes := []uint64{first[0].Inode(), first[1].Inode()}
			r.os.plan(1).exit(exitCode(2))
			eventually(t, "respawned", func() bool { return r.state(tc.active) == StateActive })
			for n, want := range tc.finals {
				r.wantFinal(n, want)
			}
			r.wantStates(itoa(tc.active) + ":active")
			g := r.os.gen(tc.active)
			for i, l := range g.listeners {
				if l != first[i] || l.Inode() != inodes[i] {
					t.Errorf("group %d: respawned on socket %d, want the dead generation's %d", i, l.Inode(), inodes[i])
				}
			}
			for i, sel := range r.sels {
				if got := sel.slots(); len(got) != 1 || got[0] != r.os.gen(1).slots[i] {
					t.Errorf("group %d: slots %v, want the first generation's alone", i, got)
				}
			}
			if st := r.s.Status(); st.Respawns != 1 || st.Restarts != 0 {
				t.Errorf("status: %d respawns, %d restarts; want 1, 0", st.Respawns, st.Restarts)
			}
			// The respawned generation restarts like any other.
			if _, err := r.restart(true); err != nil {
				t.Fatal(err)
			}
			r.wantFinal(tc.active, StateStopped)
			r.wantSlots(tc.active + 1)
			r.stop()
			r.clean()
		})
	}
}

// TestRespawnStoppedDuringBackoff: SIGTERM while rpwrap waits to respawn
// ends it with the status of the generation that died serving.
func TestRespawnStoppedDuringBackoff(t *testing.T) {
	r := newRig(t, 1, func(c *Config) { c.RestartOnFailure = true })
	r.os.plan(2).startErr = errors.New("injected fork failure")
	r.run(context.Background(), true)
	r.os.plan(1).exit(exitCode(3))
	<-r.os.plan(2).starting // the 2nd attempt waits 200ms
	if code := r.stop(); code != 3 {
		t.Errorf("exit status %d, want 3", code)
	}
	r.wantFinal(1, StateCrashed)
	r.wantFinal(2, StateAbandoned)
	r.clean()
}

// TestActiveDiesWithoutRestartOnFailure: rpwrap exits with its status.
func TestActiveDiesWithoutRestartOnFailure(t *testing.T) {
	r := newRig(t, 1, nil)
	r.run(context.Background(), true)
	r.os.plan(1).exit(exitCode(42))
	if code := r.wait(); code != 42 {
		t.Errorf("exit status %d, want 42", code)
	}
	r.wantFinal(1, StateCrashed)
	r.clean()
}

// TestFirstGenerationFails: Run's status when the first generation never
// serves.
func TestFirstGenerationFails(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plan  func(fp *fakeProc)
		final State
		code  int
	}{
		{name: "spawn fails", plan: func(fp *fakeProc) { fp.startErr = errors.New("injected fork failure") }, final: StateAbandoned, code: 1},
		{name: "exits before ready", plan: func(fp *fakeProc) { fp.exitAt, fp.exitStatus = "check", exitCode(5) }, final: StateCrashed, code: 1},
		{name: "never ready", plan: func(fp *fakeProc) { fp.checkGate = make(chan struct{}) }, final: StateAbandoned, code: 1},
		{name: "guard fails", plan: func(fp *fakeProc) { fp.guardErr = errors.New("injected") }, final: StateAbandoned, code: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 1, func(c *Config) { c.ReadyTimeout = 300 * time.Millisecond })
			tc.plan(r.os.plan(1))
			r.run(context.Background(), false)
			if code := r.wait(); code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
			r.wantFinal(1, tc.final)
			r.clean()
		})
	}
}

// TestTriggersDuringRestartAreServedByOne: the requests that come while a
// restart runs are all answered by the single restart that follows it.
func TestTriggersDuringRestartAreServedByOne(t *testing.T) {
	r := newRig(t, 1, nil)
	gate := make(chan struct{})
	r.os.plan(2).checkGate = gate
	r.run(context.Background(), true)
	first := make(chan RestartResult, 1)
	go func() { res, _ := r.restart(false); first <- res }()
	<-r.os.plan(2).checking
	var queued []chan RestartResult
	for range 3 {
		reply := make(chan RestartResult, 1)
		r.s.triggers <- restartRequest{reply: reply} // taken by the event loop: queued
		queued = append(queued, reply)
	}
	close(gate)
	if res := <-first; res.Generation != 2 || res.Error != "" {
		t.Errorf("first restart: %+v", res)
	}
	for i, reply := range queued {
		if res := <-reply; res.Generation != 3 || res.Predecessor != 2 || res.Error != "" {
			t.Errorf("queued request %d answered %+v, want by the one restart to generation 3", i, res)
		}
	}
	if st := r.s.Status(); st.Restarts != 2 {
		t.Errorf("%d restarts, want 2", st.Restarts)
	}
	r.retired(1)
	r.retired(2)
	r.wantStates("3:active")
	r.stop()
	r.clean()
}

// TestStopBeforeFirstReady: rpwrap told to stop while the first
// generation is not ready yet kills it (no stop signal: it never served)
// and exits 1.
func TestStopBeforeFirstReady(t *testing.T) {
	r := newRig(t, 1, nil)
	fp := r.os.plan(1)
	fp.checkGate = make(chan struct{})
	r.run(context.Background(), false)
	<-fp.checking
	if code := r.stop(); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	r.wantFinal(1, StateAbandoned)
	if got := fp.received(); len(got) == 0 || got[0] != syscall.SIGTERM {
		t.Errorf("first generation received %v, want the stop signal first", got)
	}
	r.clean()
}
