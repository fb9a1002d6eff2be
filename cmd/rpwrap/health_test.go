//go:build linux

package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// probe GETs path on the health server at addr and returns the status
// code and body; 0 when nothing answered.
func probe(addr, path string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitProbe polls path until it answers code, and returns the body and
// how many polls it took.
func waitProbe(t *testing.T, addr, path string, code int) (string, int) {
	t.Helper()
	var body string
	polls := 0
	waitUntil(t, path+" answering "+itoa(code), func() bool {
		var got int
		got, body = probe(addr, path)
		polls++
		return got == code
	})
	return body, polls
}

// On SIGTERM with --stop-delay, /readyz turns 503 at once while rpwrap
// serves on: every request of a load sent during the delay gets its 200,
// a restart asked meanwhile is refused, and once the delay is over rpwrap
// stops the server and exits with its status.
func TestStopDelayServesOnWhileReadyzReportsNotReady(t *testing.T) {
	const delay = 8 * time.Second
	health := freePort(t)
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--stop-delay", delay.String(), "--health", health})
	if code, body := probe(health, "/readyz"); code != 200 || !strings.HasPrefix(body, "ready: generation 1 ") {
		t.Fatalf("/readyz before SIGTERM: %d %q, want 200 ready", code, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load, err := loadgen.Start(ctx, loadgen.Config{Target: w.addr, Clients: 4, Duration: 5 * time.Minute, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitRequests(t, load, 200)
	sigAt := time.Now()
	w.cmd.Process.Signal(syscall.SIGTERM)
	body, polls := waitProbe(t, health, "/readyz", 503)
	notReadyAfter := time.Since(sigAt)
	atSignal := load.Progress().Sent
	if !strings.Contains(body, "--stop-delay") {
		t.Errorf("/readyz during the stop delay: %q, want it to name --stop-delay", body)
	}
	if code, body := probe(health, "/livez"); code != 200 {
		t.Errorf("/livez during the stop delay: %d %q, want 200", code, body)
	}
	if resp := w.call("restart"); resp.OK || !strings.Contains(resp.Error, "stopping") {
		t.Errorf("restart during the stop delay: %+v, want it refused", resp)
	}
	waitRequests(t, load, atSignal+300)
	load.Stop()
	res := load.Wait()
	select {
	case <-w.done:
		t.Fatalf("rpwrap exited before the load ended, %s after SIGTERM: the machine is too slow for a %s stop delay", time.Since(sigAt), delay)
	default:
	}
	if strings.Contains(w.out.String(), "msg=stopping prog=rpwrap signal=") {
		t.Fatalf("the shutdown began before the load ended (%s after SIGTERM)", time.Since(sigAt))
	}
	t.Logf("/readyz 503 %s after SIGTERM (%d polls); %d requests sent after that, during the stop delay", notReadyAfter, polls, res.Sent-atSignal)
	requireNoLoss(t, res, atSignal+300)
	select {
	case <-w.done:
	case <-time.After(time.Minute):
		t.Fatal("rpwrap did not exit after its stop delay")
	}
	if took := time.Since(sigAt); took < delay {
		t.Errorf("rpwrap exited %s after SIGTERM, before its %s stop delay", took, delay)
	}
	if code := w.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d, want the server's 0", code)
	}
	if !strings.Contains(w.out.String(), `msg=stopped prog=rpwrap generation=1`) {
		t.Errorf("generation 1 not stopped; output:\n%s", w.out.String())
	}
}

// The control: without --stop-delay, connections that a load balancer
// still sends after SIGTERM are refused once rpwrap has stopped.
func TestWithoutStopDelayConnectionsAfterSIGTERMAreRefused(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load, err := loadgen.Start(ctx, loadgen.Config{Target: w.addr, Clients: 4, Duration: 5 * time.Minute, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitRequests(t, load, 200)
	if code := w.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit status %d, want the server's 0", code)
	}
	waitRequests(t, load, load.Progress().Sent+100)
	load.Stop()
	res := load.Wait()
	t.Logf("requests: sent %d, ok %d, refused %d, reset %d, other failures %d; errors: %v", res.Sent, res.OK, res.Refused, res.Reset, res.Failed()-res.Refused-res.Reset, res.Errors)
	if res.Refused < 100 {
		t.Errorf("%d refused after rpwrap stopped, want at least the 100 sent after it exited", res.Refused)
	}
}

// A second SIGTERM during the stop delay stops rpwrap at once.
func TestSecondSIGTERMEndsTheStopDelay(t *testing.T) {
	health := freePort(t)
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--stop-delay", "10m", "--health", health})
	w.cmd.Process.Signal(syscall.SIGTERM)
	waitProbe(t, health, "/readyz", 503)
	if code := w.stop(syscall.SIGTERM); code != 0 { // w.stop fails after a minute, far below 10m
		t.Errorf("exit status %d, want the server's 0", code)
	}
	requirePortFree(t, health)
}

// Before the first generation is ready, /livez and /readyz answer 503
// saying so; once it serves, 200 naming it.
func TestHealthBeforeAndAfterTheFirstGenerationIsReady(t *testing.T) {
	testutil.RequireRoot(t)
	health := freePort(t)
	dir := shortTempDir(t)
	cmd := exec.Command(testBinary(t), "--control", filepath.Join(dir, "ctl.sock"), "--listen", "127.0.0.1:0",
		"--ready", "delay:3s", "--health", health, "--", testBinary(t), "serve-demo")
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), asRpwrap+"=1", "RUNTIME_DIRECTORY="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("rpwrap output:\n%s", out.String())
		}
	}()
	waitUntil(t, "the health server", func() bool { code, _ := probe(health, "/livez"); return code != 0 })
	for _, path := range []string{"/livez", "/readyz"} {
		code, body := probe(health, path)
		if code != 503 || body != "not serving yet: the first generation is starting\n" {
			t.Errorf("%s before ready: %d %q, want 503 not serving yet", path, code, body)
		}
	}
	if strings.Contains(out.String(), "msg=ready") {
		t.Fatal("generation 1 was ready before the first probes: they tested nothing")
	}
	readyBody, _ := waitProbe(t, health, "/readyz", 200)
	_, liveBody := probe(health, "/livez")
	if !strings.HasPrefix(readyBody, "ready: generation 1 (pid ") || !strings.HasPrefix(liveBody, "live: generation 1 (pid ") {
		t.Errorf("after ready: /readyz %q, /livez %q", readyBody, liveBody)
	}
	if !strings.Contains(out.String(), "msg=ready") {
		t.Errorf("/readyz 200 before rpwrap logged the generation ready")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	<-done
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	requirePortFree(t, health)
}

// With --restart-on-failure, between a crash and the respawned
// generation, /livez and /readyz answer 503; then 200 again.
func TestHealthDuringARespawn(t *testing.T) {
	health := freePort(t)
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--restart-on-failure", "--health", health}, "-crash-after-ready", "1s")
	body, _ := waitProbe(t, health, "/readyz", 503)
	if !strings.Contains(body, "exited") {
		t.Errorf("/readyz after the crash: %q, want it to say the generation exited", body)
	}
	code, live := probe(health, "/livez") // the respawn may already be done
	crashed := code == 503 && strings.Contains(live, "exited")
	respawned := code == 200 && strings.HasPrefix(live, "live: generation ") && !strings.HasPrefix(live, "live: generation 1 ")
	if !crashed && !respawned {
		t.Errorf("/livez after the crash: %d %q, want 503 saying it exited, or 200 for a later generation", code, live)
	}
	body, _ = waitProbe(t, health, "/readyz", 200)
	if strings.HasPrefix(body, "ready: generation 1 ") {
		t.Errorf("/readyz after the respawn: %q, want a later generation", body)
	}
	w.stop(syscall.SIGTERM)
}

// A malformed --health address, or one a --listen address covers, is
// refused before anything starts, with exit status 2.
func TestBadHealthAddressIsRefused(t *testing.T) {
	for _, tc := range []struct {
		listen, health, want string
	}{
		{"127.0.0.1:18480", "8081", "want [ADDRESS]:PORT"},
		{"127.0.0.1:18480", "localhost:8081", "want [ADDRESS]:PORT"},
		{"127.0.0.1:18480", "127.0.0.1:70000", "want [ADDRESS]:PORT"},
		{"127.0.0.1:18480", ":http", "want [ADDRESS]:PORT"},
		{"127.0.0.1:18480", "127.0.0.1:18480", "also a --listen address"},
		{"127.0.0.1:18480", ":18480", "also a --listen address"},
		{":18480", "127.0.0.1:18480", "also a --listen address"},
		{"[::1]:18480", "[::1]:18480", "also a --listen address"},
	} {
		code, _, errOut := runCLI(t, nil, "--listen", tc.listen, "--health", tc.health, "--", "/bin/true")
		if code != 2 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "--health") {
			t.Errorf("--listen %s --health %s: exit %d, %q; want 2 and %q", tc.listen, tc.health, code, errOut, tc.want)
		}
	}
	code, _, errOut := runCLI(t, map[string]string{"RPWRAP_HEALTH": "127.0.0.1:18480"}, "--listen", "127.0.0.1:18480", "--", "/bin/true")
	if code != 2 || !strings.Contains(errOut, "also a --listen address") {
		t.Errorf("RPWRAP_HEALTH equal to --listen: exit %d, %q; want 2", code, errOut)
	}
	// Another port of the same address, and a UDP address on the same port, are fine.
	for _, listen := range []string{"127.0.0.1:18481", "udp://127.0.0.1:18480", "127.0.0.1:0"} {
		spec, err := fdpass.ParseSpec(listen)
		if err != nil {
			t.Fatal(err)
		}
		if err := supervisor.CheckHealthAddr("127.0.0.1:18480", []fdpass.Spec{spec}); err != nil {
			t.Errorf("--listen %s --health 127.0.0.1:18480: %v", listen, err)
		}
	}
}

// A --health port that another process holds stops rpwrap at start, with
// exit status 1 and a message naming the health server.
func TestHealthPortInUseStopsRpwrap(t *testing.T) {
	testutil.RequireRoot(t)
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := shortTempDir(t)
	code, _, errOut := runCLI(t, map[string]string{"RUNTIME_DIRECTORY": dir}, "--control", filepath.Join(dir, "ctl.sock"),
		"--listen", "127.0.0.1:0", "--health", busy.Addr().String(), "--", "/bin/true")
	if code != 1 || !strings.Contains(errOut, "health server (--health "+busy.Addr().String()+")") || !strings.Contains(errOut, "address already in use") {
		t.Errorf("exit %d, %q; want 1 naming the health server and the address in use", code, errOut)
	}
}
