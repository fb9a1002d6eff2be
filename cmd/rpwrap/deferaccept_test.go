//go:build linux

package main

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/supervisor"
)

// deferLinger is how long the deferred-accept server runs on after its
// stop signal, with its listener closed: Apache finishing a long download.
const deferLinger = 8 * time.Second

// Clients of a server whose listener has TCP_DEFER_ACCEPT (Apache's
// default AcceptFilter) connect just before a restart and send their
// request only after the flip, once the old server has closed its
// listener (but still runs, for deferLinger). Their connections land on
// the old socket when their first bytes come: they must still be answered,
// and at once, not after the old generation exits (a stall of about
// deferLinger, then a migration with eBPF, a reset with cBPF).
func TestDeferredAcceptClientsAreAnsweredAfterTheFlip(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--selector", sel,
				"--", testBinary(t), faultServerArg, "defer-accept", deferLinger.String()})
			l := startLoads(t, []string{w.addr}, nil)
			l.more(100)
			const restarts, perRestart = 3, 4
			var answered int
			var worst time.Duration
			for i := 0; i < restarts; i++ {
				clients := dialIdle(t, w.addr, perRestart)
				restartUntilFlip(t, w, i+2)
				w.waitOutputCount("closed my listener", i+1) // the old server no longer holds its socket
				for j, a := range requestAll(clients, 15*time.Second) {
					t.Logf("restart %d, client %d: answered after %v, err %v", i+1, j+1, a.latency, a.err)
					if a.err == nil {
						answered++
					}
					worst = max(worst, a.latency)
				}
				l.more(50)
			}
			l.requireNoLoss(300)
			t.Logf("deferred-accept clients: %d of %d answered, slowest %v (old generation lingers %v)", answered, restarts*perRestart, worst, deferLinger)
			if answered != restarts*perRestart {
				t.Errorf("%d of %d deferred-accept clients answered", answered, restarts*perRestart)
			}
			if worst >= deferLinger/2 {
				t.Errorf("slowest deferred-accept client answered after %v: it waited for the old generation, which lingers %v", worst, deferLinger)
			}
		})
	}
}

// dialIdle opens n connections to addr that send nothing yet.
func dialIdle(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs
}

// restartUntilFlip asks for a restart and returns once generation gen is
// active: at the flip, whether the restart answers then or only after the
// drain. The answer, when it comes, must be a success.
func restartUntilFlip(t *testing.T, w *wrapper, gen int) {
	t.Helper()
	answered := make(chan supervisor.Response, 1)
	go func() {
		resp, err := supervisor.Call(context.Background(), w.control, supervisor.Request{Command: "restart"})
		if err != nil {
			resp.Error = err.Error()
		}
		answered <- resp
	}()
	t.Cleanup(func() {
		select {
		case resp := <-answered:
			if !resp.OK {
				t.Errorf("restart to generation %d: %s", gen, resp.Error)
			}
		case <-time.After(time.Minute):
			t.Errorf("restart to generation %d never answered", gen)
		}
	})
	waitUntil(t, "the flip to generation "+itoa(gen), func() bool {
		for _, g := range w.status().Generations {
			if g.Generation == gen && g.State == supervisor.StateActive {
				return true
			}
		}
		return false
	})
}

// waitOutputCount waits until rpwrap's output holds s at least n times.
func (w *wrapper) waitOutputCount(s string, n int) {
	w.t.Helper()
	waitUntil(w.t, "rpwrap's output to hold "+itoa(n)+" × "+s, func() bool { return strings.Count(w.out.String(), s) >= n })
}

type answer struct {
	latency time.Duration
	err     error
}

// requestAll sends GET / on every one of cs at once and returns what each
// got (see requestOn).
func requestAll(cs []net.Conn, timeout time.Duration) []answer {
	out := make([]answer, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() { defer wg.Done(); out[i].latency, out[i].err = requestOn(c, timeout) }()
	}
	wg.Wait()
	return out
}

// requestOn sends GET / on c and reads the whole response (the server
// closes after it), within timeout. It returns how long the answer took,
// and an error unless the status was 200.
func requestOn(c net.Conn, timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	c.SetDeadline(t0.Add(timeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: rpwrap-test\r\nConnection: close\r\n\r\n"); err != nil {
		return time.Since(t0), err
	}
	b, err := io.ReadAll(c)
	lat := time.Since(t0)
	if err != nil {
		return lat, err
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 200 ") {
		return lat, &badAnswer{string(b)}
	}
	return lat, nil
}

type badAnswer struct{ got string }

func (e *badAnswer) Error() string {
	return "not a 200 answer: " + strings.SplitN(e.got+"\n", "\n", 2)[0]
}
