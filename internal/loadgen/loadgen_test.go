//go:build linux

package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func run(t *testing.T, cfg Config) Result {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run load: %v", err)
	}
	checkConsistent(t, res)
	return res
}

// checkConsistent checks what holds for every Result: each request has
// exactly one outcome, and the timeline adds up to the totals.
func checkConsistent(t *testing.T, res Result) {
	t.Helper()
	if res.Sent != res.OK+res.Failed() {
		t.Errorf("Sent %d != OK %d + Failed %d", res.Sent, res.OK, res.Failed())
	}
	if res.Latency.Count() != res.OK {
		t.Errorf("latency count %d != OK %d", res.Latency.Count(), res.OK)
	}
	var ok, failed int64
	for _, b := range res.Timeline {
		ok, failed = ok+b.OK, failed+b.Failed
	}
	if ok != res.OK || failed != res.Failed() {
		t.Errorf("timeline adds up to %d OK, %d failed; totals are %d, %d", ok, failed, res.OK, res.Failed())
	}
}

func TestEveryRequestToHTTPServerSucceeds(t *testing.T) {
	for _, keepAlive := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepalive=%v", keepAlive), func(t *testing.T) {
			addr, conns := httpServer(t, okHandler)
			const requests, clients = 2000, 4
			res := run(t, Config{Target: addr, Clients: clients, Requests: requests, KeepAlive: keepAlive})
			if res.Sent != requests || res.OK != requests || res.Failed() != 0 {
				t.Errorf("sent %d, OK %d, failed %d (%v); want %d, %d, 0", res.Sent, res.OK, res.Failed(), res.Errors, requests, requests)
			}
			want := requests
			if keepAlive {
				want = clients
			}
			if got := conns.count(); keepAlive && got > want || !keepAlive && got != want {
				t.Errorf("server saw %d connections, want %d", got, want)
			}
		})
	}
}

func TestClosedPortCountsRefused(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	res := run(t, Config{Target: addr, Clients: 2, Requests: 50})
	if res.Refused != 50 || res.Sent != 50 {
		t.Errorf("refused %d of %d sent (%+v), want 50 of 50", res.Refused, res.Sent, res)
	}
}

func TestResetCountsReset(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		if readRequest(bufio.NewReader(c)) {
			c.(*net.TCPConn).SetLinger(0) // close sends RST
		}
		c.Close()
	})
	res := run(t, Config{Target: addr, Clients: 2, Requests: 20})
	if res.Reset != 20 {
		t.Errorf("reset %d of %d (%v), want 20", res.Reset, res.Sent, res.Errors)
	}
}

func TestServerThatNeverAnswersCountsTimeout(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		readRequest(bufio.NewReader(c)) // then hold the connection until the test ends
	})
	res := run(t, Config{Target: addr, Clients: 4, Requests: 8, Timeout: 200 * time.Millisecond})
	if res.Timeout != 8 {
		t.Errorf("timeout %d of %d (%v), want 8", res.Timeout, res.Sent, res.Errors)
	}
}

func TestCutResponseCountsShortRead(t *testing.T) {
	responses := map[string]string{
		"nothing":         "",
		"half a status":   "HTTP/1.1 2",
		"half the header": "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n",
		"half the body":   "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("x", 50),
		"half the chunks": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
	}
	for name, resp := range responses {
		t.Run(name, func(t *testing.T) {
			addr := rawServer(t, func(c net.Conn) {
				if readRequest(bufio.NewReader(c)) {
					c.Write([]byte(resp))
				}
				c.Close() // after the whole request was read: FIN, not RST
			})
			res := run(t, Config{Target: addr, Clients: 2, Requests: 10})
			if res.ShortRead != 10 {
				t.Errorf("short read %d of %d (%+v), want 10", res.ShortRead, res.Sent, res)
			}
		})
	}
}

func TestNon200CountsBadStatus(t *testing.T) {
	addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	})
	for _, keepAlive := range []bool{false, true} {
		res := run(t, Config{Target: addr, Clients: 2, Requests: 10, KeepAlive: keepAlive})
		if res.BadStatus != 10 {
			t.Errorf("keepalive=%v: bad status %d of %d (%v), want 10", keepAlive, res.BadStatus, res.Sent, res.Errors)
		}
	}
}

// Every framing of RFC 9112 section 6.3 is read to its exact end: the
// server answers on one connection for as long as the framing allows, so a
// misread body would break the next response.
func TestResponseFramings(t *testing.T) {
	for _, tt := range []struct {
		name, resp     string
		ok, conns      int64
		endsConnection bool
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: 1\r\n\r\n", 3, 1, false},
		{"content length", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 3, 1, false},
		{"no body with 204", "HTTP/1.1 204 No Content\r\n\r\n", 0, 1, false},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nall of this", 3, 3, true},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 3, 3, true},
		{"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 3, 3, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var conns atomic.Int64
			addr := rawServer(t, func(c net.Conn) {
				conns.Add(1)
				r := bufio.NewReader(c)
				for readRequest(r) {
					c.Write([]byte(tt.resp))
					if tt.endsConnection {
						break
					}
				}
				c.Close()
			})
			res := run(t, Config{Target: addr, Requests: 3, KeepAlive: true})
			if res.OK != tt.ok || res.BadStatus != 3-tt.ok || conns.Load() != tt.conns {
				t.Errorf("OK %d, bad status %d, connections %d (%v); want %d, %d, %d",
					res.OK, res.BadStatus, conns.Load(), res.Errors, tt.ok, 3-tt.ok, tt.conns)
			}
		})
	}
}

// A server that closes each connection after one response although the
// client asked to keep it: the next request on it is cut before a byte
// came, counted apart from resets and short reads.
func TestKeepAliveClosedByServerCountsClosed(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		if readRequest(bufio.NewReader(c)) {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		}
		c.Close()
	})
	res := run(t, Config{Target: addr, Clients: 1, Requests: 10, KeepAlive: true})
	if res.OK != 5 || res.Closed != 5 {
		t.Errorf("OK %d, closed %d (%+v), want 5, 5", res.OK, res.Closed, res)
	}
}

func TestOpenLoopSendsExactlyWhatIsDue(t *testing.T) {
	addr, _ := httpServer(t, okHandler)
	// Requests are due at i/Rate for i = 0, 1, ...: 100 of them in 500 ms.
	res := run(t, Config{Target: addr, Clients: 4, Rate: 200, Duration: 500 * time.Millisecond})
	if res.Sent != 100 || res.OK != 100 {
		t.Errorf("sent %d, OK %d (%v), want 100, 100", res.Sent, res.OK, res.Errors)
	}
	res = run(t, Config{Target: addr, Clients: 4, Rate: 1000, Requests: 50, Duration: time.Minute})
	if res.Sent != 50 || res.OK != 50 {
		t.Errorf("sent %d, OK %d (%v), want 50, 50", res.Sent, res.OK, res.Errors)
	}
}

// With one client and a server slower than the rate, requests fall behind
// their schedule, and the open loop charges the delay to their latency:
// request i is due at i·10 ms but cannot end before (i+1)·50 ms.
func TestOpenLoopLatencyCountsFromDueTime(t *testing.T) {
	addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond) // the server's work, not synchronisation
		okHandler(w, r)
	})
	res := run(t, Config{Target: addr, Clients: 1, Rate: 100, Requests: 10})
	if res.OK != 10 {
		t.Fatalf("OK %d (%v), want 10", res.OK, res.Errors)
	}
	if floor := 10*50*time.Millisecond - 9*10*time.Millisecond; res.Latency.Max() < floor {
		t.Errorf("max latency %v, want at least %v", res.Latency.Max(), floor)
	}
}

// Cancelling the context stops new requests; those in flight still get an
// outcome, so the server answered exactly as many as the load counts OK.
func TestCancelStopsNewRequestsAndCountsThoseInFlight(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var served atomic.Int64
	addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1) == 100 {
			cancel()
		}
		okHandler(w, r)
	})
	res, err := Run(ctx, Config{Target: addr, Clients: 4, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, res)
	if res.OK != served.Load() || res.Failed() != 0 || res.OK < 100 {
		t.Errorf("OK %d, failed %d, server answered %d; want OK == answered >= 100, 0 failed", res.OK, res.Failed(), served.Load())
	}
}

func TestMarksAndWindowsOnTheTimeline(t *testing.T) {
	addr, _ := httpServer(t, okHandler)
	load, err := Start(context.Background(), Config{Target: addr, Clients: 2, Requests: 300})
	if err != nil {
		t.Fatal(err)
	}
	at := load.Mark("begin")
	end := load.Window("closed")
	w := end()
	load.Window("left open")
	res := load.Wait()
	checkConsistent(t, res)
	if len(res.Marks) != 1 || res.Marks[0] != (Mark{"begin", at}) {
		t.Errorf("marks %v, want [{begin %v}]", res.Marks, at)
	}
	if len(res.Windows) != 2 || res.Windows[0] != w || w.Start < at || w.End < w.Start {
		t.Fatalf("windows %v, want the closed one %v first, after %v", res.Windows, w, at)
	}
	if open := res.Windows[1]; open.End != res.Elapsed {
		t.Errorf("window left open ends at %v, want the end of the load %v", open.End, res.Elapsed)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no bound":      {Target: "127.0.0.1:1"},
		"no port":       {Target: "127.0.0.1", Requests: 1},
		"relative path": {Target: "127.0.0.1:1", Requests: 1, Path: "x"},
		"negative rate": {Target: "127.0.0.1:1", Requests: 1, Rate: -1},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: Run(%+v) did not fail", name, cfg)
		}
	}
}
