//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/supervisor"
)

// failNextScript runs the demo server, except in the one generation that
// finds the file "fail" in the directory $1 first: that one takes the file
// (mv is atomic) and exits 1 at start, before it is ready. The shell execs,
// so the server keeps the pid that LISTEN_PID names.
const failNextScript = `if mv "$1/fail" "$1/failed.$RPWRAP_GENERATION" 2>/dev/null; then exec "$0" serve-demo -exit-at-start 1; fi; exec "$0" serve-demo`

// statusPoller asks `ctl status` every 10 ms until stopped, and checks
// what each answer says of the generations: at most one active, numbers
// rising (oldest first), a deadline exactly on the draining ones.
type statusPoller struct {
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	calls int
	errs  []string
}

func pollStatus(control string) *statusPoller {
	p := &statusPoller{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := supervisor.Call(ctx, control, supervisor.Request{Command: "status"})
			cancel()
			p.mu.Lock()
			p.calls++
			switch {
			case err != nil:
				p.errs = append(p.errs, err.Error())
			case !resp.OK || resp.Status == nil:
				p.errs = append(p.errs, fmt.Sprintf("status answered %+v", resp))
			default:
				if msg := checkStatus(*resp.Status); msg != "" {
					p.errs = append(p.errs, msg)
				}
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// checkStatus describes what is wrong with st, "" when nothing is.
func checkStatus(st supervisor.Status) string {
	active, prev := 0, 0
	for _, g := range st.Generations {
		if g.Generation <= prev {
			return fmt.Sprintf("generations out of order: %+v", st.Generations)
		}
		prev = g.Generation
		switch g.State {
		case supervisor.StateActive:
			active++
		case supervisor.StateStarting, supervisor.StateReady, supervisor.StateDraining:
		default:
			return fmt.Sprintf("generation %d listed in final state %s", g.Generation, g.State)
		}
		if (g.State == supervisor.StateDraining) != (g.Deadline != nil) {
			return fmt.Sprintf("generation %d is %s with deadline %v", g.Generation, g.State, g.Deadline)
		}
	}
	if active > 1 {
		return fmt.Sprintf("%d active generations: %+v", active, st.Generations)
	}
	return ""
}

// end stops the poller and returns how many answers it got and what was
// wrong with them.
func (p *statusPoller) end() (int, []string) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, p.errs
}

// fdKinds counts pid's descriptors by kind: "socket", "pipe",
// "anon_inode:[pidfd]", "anon_inode:bpf-map", a path, ...
func fdKinds(t *testing.T, pid int) map[string]int {
	t.Helper()
	dir := "/proc/" + itoa(pid) + "/fd/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, e := range ents {
		target, err := os.Readlink(dir + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if i := strings.IndexByte(target, ':'); i > 0 && (strings.HasPrefix(target, "socket:") || strings.HasPrefix(target, "pipe:")) {
			target = target[:i]
		}
		kinds[target]++
	}
	return kinds
}

// settledFDs is fdKinds once it has stayed the same for 100 ms: the
// control connection of the last `ctl status` may still be closing on
// rpwrap's side when the client has its answer.
func settledFDs(t *testing.T, pid int) map[string]int {
	t.Helper()
	kinds := fdKinds(t, pid)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		now := fdKinds(t, pid)
		if fmt.Sprint(now) == fmt.Sprint(kinds) {
			break
		}
		kinds = now
	}
	return kinds
}

func total(kinds map[string]int) (n int) {
	for _, k := range kinds {
		n += k
	}
	return n
}

// runtimeFiles lists the files in dir, each generation's notify socket
// (notify-<random>.sock) under one name.
func runtimeFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "notify-") && strings.HasSuffix(name, ".sock") {
			name = "notify-*.sock"
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Restarts, rollbacks (a successor that exits at start) and respawns after
// a crash (--restart-on-failure, the active server SIGKILLed) under load,
// with `ctl status` asked every 10 ms throughout. Run with -race (the CI
// race row), the rpwrap under test is built with the race detector: it
// must report no race. No request is lost, and at the end rpwrap holds the
// same descriptors and its runtime directory the same files as at the
// start.
func TestRestartUnderLoadRollbacksAndRespawnsRaceFree(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) { testRestartsRollbacksRespawns(t, sel) })
	}
}

func testRestartsRollbacksRespawns(t *testing.T, sel string) {
	failDir := shortTempDir(t)
	exe := testBinary(t)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--selector", sel, "--ready", "notify",
		"--restart-on-failure", "--drain-timeout", "20s", "--", "/bin/sh", "-c", failNextScript, exe, failDir})
	rpwrapPid := w.cmd.Process.Pid
	runDir := filepath.Dir(w.control)
	fdsBefore, filesBefore := settledFDs(t, rpwrapPid), runtimeFiles(t, runDir)

	poller := pollStatus(w.control)
	const rounds = 6
	var restarts, rollbacks, respawns int
	res := underLoad(t, w, 4, func(load *loadgen.Load) {
		for i := 0; i < rounds; i++ {
			// A restart that answers at the flip: the next step runs
			// while its predecessor drains.
			if resp, _ := w.restartNoWait(); resp.Restart.Generation == 0 {
				t.Fatalf("round %d: restart answered %+v", i+1, resp)
			}
			restarts++
			waitRequests(t, load, load.Progress().Sent+50)

			// A rollback: the successor exits at start.
			if err := os.WriteFile(filepath.Join(failDir, "fail"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			resp := w.call("restart")
			if resp.OK || !strings.Contains(resp.Error, "exited before it was ready") {
				t.Fatalf("round %d: restart of a successor that exits at start: ok=%v %q, want a rollback", i+1, resp.OK, resp.Error)
			}
			rollbacks++
			waitRequests(t, load, load.Progress().Sent+50)

			// A crash: the active server hangs (it answers what it has
			// accepted, new connections queue on its socket) and is
			// SIGKILLed; the respawned generation serves the queue.
			pid := w.activePid()
			hangServer(t, pid)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			respawns++
			waitUntil(t, "a generation respawned after the crash", func() bool {
				st := w.status()
				if st.Respawns != respawns {
					return false
				}
				for _, g := range st.Generations {
					if g.State == supervisor.StateActive && g.Pid != pid {
						return true
					}
				}
				return false
			})
			waitRequests(t, load, load.Progress().Sent+50)

			// A restart that waits for the drain.
			if r := w.restart(); !r.Drained {
				t.Fatalf("round %d: restart --wait answered before the drain: %+v", i+1, r)
			}
			restarts++
			waitRequests(t, load, load.Progress().Sent+50)
		}
	})
	calls, errs := poller.end()
	t.Logf("%d restarts, %d rolled back, %d respawns; ctl status answered %d times", restarts, rollbacks, respawns, calls)
	requireNoLoss(t, res, 1000)
	if len(errs) > 0 {
		t.Errorf("%d of %d status answers were wrong, the first: %s", len(errs), calls, errs[0])
	}
	if calls < 100 {
		t.Errorf("ctl status answered only %d times during the test", calls)
	}

	// Every drain ends (20 s at most); then rpwrap holds what it held.
	waitUntil(t, "every replaced generation to be retired", func() bool { return len(w.status().Generations) == 1 })
	if st := w.status(); st.Restarts != restarts || st.RolledBack != rollbacks || st.Respawns != respawns {
		t.Errorf("status counts %d restarts, %d rolled back, %d respawns; want %d, %d, %d",
			st.Restarts, st.RolledBack, st.Respawns, restarts, rollbacks, respawns)
	}
	var fdsAfter map[string]int
	var filesAfter []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		fdsAfter, filesAfter = fdKinds(t, rpwrapPid), runtimeFiles(t, runDir)
		same := fmt.Sprint(fdsAfter) == fmt.Sprint(fdsBefore) && fmt.Sprint(filesAfter) == fmt.Sprint(filesBefore)
		if same || time.Now().After(deadline) { // the last control client may still be closing
			break
		}
	}
	t.Logf("rpwrap's descriptors: %d before %v, %d after %v", total(fdsBefore), fdsBefore, total(fdsAfter), fdsAfter)
	t.Logf("runtime directory: before %v, after %v", filesBefore, filesAfter)
	if fmt.Sprint(fdsAfter) != fmt.Sprint(fdsBefore) {
		t.Errorf("rpwrap's descriptors changed: %v before, %v after", fdsBefore, fdsAfter)
	}
	if fmt.Sprint(filesAfter) != fmt.Sprint(filesBefore) {
		t.Errorf("rpwrap's runtime directory changed: %v before, %v after", filesBefore, filesAfter)
	}

	if code := w.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("rpwrap exited %d on SIGTERM, want the server's 0 (66 is the race detector's)", code)
	}
	if strings.Contains(w.out.String(), "WARNING: DATA RACE") {
		t.Errorf("the race detector found a data race in rpwrap")
	}
	if entries, _ := os.ReadDir(runDir); len(entries) != 1 || entries[0].Name() != "notify.sock" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("after rpwrap exited, its runtime directory holds %v, want only the test's notify.sock", names)
	}
}
