//go:build linux

package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/loadtest"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// underLoad runs bounded load against w while fn runs, and returns the
// load's result once fn has returned and the load has stopped.
func underLoad(t *testing.T, w *wrapper, clients int, fn func(load *loadgen.Load)) loadgen.Result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load, err := loadgen.Start(ctx, loadgen.Config{
		Target: w.addr, Path: "/", Clients: clients,
		Duration: 5 * time.Minute, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitRequests(t, load, 200)
	fn(load)
	waitRequests(t, load, load.Progress().Sent+200) // load after the last restart, too
	load.Stop()
	return load.Wait()
}

// restartsUnderLoad restarts w n times under 4 clients, with some load on
// every generation, and requires that no request is lost.
func restartsUnderLoad(t *testing.T, w *wrapper, n int, atLeast int64) {
	t.Helper()
	res := underLoad(t, w, 4, func(load *loadgen.Load) {
		for i := 0; i < n; i++ {
			w.restart()
			waitRequests(t, load, load.Progress().Sent+50)
		}
	})
	requireNoLoss(t, res, atLeast)
}

// waitRequests waits until the load has sent n requests.
func waitRequests(t *testing.T, load *loadgen.Load, n int64) {
	t.Helper()
	loadtest.WaitSent(t, load, n, time.Minute)
}

// requireNoLoss asserts that every request sent got a complete 200.
func requireNoLoss(t *testing.T, res loadgen.Result, atLeast int64) {
	t.Helper()
	loadtest.RequireNoLoss(t, res, atLeast)
}

func TestRestartUnderLoadLosesNoConnection(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--selector", sel, "--ready", "notify"})
			const restarts = 20
			res := underLoad(t, w, 4, func(load *loadgen.Load) {
				for i := 0; i < restarts; i++ {
					r := w.restart()
					if r.Generation != i+2 {
						t.Fatalf("restart %d made generation %d", i+1, r.Generation)
					}
					waitRequests(t, load, load.Progress().Sent+50) // some load on every generation
				}
			})
			requireNoLoss(t, res, 2000)
			if st := w.status(); st.Restarts != restarts || len(st.Generations) != 1 {
				t.Errorf("after %d restarts: status %+v", restarts, st)
			}
		})
	}
}

// A predecessor that hangs with connections in its accept queue costs
// nothing: with eBPF the kernel migrates the queue to the successor; with
// cBPF, which cannot migrate, rpwrap relays the queued connections. The server
// hangs on SIGUSR2: it stops accepting, answers what it had accepted, and
// stops itself with SIGSTOP.
func TestHungPredecessorLosesNoConnection(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--selector", sel, "--ready", "notify",
				"--drain-timeout", "1s", "--drain-stall", "200ms"})
			fds := openSockets(t, w.cmd.Process.Pid)
			const restarts = 5
			res := underLoad(t, w, 4, func(load *loadgen.Load) {
				for i := 0; i < restarts; i++ {
					pid := w.activePid()
					hangServer(t, pid)
					waitUntil(t, "connections queued on the hung server", func() bool { return w.status().Generations[0].Queued[0] > 0 })
					r := w.restart()
					if !r.Migrated {
						t.Errorf("restart %d: the hung predecessor's queue was not handed over", i+1)
					}
					if !processGone(pid) {
						t.Errorf("restart %d: hung predecessor %d still exists", i+1, pid)
					}
					waitRequests(t, load, load.Progress().Sent+50)
				}
			})
			requireNoLoss(t, res, 500)
			// Relayed connections (cBPF) end with their clients: rpwrap's
			// sockets come back to what they were. (Its pipe count may grow:
			// the Go runtime caches the pipes that splice(2) used to relay.)
			var now int
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if now = openSockets(t, w.cmd.Process.Pid); now <= fds {
					break
				}
			}
			if now > fds {
				t.Errorf("rpwrap holds %d sockets after the load, %d before it", now, fds)
			}
		})
	}
}

// openSockets counts the sockets pid holds.
func openSockets(t *testing.T, pid int) int {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, _ := os.Readlink(dir + e.Name()); strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// hangServer makes the demo server pid hang (SIGUSR2) and waits until it
// has stopped itself.
func hangServer(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the server to stop itself", func() bool { return processState(pid) == "T" })
}

// processState is the state letter of pid in /proc/PID/stat.
func processState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return f[0]
}

func TestRollbackKeepsPredecessorServing(t *testing.T) {
	cases := []struct {
		name   string
		flags  []string
		server []string
		want   string
	}{
		{"successor exits at start", []string{"--ready", "notify"}, []string{"-exit-at-start", "1"}, "exited before it was ready"},
		{"successor never ready", []string{"--ready", "notify", "--ready-timeout", "1s"}, []string{"-never-ready"}, "not ready within 1s"},
		// The readiness check passes exactly when the ready server has died:
		// the worst moment, between ready and flip.
		{"successor crashes after ready, before the flip", []string{"--ready", `exec:[ $RPWRAP_GENERATION = 1 ] || while [ -d /proc/$RPWRAP_PID ] && ! grep -q '^State:.*Z' /proc/$RPWRAP_PID/status; do sleep 0.02; done`},
			[]string{"-crash-after-ready", "100ms"}, "exited"}, // "before it was ready" or "after it was ready, before the flip": rpwrap may see the exit first
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Generation 1 is healthy; later ones misbehave. The shell execs,
			// so the server keeps the pid that LISTEN_PID names.
			exe := testBinary(t)
			script := `if [ "$RPWRAP_GENERATION" -ge 2 ]; then exec "$0" serve-demo ` + strings.Join(c.server, " ") +
				`; else exec "$0" serve-demo; fi`
			args := append([]string{"--listen", "127.0.0.1:0", "--selector", "ebpf"}, c.flags...)
			w := startWrapperCommand(t, append(args, "--", "/bin/sh", "-c", script, exe))
			pid := w.activePid()
			var resp supervisor.Response
			res := underLoad(t, w, 4, func(*loadgen.Load) { resp = w.call("restart") })
			requireNoLoss(t, res, 400)
			if resp.OK || !strings.Contains(resp.Error, c.want) {
				t.Errorf("restart: ok=%v error %q, want a rollback saying %q", resp.OK, resp.Error, c.want)
			}
			st := w.status()
			if len(st.Generations) != 1 || st.Generations[0].Pid != pid || st.RolledBack != 1 {
				t.Errorf("after rollback: %+v, want only the predecessor %d", st, pid)
			}
			// The successor's group was SIGKILLed; its last members may still
			// be dying (re-parented to rpwrap, then reaped): allow them that.
			var kids []int
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if kids = testutil.Children(w.cmd.Process.Pid); len(kids) == 1 && kids[0] == pid {
					break
				}
			}
			if len(kids) != 1 || kids[0] != pid {
				t.Errorf("children of rpwrap after the rollback: %v, want only the predecessor %d", kids, pid)
			}
		})
	}
}
