//go:build linux

package main

import (
	"context"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/loadtest"
)

// loads are bounded loads on several targets at once: HTTP on TCP
// addresses, echo datagrams on UDP ones, each counted exactly.
type loads struct {
	t    *testing.T
	http map[string]*loadgen.Load
	udp  map[string]*loadgen.UDPLoad
}

// startLoads starts 2 clients on each of tcp (HTTP) and 4 on each of udp (echo), at
// most 5 minutes and 200,000 datagrams each.
func startLoads(t *testing.T, tcp, udp []string) *loads {
	t.Helper()
	l := &loads{t: t, http: map[string]*loadgen.Load{}, udp: map[string]*loadgen.UDPLoad{}}
	t.Cleanup(l.stop)
	for _, a := range tcp {
		ld, err := loadgen.Start(context.Background(), loadgen.Config{Target: a, Clients: 2, Duration: 5 * time.Minute, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		l.http[a] = ld
	}
	for _, a := range udp {
		ld, err := loadgen.StartUDP(context.Background(), loadgen.UDPConfig{Target: a, Clients: 4, Datagrams: 200000, Duration: 5 * time.Minute, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		l.udp[a] = ld
	}
	return l
}

// more waits until every load has sent n more requests or datagrams than
// it had when more was called.
func (l *loads) more(n int64) {
	l.t.Helper()
	for _, ld := range l.http {
		loadtest.WaitSent(l.t, ld, ld.Progress().Sent+n, time.Minute)
	}
	for a, ld := range l.udp {
		want := ld.Progress().Sent + n
		for deadline := time.Now().Add(time.Minute); ld.Progress().Sent < want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				l.t.Fatalf("udp load on %s stalled at %d datagrams", a, ld.Progress().Sent)
			}
		}
	}
}

func (l *loads) stop() {
	for _, ld := range l.http {
		ld.Stop()
	}
	for _, ld := range l.udp {
		ld.Stop()
	}
}

// requireNoLoss stops the loads and requires that every request and every
// datagram was answered, and that each load sent at least atLeast.
func (l *loads) requireNoLoss(atLeast int64) {
	l.t.Helper()
	l.stop()
	for a, ld := range l.http {
		l.t.Logf("tcp %s:", a)
		loadtest.RequireNoLoss(l.t, ld.Wait(), atLeast)
	}
	for a, ld := range l.udp {
		requireNoUDPLoss(l.t, a, ld.Wait(), atLeast)
	}
}

// requireNoUDPLoss logs res and fails unless every datagram sent was
// answered and at least atLeast were sent.
func requireNoUDPLoss(t *testing.T, addr string, res loadgen.UDPResult, atLeast int64) {
	t.Helper()
	t.Logf("udp %s: datagrams sent %d, answered %d, lost %d, refused %d, late %d; latency p50 %v p99 %v max %v; errors: %v",
		addr, res.Sent, res.Answered, res.Lost, res.Refused, res.Late,
		res.Latency.Quantile(0.5), res.Latency.Quantile(0.99), res.Latency.Max(), res.Errors)
	if res.Failed() != 0 || res.Answered != res.Sent {
		t.Errorf("udp %s: lost datagrams: %d of %d sent got no echo", addr, res.Failed(), res.Sent)
	}
	if res.Sent < atLeast {
		t.Errorf("udp %s: only %d datagrams sent, want at least %d for the test to mean something", addr, res.Sent, atLeast)
	}
}

// restartsUnderLoads restarts w n times with the loads running, some load
// on every generation.
func restartsUnderLoads(t *testing.T, w *wrapper, l *loads, n int) {
	t.Helper()
	l.more(100)
	for i := 0; i < n; i++ {
		r := w.restart()
		t.Logf("restart %d: generation %d, ready after %v, drained in %v", i+1, r.Generation, r.Ready, r.Drain)
		l.more(50)
	}
	l.more(100)
}
