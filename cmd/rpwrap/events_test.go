//go:build linux

package main

import (
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// `ctl events` follows a restart, a rollback, a crash and the respawn
// that follows it, each event once, in order for each generation.
func TestCtlEventsFollowRestartRollbackAndCrash(t *testing.T) {
	exe := testBinary(t)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--selector", "ebpf", "--ready", "notify",
		"--restart-on-failure", "--", "/bin/sh", "-c", onlyGeneration(3, "-exit-at-start", "1"), exe})
	var stdout, stderr testutil.SyncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(env{getenv: func(string) string { return "" }, stdout: &stdout, stderr: &stderr},
			[]string{"ctl", "--control", w.control, "events"})
	}()
	waitUntil(t, "the first event line", func() bool { return strings.Contains(stdout.String(), `"event":"following"`) })

	if r := w.call("restart"); !r.OK {
		t.Fatalf("restart to generation 2: %+v", r)
	}
	if r := w.call("restart"); r.OK {
		t.Fatalf("restart to generation 3 (exits at start): %+v, want a rollback", r)
	}
	gen2 := w.activePid()
	syscall.Kill(gen2, syscall.SIGKILL)
	waitUntil(t, "generation 4 respawned and generation 1 drained", func() bool {
		out := stdout.String()
		return strings.Contains(out, `"event":"respawned"`) && strings.Contains(out, `"event":"drain_ended","generation":1`)
	})
	w.stop(syscall.SIGTERM)
	if c := <-code; c != 0 {
		t.Errorf("ctl events: exit %d after rpwrap stopped, stderr %q; want 0", c, stderr.String())
	}

	byGen := map[int][]supervisor.EventType{}
	var first supervisor.Event
	for i, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var e supervisor.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.At.IsZero() {
			t.Fatalf("line %d %q: not an event with a time: %v", i+1, line, err)
		}
		if i == 0 {
			first = e
			continue
		}
		if e.Type == supervisor.EventRestartAsked {
			if e.Source != "control" {
				t.Errorf("restart_asked from %q, want control", e.Source)
			}
		}
		byGen[e.Generation] = append(byGen[e.Generation], e.Type)
		if e.Type == supervisor.EventRolledBack && !strings.Contains(e.Reason, "exited before it was ready") {
			t.Errorf("rolled_back without the reason: %+v", e)
		}
		if e.Type == supervisor.EventCrashed && (e.Pid != gen2 || !strings.Contains(e.Reason, "killed")) {
			t.Errorf("crashed: %+v, want pid %d killed", e, gen2)
		}
	}
	if first.Type != supervisor.EventFollowing || first.Generation != 1 {
		t.Errorf("first line %+v, want following generation 1", first)
	}
	want := map[int][]supervisor.EventType{
		0: {supervisor.EventRestartAsked, supervisor.EventRestartAsked},
		1: {supervisor.EventDrainBegan, supervisor.EventDrainEnded},
		2: {supervisor.EventStarted, supervisor.EventReady, supervisor.EventFlipped, supervisor.EventCrashed},
		3: {supervisor.EventStarted, supervisor.EventRolledBack},
		4: {supervisor.EventStarted, supervisor.EventRespawned},
	}
	for n, types := range want {
		if !slices.Equal(byGen[n], types) {
			t.Errorf("generation %d: events %v, want %v", n, byGen[n], types)
		}
	}
	if len(byGen) != len(want) {
		t.Errorf("events by generation %v, want %v", byGen, want)
	}
}
