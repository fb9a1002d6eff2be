//go:build linux

package supervisor

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func (f *fakeOS) recheck(_ context.Context, g *generation, _ Ready) error {
	return f.plan(g.n).recheckErr
}

// TestWatchFlipsBack: a successor that exits, or fails its --watch-check,
// during the watch is rolled back: the predecessor, never signalled,
// is active again, and the restart fails with the reason.
func TestWatchFlipsBack(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plan  func(r *rig, fp *fakeProc)
		final State
		err   string
	}{
		{name: "successor exits",
			plan: func(_ *rig, fp *fakeProc) {
				go func() { <-fp.checking; time.Sleep(300 * time.Millisecond); fp.exit(exitCode(3)) }()
			},
			final: StateCrashed, err: "exited (exit status 3)"},
		{name: "watch check fails",
			plan:  func(_ *rig, fp *fakeProc) { fp.recheckErr = errors.New("injected: 503") },
			final: StateStopped, err: "failed --watch-check http:/healthz: injected: 503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 1, func(c *Config) {
				c.Watch, c.WatchCheck = 30*time.Second, Ready{Kind: ReadyHTTP, Arg: "/healthz"}
			})
			r.run(context.Background(), true)
			old := slices.Clone(r.os.gen(1).slots)
			tc.plan(r, r.os.plan(2))
			res, err := r.restart(false)
			wantErr(t, "restart", err, "watch failed, flipped back to generation 1")
			wantErr(t, "restart", err, tc.err)
			if res.Rollout == nil || res.Rollout.Phase != "rolled back" || res.Rollout.Aborted == "" {
				t.Errorf("rollout %+v, want rolled back with the reason", res.Rollout)
			}
			if a, _ := r.s.Active(); a != 1 {
				t.Errorf("active generation %d after the flip back, want 1", a)
			}
			if got := r.sels[0].Active(); got != old[0] {
				t.Errorf("active slot %d, want the predecessor's %d", got, old[0])
			}
			if sigs := r.os.plan(1).received(); len(sigs) != 0 {
				t.Errorf("the predecessor received %v during the watch, want nothing", sigs)
			}
			r.retired(2)
			r.wantFinal(2, tc.final)
			r.wantStates("1:active")
			if st := r.s.Status(); st.Rollout == nil || st.Rollout.Aborted == "" || st.Rollout.FlipBack == 0 {
				t.Errorf("status rollout %+v, want the reason it was rolled back", st.Rollout)
			}
			if code := r.stop(); code != 0 {
				t.Errorf("exit status %d, want the predecessor's 0", code)
			}
			r.clean()
		})
	}
}

// TestWatchEndsWell: during the watch the predecessor stands by, not
// signalled; `ctl promote` ends the watch, and only then it drains.
func TestWatchEndsWellOnPromote(t *testing.T) {
	r := newRig(t, 1, func(c *Config) { c.Watch = time.Minute })
	r.run(context.Background(), true)
	answered := make(chan error, 1)
	go func() { _, err := r.restart(false); answered <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for r.state(1) != StateStandby && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r.wantStates("1:standby", "2:active")
	if sigs := r.os.plan(1).received(); len(sigs) != 0 {
		t.Errorf("the predecessor received %v while standing by", sigs)
	}
	if err := r.s.Promote(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-answered; err != nil {
		t.Fatalf("restart after promote: %v", err)
	}
	r.retired(1)
	r.wantFinal(1, StateStopped)
	if err := r.s.Abort(context.Background()); !errors.Is(err, errNoRollout) {
		t.Errorf("abort with nothing running: %v, want %v", err, errNoRollout)
	}
	r.stop()
	r.clean()
}

// TestStopDuringTheWatch: SIGTERM (the end of Run's context) during a
// watch rolls it back, and rpwrap exits with the predecessor's status;
// both generations end, nothing is left.
func TestStopDuringTheWatch(t *testing.T) {
	r := newRig(t, 1, func(c *Config) { c.Watch = time.Minute })
	r.os.plan(1).stopStatus = exitCode(7)
	r.run(context.Background(), true)
	answered := make(chan error, 1)
	go func() { _, err := r.restart(false); answered <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for r.state(1) != StateStandby && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if code := r.stop(); code != 7 {
		t.Errorf("exit status %d, want the predecessor's 7", code)
	}
	wantErr(t, "restart", <-answered, "rpwrap is stopping")
	r.wantFinal(1, StateStopped)
	r.retired(2)
	r.clean()
}
