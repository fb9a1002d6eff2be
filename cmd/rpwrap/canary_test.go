//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/supervisor"
)

// pidAnswer is one request of pidLoad: when it started, which server pid
// answered it (0: it failed) and why it failed.
type pidAnswer struct {
	at   time.Time
	took time.Duration
	pid  int
	err  error
}

// pidLoad sends GET / on a new connection per request (so every request
// comes from another source port) from clients goroutines, and records
// which pid answered each one.
type pidLoad struct {
	addr    string
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	answers []pidAnswer
}

var pidRe = regexp.MustCompile(`pid=(\d+)`)

func startPidLoad(addr string, clients int) *pidLoad {
	l := &pidLoad{addr: addr, stop: make(chan struct{})}
	for range clients {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				a := l.one()
				l.mu.Lock()
				l.answers = append(l.answers, a)
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *pidLoad) one() (a pidAnswer) {
	a.at = time.Now()
	defer func() { a.took = time.Since(a.at) }()
	c, err := net.DialTimeout("tcp", l.addr, 5*time.Second)
	if err != nil {
		a.err = err
		return a
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		a.err = err
		return a
	}
	b, err := io.ReadAll(c)
	m := pidRe.FindSubmatch(b)
	if err != nil || !strings.HasPrefix(string(b), "HTTP/1.0 200") || m == nil {
		a.err = fmt.Errorf("answer %q: %v", b, err)
		return a
	}
	a.pid, _ = strconv.Atoi(string(m[1]))
	return a
}

// finish stops the load and returns every pidAnswer.
func (l *pidLoad) finish() []pidAnswer {
	close(l.stop)
	l.wg.Wait()
	return l.answers
}

// count is how many answers started in [from, to) each pid gave; pid 0
// counts the failures.
func count(answers []pidAnswer, from, to time.Time) map[int]int {
	n := map[int]int{}
	for _, a := range answers {
		if !a.at.Before(from) && a.at.Before(to) {
			n[a.pid]++
		}
	}
	return n
}

func (l *pidLoad) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.answers)
}

// waitMore waits until n more requests have been answered.
func (l *pidLoad) waitMore(t *testing.T, n int) {
	t.Helper()
	want := l.len() + n
	waitUntil(t, fmt.Sprintf("%d answers", want), func() bool { return l.len() >= want })
}

// ctlRestart runs one restart with req's watch and canary, in the
// background; the result comes on the channel.
func (w *wrapper) ctlRestart(req supervisor.Request) <-chan supervisor.Response {
	out := make(chan supervisor.Response, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		req.Command = "restart"
		resp, err := supervisor.Call(ctx, w.control, req)
		if err != nil {
			resp.Error = "call: " + err.Error()
		}
		out <- resp
	}()
	return out
}

// waitRollout waits until status shows a rollout in phase, and returns it.
func (w *wrapper) waitRollout(phase string) supervisor.RolloutStatus {
	w.t.Helper()
	var r supervisor.RolloutStatus
	waitUntil(w.t, "rollout phase "+phase, func() bool {
		st := w.status()
		if st.Rollout != nil && st.Rollout.Phase == phase && (phase != "canary" || st.Rollout.Stage > 0) {
			r = *st.Rollout
			return true
		}
		return false
	})
	return r
}

// A 20% canary under load: new connections started during the stage
// reach the successor between 15% and 25% of the time, every one started
// after the flip reaches it, and no request fails. eBPF splits by flow
// hash and counts; cBPF splits by source port and counts nothing.
func TestCanaryShareUnderLoad(t *testing.T) {
	for _, tc := range []struct{ selector, canary string }{{"ebpf", "20%:6s"}, {"cbpf", "20%:3s"}} {
		t.Run(tc.selector, func(t *testing.T) {
			w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--selector", tc.selector, "--ready", "notify"})
			oldPid := w.activePid()
			load := startPidLoad(w.addr, 8)
			load.waitMore(t, 200)
			done := w.ctlRestart(supervisor.Request{Canary: tc.canary})
			w.waitRollout("canary")
			stageFrom := time.Now()
			resp := <-done
			if !resp.OK {
				t.Fatalf("restart with a canary: %s", resp.Error)
			}
			flipped := resp.Restart.At.Add(resp.Restart.ToFlip) // the flip itself, before the answer came
			newPid := resp.Restart.Pid
			load.waitMore(t, 1000)
			answers := load.finish()

			stage := count(answers, stageFrom, flipped.Add(-10*time.Millisecond))
			after := count(answers, flipped.Add(10*time.Millisecond), time.Now())
			total := stage[oldPid] + stage[newPid]
			t.Logf("canary stage: %d of %d new connections to the successor (%.1f%%); after the flip: %v; rpwrap counted %+v",
				stage[newPid], total, 100*float64(stage[newPid])/float64(total), after, resp.Restart.Rollout.Shares)
			if total < 2000 || stage[newPid]*100 < total*15 || stage[newPid]*100 > total*25 || len(stage) != 2 {
				t.Errorf("during the stage: %v (old pid %d, new %d), want thousands and 15-25%% to the new one", stage, oldPid, newPid)
			}
			if after[newPid] < 500 || len(after) != 1 {
				t.Errorf("after the flip: %v, want every connection on pid %d", after, newPid)
			}
			if f := count(answers, time.Time{}, time.Now())[0]; f != 0 {
				t.Errorf("%d requests failed, want 0", f)
			}
			sh := resp.Restart.Rollout.Shares
			switch {
			case len(sh) != 1:
				t.Errorf("rpwrap measured %+v, want one stage", sh)
			case tc.selector == "ebpf" && (sh[0].Measured < 15 || sh[0].Measured > 25):
				t.Errorf("rpwrap measured %+v, want 15-25%%", sh)
			case tc.selector == "cbpf" && !strings.Contains(sh[0].Note, "counts nothing"):
				t.Errorf("rpwrap measured %+v with cBPF, want a note that nothing was counted", sh)
			}
		})
	}
}

// A successor that fails is rolled back, under load: it crashes 1.5s into
// a 5s watch or into a canary stage, or fails its --watch-check. rpwrap
// flips back to the predecessor (the same pid, never signalled), which
// answers every later request; the restart fails with the reason; at most
// the requests in flight on a crashed successor fail, none when it only
// failed its check.
func TestFailingSuccessorIsRolledBack(t *testing.T) {
	const clients = 8
	for _, tc := range []struct {
		name      string
		flags     []string
		server    []string // generation 2's demo server flags
		trigger   func(w *wrapper, dir string)
		want      []string
		maxFailed int
	}{
		{name: "crash in the watch", flags: []string{"--watch", "5s"}, server: []string{"-crash-after-ready", "1500ms"},
			want: []string{"watch failed, flipped back to generation 1", "exited (exit status 3)"}, maxFailed: clients},
		{name: "crash in the canary", flags: []string{"--canary", "20%:5s"}, server: []string{"-crash-after-ready", "1500ms"},
			want: []string{"canary aborted, generation 1 serves every new connection again", "exited (exit status 3)"}, maxFailed: clients},
		{name: "watch check fails", flags: []string{"--watch", "30s", "--watch-check", "exec:test ! -e $RPWRAP_TEST_DIR/fail"},
			trigger: func(w *wrapper, dir string) {
				w.waitRollout("watch")
				time.Sleep(1500 * time.Millisecond) // a check or two pass first
				if err := os.WriteFile(filepath.Join(dir, "fail"), nil, 0o600); err != nil {
					w.t.Fatal(err)
				}
			},
			want: []string{"watch failed, flipped back to generation 1", "failed --watch-check exec:test ! -e"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("RPWRAP_TEST_DIR", dir)
			exe := testBinary(t)
			args := append(append([]string{"--listen", "127.0.0.1:0", "--selector", "ebpf", "--ready", "notify"}, tc.flags...),
				"--", "/bin/sh", "-c", onlyGeneration(2, tc.server...), exe)
			w := startWrapperCommand(t, args)
			oldPid := w.activePid()
			load := startPidLoad(w.addr, clients)
			load.waitMore(t, 200)
			start := time.Now()
			done := w.ctlRestart(supervisor.Request{})
			if tc.trigger != nil {
				tc.trigger(w, dir)
			}
			resp := <-done
			back := time.Now()
			for _, want := range tc.want {
				if resp.OK || !strings.Contains(resp.Error, want) {
					t.Fatalf("restart: ok=%v error %q, want it to fail with %q", resp.OK, resp.Error, want)
				}
			}
			load.waitMore(t, 1000)
			answers := load.finish()
			newPid := resp.Restart.Pid
			during, after := count(answers, start, back), count(answers, back, time.Now())
			r := resp.Restart.Rollout
			t.Logf("during the restart: %v (old pid %d, new %d); after: %v; back to the predecessor %s after rpwrap saw the failure; "+
				"clients: last answer from the successor to the first new connection answered by the predecessor %s",
				during, oldPid, newPid, after, r.FlipBack, servedGap(answers, oldPid, newPid))
			t.Logf("the longest request answered during the restart took %s", longest(answers, start, back))
			if during[newPid] == 0 || during[oldPid] == 0 {
				t.Errorf("during the restart: %v, want both generations to answer", during)
			}
			if len(after) != 1 || after[oldPid] < 1000 {
				t.Errorf("after the flip back: %v, want every request on the predecessor %d", after, oldPid)
			}
			if f := count(answers, time.Time{}, time.Now())[0]; f > tc.maxFailed {
				t.Errorf("%d requests failed, want at most %d (in flight on a crashed successor)", f, tc.maxFailed)
			} else {
				t.Logf("%d requests failed (at most %d)", f, tc.maxFailed)
			}
			waitUntil(t, "the successor retired", func() bool { return len(w.status().Generations) == 1 })
			if g := w.status().Generations[0]; g.Pid != oldPid || g.State != supervisor.StateActive {
				t.Errorf("status after the flip back: %+v, want pid %d active", g, oldPid)
			}
			if st := w.status(); st.Rollout == nil || st.Rollout.Phase != "rolled back" || st.Rollout.Aborted == "" {
				t.Errorf("status rollout %+v, want rolled back with the reason", st.Rollout)
			}
		})
	}
}

// longest is the longest time a request started in [from, to) that was
// answered took.
func longest(answers []pidAnswer, from, to time.Time) time.Duration {
	var m time.Duration
	for _, a := range answers {
		if a.pid != 0 && !a.at.Before(from) && a.at.Before(to) {
			m = max(m, a.took)
		}
	}
	return m.Round(time.Millisecond)
}

// servedGap is the time from the successor's last answer to the first
// request after it that the predecessor answered.
func servedGap(answers []pidAnswer, oldPid, newPid int) time.Duration {
	var lastNew, firstOld time.Time
	for _, a := range answers {
		if a.pid == newPid && a.at.After(lastNew) {
			lastNew = a.at
		}
	}
	for _, a := range answers {
		if a.pid == oldPid && a.at.After(lastNew) && (firstOld.IsZero() || a.at.Before(firstOld)) {
			firstOld = a.at
		}
	}
	return firstOld.Sub(lastNew).Round(time.Millisecond)
}

// The control: without --watch the same crash, after the predecessor was
// drained, leaves nobody to serve: rpwrap exits with the successor's
// status and the requests after the crash fail.
func TestWithoutWatchTheCrashTakesTheServiceDown(t *testing.T) {
	exe := testBinary(t)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--selector", "ebpf", "--ready", "notify",
		"--", "/bin/sh", "-c", onlyGeneration(2, "-crash-after-ready", "1500ms"), exe})
	load := startPidLoad(w.addr, 8)
	load.waitMore(t, 200)
	if resp := <-w.ctlRestart(supervisor.Request{}); !resp.OK {
		t.Fatalf("restart without a watch: %s", resp.Error)
	}
	if code := w.waitExit(time.Minute); code != 3 {
		t.Errorf("rpwrap exited %d, want the crashed successor's 3", code)
	}
	load.waitMore(t, 200)
	answers := load.finish()
	if f := count(answers, time.Time{}, time.Now())[0]; f < 200 {
		t.Errorf("%d requests failed after the crash, want every one (at least 200)", f)
	}
}

// ctl abort during a canary sends every new connection back to the
// predecessor and fails the restart; ctl promote ends a canary early with
// the flip. No request fails either way.
func TestCanaryAbortAndPromote(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--selector", "ebpf", "--ready", "notify"})
	oldPid := w.activePid()
	load := startPidLoad(w.addr, 8)
	load.waitMore(t, 200)

	done := w.ctlRestart(supervisor.Request{Canary: "50%:1m"})
	w.waitRollout("canary")
	load.waitMore(t, 500)
	if resp := w.call("abort"); !resp.OK {
		t.Fatalf("ctl abort: %s", resp.Error)
	}
	aborted := <-done
	abortedAt := time.Now()
	if aborted.OK || !strings.Contains(aborted.Error, "canary aborted") || !strings.Contains(aborted.Error, "aborted by rpwrap ctl abort") {
		t.Fatalf("restart after ctl abort: ok=%v %q, want it to fail with the reason", aborted.OK, aborted.Error)
	}
	load.waitMore(t, 1000)
	promoteFrom := time.Now()
	done = w.ctlRestart(supervisor.Request{Canary: "50%:1m"})
	w.waitRollout("canary")
	load.waitMore(t, 500)
	if resp := w.call("promote"); !resp.OK {
		t.Fatalf("ctl promote: %s", resp.Error)
	}
	promoted := <-done
	promotedAt := time.Now()
	if !promoted.OK {
		t.Fatalf("restart after ctl promote: %s", promoted.Error)
	}
	load.waitMore(t, 1000)
	answers := load.finish()

	afterAbort := count(answers, abortedAt, promoteFrom)
	afterPromote := count(answers, promotedAt, time.Now())
	t.Logf("after abort: %v; after promote: %v; shares measured: abort %+v, promote %+v",
		afterAbort, afterPromote, aborted.Restart.Rollout.Shares, promoted.Restart.Rollout.Shares)
	if len(afterAbort) != 1 || afterAbort[oldPid] < 1000 {
		t.Errorf("after ctl abort: %v, want every request on the predecessor %d", afterAbort, oldPid)
	}
	if len(afterPromote) != 1 || afterPromote[promoted.Restart.Pid] < 1000 {
		t.Errorf("after ctl promote: %v, want every request on the successor %d", afterPromote, promoted.Restart.Pid)
	}
	if f := count(answers, time.Time{}, time.Now())[0]; f != 0 {
		t.Errorf("%d requests failed, want 0", f)
	}
	if resp := w.call("promote"); resp.OK || !strings.Contains(resp.Error, "no canary or watch is running") {
		t.Errorf("ctl promote with nothing running: %+v", resp)
	}
}
