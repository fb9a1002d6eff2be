//go:build linux

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// Every readiness check holds the flip until the successor serves: the
// successor starts slowly (-ready-delay), and no request is lost.
func TestEveryReadinessCheckWaitsForTheSuccessor(t *testing.T) {
	for _, ready := range []string{"notify", "accept", "http:/", "delay:400ms"} {
		t.Run(ready, func(t *testing.T) {
			w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", ready, "--selector", "ebpf"}, "-ready-delay", "300ms")
			res := underLoad(t, w, 4, func(load *loadgen.Load) {
				for i := 0; i < 3; i++ {
					r := w.restart()
					if r.Ready < 300*time.Millisecond {
						t.Errorf("restart %d: ready after %s, before the server's own 300ms delay", i+1, r.Ready)
					}
					waitRequests(t, load, load.Progress().Sent+50)
				}
			})
			requireNoLoss(t, res, 500)
		})
	}
}

// SIGHUP to rpwrap restarts the server, as `rpwrap ctl restart` does.
func TestSIGHUPRestarts(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify"})
	old := w.activePid()
	if err := w.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// READY=1 to systemd marks the end of the restart (after RELOADING=1).
	if !w.notify.waitFor(t, "RELOADING=1", w.done, 30*time.Second) || !w.notify.waitFor(t, "READY=1", w.done, 30*time.Second) {
		t.Fatalf("no RELOADING=1 then READY=1 after SIGHUP; output:\n%s", w.out.String())
	}
	st := w.status() // at READY=1 the flip is done; the predecessor drains in the background
	if st.Restarts != 1 || st.Generations[len(st.Generations)-1].Pid == old || st.Generations[len(st.Generations)-1].Generation != 2 {
		t.Errorf("after SIGHUP: %+v, want generation 2 active and 1 restart", st)
	}
	waitUntil(t, "generation 1 drained", func() bool { return len(w.status().Generations) == 1 })
}

// --ready exec:CMD runs CMD (with $RPWRAP_GENERATION and $RPWRAP_PID) until
// it exits 0; the flip waits for it.
func TestExecReadinessRetriesUntilTheCommandSucceeds(t *testing.T) {
	dir := shortTempDir(t)
	os.WriteFile(filepath.Join(dir, "ready-1"), nil, 0o644)
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready",
		"exec:test -e " + dir + "/ready-$RPWRAP_GENERATION -a -d /proc/$RPWRAP_PID"})
	done := make(chan supervisor.RestartResult, 1)
	go func() { done <- w.restart() }() // gen 2 cannot be ready until its file exists
	waitUntil(t, "generation 2 to start", func() bool { return len(w.status().Generations) == 2 })
	select {
	case r := <-done:
		t.Fatalf("restart finished before the readiness command could succeed: %+v", r)
	default:
	}
	if err := os.WriteFile(filepath.Join(dir, "ready-2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.Generation != 2 {
		t.Errorf("restart: %+v", r)
	}
}

// A restart asked for while the first generation is still starting is
// queued, not refused: it runs once the first generation serves.
func TestRestartBeforeTheFirstGenerationIsReadyIsQueued(t *testing.T) {
	dir := shortTempDir(t)
	ctl := filepath.Join(dir, "ctl.sock")
	cmd := exec.Command(testBinary(t), "--listen", "127.0.0.1:0", "--control", ctl,
		"--ready", "exec:test -e "+dir+"/go", "--", testBinary(t), "serve-demo")
	cmd.Env = append(os.Environ(), asRpwrap+"=1", "RUNTIME_DIRECTORY="+dir)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitUntil(t, "the control socket", func() bool { _, err := os.Stat(ctl); return err == nil })
	done := make(chan supervisor.Response, 1)
	go func() {
		resp, err := supervisor.Call(context.Background(), ctl, supervisor.Request{Command: "restart"})
		if err != nil {
			resp.Error = err.Error()
		}
		done <- resp
	}()
	waitUntil(t, "generation 1 to start", func() bool { return strings.Contains(out.String(), "started") })
	select {
	case r := <-done:
		t.Fatalf("restart answered before the first generation was ready: %+v", r)
	case <-time.After(200 * time.Millisecond): // it must still be waiting; no event says "queued"
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if !r.OK || r.Restart == nil || r.Restart.Generation != 2 {
			t.Errorf("queued restart: %+v; output:\n%s", r, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("queued restart never ran; output:\n%s", out.String())
	}
}
