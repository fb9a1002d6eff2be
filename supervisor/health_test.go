//go:build linux

package supervisor

import (
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
)

// get asks the health server for path; code 0 when nothing answered.
func (r *rig) get(path string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + r.s.HealthAddr() + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (r *rig) wantHealth(path string, code int, body string) {
	r.t.Helper()
	if c, b := r.get(path); c != code || !strings.Contains(b, body) {
		r.t.Errorf("%s: %d %q, want %d with %q", path, c, b, code, body)
	}
}

func withHealth(delay time.Duration) func(*Config) {
	return func(c *Config) { c.HealthAddr, c.StopDelay = "127.0.0.1:0", delay }
}

// TestStopDelay: after SIGTERM (the end of Run's context) the active
// generation gets no signal for the stop delay, /readyz answers 503 at
// once and /livez 200, a restart is refused; then the usual stop, with the
// server's status, and nothing left, the health server's socket included.
func TestStopDelay(t *testing.T) {
	const delay = 400 * time.Millisecond
	r := newRig(t, 1, withHealth(delay))
	fp := r.os.plan(1)
	fp.stopStatus = exitCode(5)
	r.run(context.Background(), true)
	addr := r.s.HealthAddr()
	r.wantHealth("/readyz", 200, "ready: generation 1 (pid 5000001) serving\n")
	r.wantHealth("/livez", 200, "live: generation 1 (pid 5000001) serving\n")
	start := time.Now()
	r.cancel()
	eventually(t, "/readyz 503", func() bool { c, _ := r.get("/readyz"); return c == 503 })
	r.wantHealth("/readyz", 503, "(--stop-delay), then stops")
	r.wantHealth("/livez", 200, "live: generation 1")
	_, err := r.restart(false)
	wantErr(t, "restart during the stop delay", err, "rpwrap is stopping (--stop-delay)")
	time.Sleep(time.Until(start.Add(delay - 100*time.Millisecond))) // look near the end of the delay
	if got, elapsed := fp.received(), time.Since(start); len(got) != 0 && elapsed < delay {
		t.Errorf("signals %v %s after SIGTERM, within the %s stop delay, want none", got, elapsed, delay)
	}
	if code := r.wait(); code != 5 {
		t.Errorf("exit status %d, want the server's 5", code)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("stopped %s after SIGTERM, before the %s stop delay", took, delay)
	}
	if got := fp.received(); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM}) {
		t.Errorf("signals: %v, want SIGTERM once, after the delay", got)
	}
	r.wantFinal(1, StateStopped)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("health server %s still accepts after Run returned", addr)
	}
	r.clean()
}

// TestStopDelaySkippedBeforeFirstReady: no load balancer sends anything to
// a rpwrap that was never ready, so SIGTERM stops it at once.
func TestStopDelaySkippedBeforeFirstReady(t *testing.T) {
	r := newRig(t, 1, withHealth(time.Hour))
	fp := r.os.plan(1)
	fp.checkGate = make(chan struct{})
	r.run(context.Background(), false)
	<-fp.checking
	if code := r.stop(); code != exitNotReady {
		t.Errorf("exit status %d, want %d", code, exitNotReady)
	}
	r.wantFinal(1, StateAbandoned)
	r.clean()
}

// TestHealthFollowsTheLifeCycle: 503 before the first generation is
// ready, 200 once it serves and through a restart, 503 between a crash
// and the respawned generation, then 200 naming that one.
func TestHealthFollowsTheLifeCycle(t *testing.T) {
	r := newRig(t, 1, func(c *Config) { withHealth(0)(c); c.RestartOnFailure = true })
	gate := make(chan struct{})
	r.os.plan(1).checkGate = gate
	r.run(context.Background(), false)
	<-r.os.plan(1).checking
	r.wantHealth("/livez", 503, "not serving yet: the first generation is starting\n")
	r.wantHealth("/readyz", 503, "not serving yet: the first generation is starting\n")
	close(gate)
	<-r.s.Ready()
	r.wantHealth("/readyz", 200, "ready: generation 1 ")
	if _, err := r.restart(true); err != nil {
		t.Fatal(err)
	}
	r.wantHealth("/readyz", 200, "ready: generation 2 ")
	gate3 := make(chan struct{})
	r.os.plan(3).checkGate = gate3
	r.os.plan(2).exit(exitCode(3))
	<-r.os.plan(3).checking
	r.wantHealth("/livez", 503, "not serving: generation 2 (pid 5000002) exited")
	r.wantHealth("/readyz", 503, "not serving: generation 2 (pid 5000002) exited")
	close(gate3)
	eventually(t, "generation 3 active", func() bool { return r.state(3) == StateActive })
	r.wantHealth("/readyz", 200, "ready: generation 3 ")
	r.wantHealth("/livez", 200, "live: generation 3 ")
	r.stop()
	r.clean()
}

func TestCheckHealthAddr(t *testing.T) {
	spec := func(s string) fdpass.Spec {
		sp, err := fdpass.ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	for _, tc := range []struct {
		health, listen, want string
	}{
		{":8081", "127.0.0.1:8080", ""},
		{"127.0.0.1:8080", "udp://127.0.0.1:8080", ""},
		{"127.0.0.1:0", "127.0.0.1:0", ""},
		{"[::1]:8080", "127.0.0.1:8080", ""},
		{"127.0.0.1:8080", "127.0.0.1:8080", "also a --listen address (tcp://127.0.0.1:8080)"},
		{":8080", "127.0.0.1:8080", "also a --listen address"},
		{"127.0.0.1:8080", "[::]:8080", "also a --listen address"},
		{"[::ffff:127.0.0.1]:8080", "127.0.0.1:8080", "also a --listen address"},
		{"8080", "127.0.0.1:8080", "want [ADDRESS]:PORT"},
		{"localhost:8081", "127.0.0.1:8080", "want [ADDRESS]:PORT"},
		{"[fe80::1%lo]:8081", "127.0.0.1:8080", "want [ADDRESS]:PORT"},
		{"127.0.0.1:65536", "127.0.0.1:8080", "want [ADDRESS]:PORT"},
	} {
		err := CheckHealthAddr(tc.health, []fdpass.Spec{spec(tc.listen)})
		if tc.want == "" && err != nil {
			t.Errorf("health %s, listen %s: %v", tc.health, tc.listen, err)
		}
		if tc.want != "" {
			wantErr(t, "health "+tc.health+", listen "+tc.listen, err, tc.want)
		}
	}
}

// TestReadyzDuringTheStop: while the active generation is being stopped
// (here it ignores the stop signal until SIGKILL), /readyz answers 503 and
// /livez 200, until it has exited.
func TestReadyzDuringTheStop(t *testing.T) {
	r := newRig(t, 1, func(c *Config) { withHealth(0)(c); c.StopTimeout = 2 * time.Second })
	fp := r.os.plan(1)
	fp.ignoreStop = true
	r.run(context.Background(), true)
	r.cancel()
	waitSignal(fp, syscall.SIGTERM)
	r.wantHealth("/readyz", 503, "not ready: stopping: generation 1 (pid 5000001) is being stopped\n")
	r.wantHealth("/livez", 200, "live: generation 1 ")
	if code := r.wait(); code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit status %d, want %d (SIGKILL after the stop timeout)", code, 128+int(syscall.SIGKILL))
	}
	r.clean()
}

// TestCrashDuringAStopDelayStartedByTheContextIsRespawned: the end of
// Run's context starts the stop delay and nothing else; a generation that
// crashes meanwhile is replaced once (respawns run until the shutdown, not
// until ctx), and the delay then ends with the usual stop.
func TestCrashDuringAStopDelayStartedByTheContextIsRespawned(t *testing.T) {
	r := newRig(t, 1, func(c *Config) {
		withHealth(time.Second)(c)
		c.RestartOnFailure = true
	})
	r.run(context.Background(), true)
	r.cancel()
	eventually(t, "/readyz 503", func() bool { c, _ := r.get("/readyz"); return c == 503 })
	r.os.plan(1).exit(exitCode(2))
	eventually(t, "respawned", func() bool { return r.state(2) == StateActive })
	r.wait()
	r.wantFinal(1, StateCrashed)
	r.wantFinal(2, StateStopped)
	if n := strings.Count(r.log.String(), "starting a new generation on the same sockets"); n != 1 {
		t.Errorf("%d respawns logged, want 1", n)
	}
	r.clean()
}
