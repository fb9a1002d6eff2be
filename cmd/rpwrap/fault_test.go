//go:build linux

package main

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// A successor that crashes right after the flip, without
// --restart-on-failure: rpwrap exits with the server's status, as a
// wrapper under systemd must, and leaves no process and no socket behind.
func TestServingGenerationCrashMakesRpwrapExitWithItsStatus(t *testing.T) {
	exe := testBinary(t)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", "ebpf",
		"--", "/bin/sh", "-c", onlyGeneration(2, "-crash-after-ready", "300ms"), exe})
	if res := bounded(t, w.addr, 400); res.OK != 400 {
		t.Fatalf("before the restart: %d of 400 ok", res.OK)
	}
	r := w.restart() // the flip happens; 300ms later generation 2 exits 3
	if code := w.waitExit(30 * time.Second); code != 3 {
		t.Errorf("rpwrap exited %d, want the crashed server's 3; output:\n%s", code, w.out.String())
	}
	requireAllGone(t, r.Pid)
	if got := listeningOn(t, w.addr); len(got) != 0 {
		t.Errorf("sockets %v still listen on %s after rpwrap exited", got, w.addr)
	}
}

// With --restart-on-failure the serving generation's death costs nothing
// but time: rpwrap keeps the listening sockets, the kernel queues new
// connections in their backlog, and a fresh generation started on the same
// sockets (after a backoff) answers them. The server dies without a request
// in flight (it hangs first: SIGUSR2 stops it accepting and answers what it
// had accepted), so every request must succeed.
func TestServingGenerationCrashIsRespawnedWithoutLoss(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", sel,
				"--restart-on-failure"})
			var dead []int
			res := underLoad(t, w, 4, func(load *loadgen.Load) {
				w.restart() // the crash comes right after a flip
				for i := 0; i < 2; i++ {
					pid := w.activePid()
					hangServer(t, pid)
					waitUntil(t, "connections queued on the hung server", func() bool { return w.status().Generations[0].Queued[0] > 0 })
					syscall.Kill(pid, syscall.SIGKILL) // the crash
					dead = append(dead, pid)
					waitUntil(t, "a respawned generation", func() bool {
						st := w.status()
						return st.Respawns == i+1 && len(st.Generations) == 1 && st.Generations[0].State == supervisor.StateActive
					})
					waitRequests(t, load, load.Progress().Sent+100)
				}
			})
			requireNoLoss(t, res, 600)
			st := w.status()
			if st.Respawns != 2 || st.Restarts != 1 || st.Generations[0].Generation != 4 {
				t.Errorf("after a restart and two crashes: %+v, want generation 4 active, 1 restart, 2 respawns", st)
			}
			requireAllGone(t, dead...)
			if !strings.Contains(w.out.String(), "backoff=100ms") {
				t.Errorf("no respawn after the first backoff of 100ms; output:\n%s", w.out.String())
			}
		})
	}
}

// A server that really crashes (exit 3 with requests in flight) loses
// those in flight, no more: nothing is refused, nothing times out, and the
// connections that arrive while no server runs are answered by the next.
// Generations 2 to 4 crash at start: the waits double (100, 200, 400ms).
func TestCrashLoopBacksOffAndServesWhatQueued(t *testing.T) {
	exe := testBinary(t)
	script := `case "$RPWRAP_GENERATION" in
2) exec "$0" serve-demo -crash-after-ready 200ms;;
3|4|5) exec "$0" serve-demo -exit-at-start 1;;
*) exec "$0" serve-demo;;
esac`
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", "ebpf",
		"--restart-on-failure", "--", "/bin/sh", "-c", script, exe})
	const clients = 4
	res := underLoad(t, w, clients, func(load *loadgen.Load) {
		w.restart()
		waitUntil(t, "generation 6 serving", func() bool {
			st := w.status()
			return len(st.Generations) == 1 && st.Generations[0].Generation == 6 && st.Generations[0].State == supervisor.StateActive
		})
	})
	t.Logf("requests: sent %d, ok %d, refused %d, reset %d, timeout %d, short read %d, other %d",
		res.Sent, res.OK, res.Refused, res.Reset, res.Timeout, res.ShortRead, res.Other)
	if res.Refused != 0 || res.Timeout != 0 || res.Failed() > clients || res.Sent < 400 {
		t.Errorf("a crash with at most %d requests in flight: %d failed (%d refused, %d timed out) of %d", clients, res.Failed(), res.Refused, res.Timeout, res.Sent)
	}
	for _, b := range []string{"backoff=100ms", "backoff=200ms", "backoff=400ms", "backoff=800ms"} {
		if !strings.Contains(w.out.String(), b) {
			t.Errorf("no respawn after %s; output:\n%s", b, w.out.String())
		}
	}
	if st := w.status(); st.Respawns != 1 {
		t.Errorf("respawns %d, want 1 (three attempts failed)", st.Respawns)
	}
}

// SIGTERM while rpwrap waits out a respawn backoff stops it at once; the
// exit status is that of the server that died (here: killed by SIGKILL).
func TestSIGTERMDuringRespawnBackoffStops(t *testing.T) {
	exe := testBinary(t)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", "ebpf",
		"--restart-on-failure", "--", "/bin/sh", "-c", fromGeneration(2, "-exit-at-start", "1"), exe})
	pid := w.activePid()
	syscall.Kill(pid, syscall.SIGKILL)
	w.waitOutput("backoff=400ms") // two respawns have failed
	w.cmd.Process.Signal(syscall.SIGTERM)
	if code := w.waitExit(10 * time.Second); code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit status %d, want %d (the dead server's); output:\n%s", code, 128+int(syscall.SIGKILL), w.out.String())
	}
	if kids := testutil.Children(w.cmd.Process.Pid); len(kids) != 0 {
		t.Errorf("processes %v left", kids)
	}
}

// SIGTERM before the flip: the successor, which never served, is killed
// first, then the predecessor gets the stop signal, and rpwrap exits with
// the predecessor's status (0: the demo server stops gracefully). The
// restart waiting for the successor is answered with an error.
func TestSIGTERMBeforeTheFlipStopsSuccessorThenPredecessor(t *testing.T) {
	exe := testBinary(t)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", "ebpf",
		"--", "/bin/sh", "-c", onlyGeneration(2, "-ready-delay", "30s"), exe})
	pred := w.activePid()
	resp := make(chan supervisor.Response, 1)
	go func() {
		r, _ := supervisor.Call(context.Background(), w.control, supervisor.Request{Command: "restart"})
		resp <- r
	}()
	var succ int
	waitUntil(t, "the successor to start", func() bool {
		st := w.status()
		if len(st.Generations) == 2 {
			succ = st.Generations[1].Pid
		}
		return succ != 0
	})
	if res := bounded(t, w.addr, 300); res.OK != 300 {
		t.Errorf("while the successor starts: %d of 300 ok", res.OK)
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	if code := w.waitExit(30 * time.Second); code != 0 {
		t.Errorf("exit status %d, want the predecessor's 0", code)
	}
	if r := <-resp; r.OK || !strings.Contains(r.Error, "rpwrap is stopping") {
		t.Errorf("the restart was answered %+v, want an error saying rpwrap is stopping", r)
	}
	w.requireOrder([]string{"rolled back", "generation=2"}, []string{"msg=stopping", "generation=1"})
	requireAllGone(t, pred, succ)
}

// SIGTERM after the flip, while the predecessor drains: both are stopped
// at once, each with its own stop signal and deadline (the predecessor
// ignores SIGTERM, so its --drain-timeout kills it), and rpwrap exits with
// the successor's status (0), not the predecessor's (137).
func TestSIGTERMDuringTheDrainStopsBothGenerations(t *testing.T) {
	exe := testBinary(t)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", "ebpf",
		"--drain-timeout", "1500ms", "--", "/bin/sh", "-c", onlyGeneration(1, "-ignore-term"), exe})
	pred := w.activePid()
	resp := make(chan supervisor.Response, 1)
	go func() {
		r, _ := supervisor.Call(context.Background(), w.control, supervisor.Request{Command: "restart"})
		resp <- r
	}()
	waitUntil(t, "the predecessor draining", func() bool {
		st := w.status()
		return len(st.Generations) == 2 && st.Generations[0].State == supervisor.StateDraining
	})
	if res := bounded(t, w.addr, 300); res.OK != 300 {
		t.Errorf("while the predecessor drains: %d of 300 ok", res.OK)
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	if code := w.waitExit(30 * time.Second); code != 0 {
		t.Errorf("exit status %d, want the successor's 0", code)
	}
	if r := <-resp; !r.OK {
		t.Errorf("the restart that had flipped was answered %+v, want ok", r)
	}
	w.requireOrder([]string{"msg=stopping", "generation=2"}, []string{"msg=stopped", "generation=1"})
	requireAllGone(t, pred)
}

// 100 restart triggers within one second, SIGHUP and `ctl restart` mixed:
// they are coalesced (a trigger that arrives during a restart is served by
// the next one), every ctl request is answered with success, no request
// of the load fails, and rpwrap ends with one generation, consistent
// counters, and no process or descriptor more than it started with.
func TestHundredRestartTriggersInOneSecondCoalesce(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", "ebpf"})
	fdsBefore := countFDs(t, w.cmd.Process.Pid)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		replies []supervisor.Response
	)
	res := underLoad(t, w, 4, func(load *loadgen.Load) {
		tick := time.NewTicker(10 * time.Millisecond) // pacing, not synchronisation
		defer tick.Stop()
		for i := 0; i < 100; i++ {
			<-tick.C
			if i%2 == 0 {
				w.cmd.Process.Signal(syscall.SIGHUP)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := supervisor.Call(context.Background(), w.control, supervisor.Request{Command: "restart"})
				if err != nil {
					t.Errorf("ctl restart: %v", err)
				}
				mu.Lock()
				replies = append(replies, r)
				mu.Unlock()
			}()
		}
		wg.Wait()
		w.restart() // queued behind every trigger already delivered
	})
	requireNoLoss(t, res, 1000)
	st := w.status()
	t.Logf("100 triggers: %d restarts, %d rolled back", st.Restarts, st.RolledBack)
	if len(replies) != 50 {
		t.Fatalf("%d ctl replies, want 50", len(replies))
	}
	for _, r := range replies {
		if !r.OK || r.Restart == nil || r.Restart.Generation < 2 || r.Restart.Generation > st.Restarts+1 {
			t.Errorf("ctl restart answered %+v", r)
		}
	}
	if st.RolledBack != 0 || st.Restarts >= 100 || st.Restarts < 2 {
		t.Errorf("%d restarts, %d rolled back; want between 2 and 99 restarts (coalesced), none rolled back", st.Restarts, st.RolledBack)
	}
	if len(st.Generations) != 1 || st.Generations[0].Generation != st.Restarts+1 || st.Generations[0].State != supervisor.StateActive {
		t.Errorf("end state %+v, want generation %d alone and active", st.Generations, st.Restarts+1)
	}
	if kids := testutil.Children(w.cmd.Process.Pid); len(kids) != 1 || kids[0] != st.Generations[0].Pid {
		t.Errorf("rpwrap's children %v, want only %d", kids, st.Generations[0].Pid)
	}
	// The last control clients' connections and the last retired
	// generation's descriptors are closed as their goroutines end, just
	// after the answers: wait for that (bounded), then compare.
	fds := countFDs(t, w.cmd.Process.Pid)
	for end := time.Now().Add(5 * time.Second); fds > fdsBefore && time.Now().Before(end); fds = countFDs(t, w.cmd.Process.Pid) {
		time.Sleep(20 * time.Millisecond) // polling: /proc gives no event for a closed descriptor
	}
	if fds > fdsBefore {
		t.Errorf("rpwrap holds %d descriptors after the restarts, %d before", fds, fdsBefore)
	}
}

// A predecessor that closes its listener early (before it is told to
// stop) leaves connections in the queue of the socket rpwrap still holds;
// the drain sees the queue stall and the eBPF selector hands it to the
// successor: nothing is lost.
func TestPredecessorClosingItsListenerEarlyLosesNothing(t *testing.T) {
	exe := testBinary(t)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--ready", "accept", "--selector", "ebpf",
		"--drain-stall", "200ms", "--", exe, faultServerArg, "close-listener-on-usr1"})
	const restarts = 3
	res := underLoad(t, w, 4, func(load *loadgen.Load) {
		for i := 0; i < restarts; i++ {
			pid := w.activePid()
			syscall.Kill(pid, syscall.SIGUSR1)
			waitUntil(t, "connections queued on the closed listener", func() bool { return w.status().Generations[0].Queued[0] > 0 })
			if r := w.restart(); !r.Migrated {
				t.Errorf("restart %d: the queue of the early-closed listener was not handed over", i+1)
			}
			requireAllGone(t, pid)
			waitRequests(t, load, load.Progress().Sent+50)
		}
	})
	requireNoLoss(t, res, 500)
}

// A predecessor with workers that keep the listening socket (a background
// process started by the server's shell, holding fd 3, in its process
// group): stopping it kills the whole group, so no orphan keeps the port,
// and only the successor's socket listens after each restart.
//
// With cBPF this is also the case where a killed worker may still hold the
// old socket when rpwrap takes it out of its group (shutdown(2), which does
// not wait for the worker).
func TestPredecessorWorkerTreeLeavesNoOrphan(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) { testWorkerTree(t, sel) })
	}
}

func testWorkerTree(t *testing.T, sel string) {
	exe := testBinary(t)
	dir := shortTempDir(t)
	script := `sleep 600 </dev/null >/dev/null 2>&1 & echo $! >` + dir + `/worker.$RPWRAP_GENERATION; exec "$0" serve-demo`
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", sel,
		"--", "/bin/sh", "-c", script, exe})
	const restarts = 3
	res := underLoad(t, w, 4, func(load *loadgen.Load) {
		for i := 1; i <= restarts; i++ {
			worker := readPid(t, dir+"/worker."+itoa(i))
			if processGone(worker) {
				t.Fatalf("worker %d of generation %d is not running", worker, i)
			}
			w.restart()
			requireAllGone(t, worker)
			if got := listeningOn(t, w.addr); len(got) != 1 {
				t.Errorf("restart %d: %d sockets listen on %s, want the successor's only", i, len(got), w.addr)
			}
			waitRequests(t, load, load.Progress().Sent+50)
		}
	})
	requireNoLoss(t, res, 500)
	last := readPid(t, dir+"/worker."+itoa(restarts+1))
	if code := w.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	requireAllGone(t, last)
	if got := listeningOn(t, w.addr); len(got) != 0 {
		t.Errorf("sockets %v still listen on %s after rpwrap exited", got, w.addr)
	}
}
