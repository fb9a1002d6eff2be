//go:build linux

package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// startForeignListener runs another program (the test binary as a fault
// server) that listens on addr with SO_REUSEPORT, and returns once it
// listens. It is killed when the test ends.
func startForeignListener(t *testing.T, addr string) {
	t.Helper()
	cmd := exec.Command(testBinary(t), faultServerArg, "foreign-listener", addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "listening\n" {
		t.Fatalf("foreign listener on %s: %q, %v", addr, line, err)
	}
}

// portOf is the port of addr (host:port).
func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// ctlRestart runs `rpwrap ctl restart` against w and returns its exit
// status and output.
func ctlRestart(t *testing.T, w *wrapper) (int, string) {
	t.Helper()
	cmd := exec.Command(testBinary(t), "ctl", "--control", w.control, "restart")
	cmd.Env = append(os.Environ(), asRpwrap+"=1")
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(out)
}

// A server that never listens is not ready just because another program's
// socket, on a more specific address of the port (127.0.0.1:P while rpwrap
// serves 0.0.0.0:P), accepts the probe: at the first start rpwrap gives up
// after --ready-timeout without ever saying ready.
func TestProbeAnsweredByAForeignSocketIsNotReady(t *testing.T) {
	testutil.RequireRoot(t)
	port := portOf(t, freePort(t))
	startForeignListener(t, "127.0.0.1:"+port)
	dir := shortTempDir(t)
	cmd := exec.Command(testBinary(t), "--listen", "0.0.0.0:"+port, "--control", dir+"/ctl.sock", "--ready-timeout", "2s", "--", "sleep", "1000")
	cmd.Env = append(os.Environ(), asRpwrap+"=1", "RUNTIME_DIRECTORY="+dir)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() { cmd.Process.Kill(); <-done }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("rpwrap still runs 30s after its --ready-timeout 2s: it took the foreign socket's answer for the server's; output:\n%s", out.String())
	}
	if code := cmd.ProcessState.ExitCode(); code == 0 || strings.Contains(out.String(), "msg=ready") || !strings.Contains(out.String(), "not ready within 2s") {
		t.Errorf("exit %d, want non-zero, no ready line, and \"not ready within 2s\"; output:\n%s", code, out.String())
	}
}

// On a restart, the same: a successor that never listens is rolled back
// (ctl restart exits non-zero) and the generation that works keeps serving
// the clients of 127.0.0.3, which reach rpwrap's socket.
func TestRestartToAServerThatNeverListensIsRolledBackDespiteAForeignSocket(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			port := portOf(t, freePort(t))
			startForeignListener(t, "127.0.0.1:"+port)
			script := `if [ "$RPWRAP_GENERATION" -ge 2 ]; then exec sleep 1000; else exec "$0" serve-demo; fi`
			w := startWrapperCommand(t, []string{"--listen", "0.0.0.0:" + port, "--selector", sel, "--ready-timeout", "2s",
				"--", "/bin/sh", "-c", script, testBinary(t)})
			pid := w.activePid()
			l := startLoads(t, []string{"127.0.0.3:" + port}, nil)
			l.more(200)
			code, out := ctlRestart(t, w)
			l.more(200)
			l.requireNoLoss(400)
			if code == 0 || !strings.Contains(out, "not ready within 2s") {
				t.Errorf("ctl restart: exit %d, %q; want non-zero and \"not ready within 2s\"", code, out)
			}
			if st := w.status(); len(st.Generations) != 1 || st.Generations[0].Pid != pid || st.RolledBack != 1 || st.Restarts != 0 {
				t.Errorf("after the rollback: %+v, want only generation 1 (pid %d)", st, pid)
			}
		})
	}
}

// A server that does listen is ready although the foreign socket answers
// 127.0.0.1 (rpwrap probes 127.0.0.2 and up), and only once it accepts
// (after its own 300ms delay), restarts under load lose nothing, and
// rpwrap warns at start about the foreign socket.
func TestForeignSocketOnAMoreSpecificAddressIsAvoidedAndWarnedAbout(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			port := portOf(t, freePort(t))
			startForeignListener(t, "127.0.0.1:"+port)
			w := startWrapper(t, []string{"--listen", "0.0.0.0:" + port, "--selector", sel, "--ready-timeout", "10s"}, "-ready-delay", "300ms")
			warn := w.logIndex("level=WARN", "more specific address", "127.0.0.1:"+port)
			if warn < 0 || warn > w.logIndex("msg=ready", "generation=1") {
				t.Errorf("no warning at start about the foreign socket on 127.0.0.1:%s; output:\n%s", port, w.out.String())
			}
			l := startLoads(t, []string{"127.0.0.2:" + port, "127.0.0.9:" + port}, nil)
			l.more(100)
			for i := 0; i < 5; i++ {
				r := w.restart()
				t.Logf("restart %d: generation %d ready after %v", i+1, r.Generation, r.Ready)
				if r.Ready < 300*time.Millisecond {
					t.Errorf("restart %d: ready after %v, before the server's own 300ms delay: the probe was answered by someone else", i+1, r.Ready)
				}
				l.more(50)
			}
			l.requireNoLoss(300)
			if st := w.status(); st.Restarts != 5 || st.RolledBack != 0 {
				t.Errorf("after 5 restarts: %d restarts, %d rolled back", st.Restarts, st.RolledBack)
			}
		})
	}
}
