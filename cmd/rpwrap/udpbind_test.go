//go:build linux

package main

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// freeUDPPort is a UDP address on 127.0.0.1 that nothing was bound to a
// moment ago.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// A UDP server that binds its own port (no socket activation) runs with
// --pass bind and --ready none: rpwrap waits until it has bound the
// address, and restarts under datagram load lose nothing.
func TestUDPServerThatBindsItsOwnPortRestarts(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			addr := freeUDPPort(t)
			w := startWrapper(t, []string{"--listen", "udp://" + addr, "--pass", "bind", "--ready", "none", "--selector", sel},
				"-bind", "udp://"+addr, "-udp-read-delay", "1ms")
			l := startLoads(t, nil, []string{addr})
			restartsUnderLoads(t, w, l, 5)
			l.requireNoLoss(300)
			if st := w.status(); st.Restarts != 5 || st.RolledBack != 0 {
				t.Errorf("after 5 restarts: %d restarts, %d rolled back", st.Restarts, st.RolledBack)
			}
		})
	}
}

// --ready accept probes a TCP socket: with UDP addresses only, rpwrap
// refuses to start, and says which readiness checks fit.
func TestReadyAcceptWithUDPOnlyIsRefused(t *testing.T) {
	testutil.RequireRoot(t)
	dir := shortTempDir(t)
	cmd := exec.Command(testBinary(t), "--listen", "udp://127.0.0.1:0", "--ready", "accept", "--control", dir+"/ctl.sock",
		"--", testBinary(t), "serve-demo")
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
	case <-time.After(20 * time.Second):
		t.Fatalf("rpwrap --ready accept with a UDP address only still runs after 20s; output:\n%s", out.String())
	}
	code, msg := cmd.ProcessState.ExitCode(), out.String()
	t.Logf("rpwrap exited %d: %s", code, msg)
	if code != 1 && code != 2 {
		t.Errorf("exit %d, want 1 or 2; output:\n%s", code, msg)
	}
	for _, want := range []string{"--ready accept", "UDP", "notify", "none"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message does not say %q; output:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "started") {
		t.Errorf("the server was started; output:\n%s", msg)
	}
}
