//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/supervisor"
)

// heldConn is one keep-alive client of one generation with a slow request
// in flight: it outlasts restarts, so the generation that accepted it
// drains with a client of its own.
type heldConn struct {
	gen, pid int // the generation that answered its first request
	conn     net.Conn
	done     chan struct{}
	// set once done is closed
	status int
	body   string
	close  bool // the answer said Connection: close (a server that stops)
	err    error
	at     time.Time
}

// holdConn connects to addr, asks "/" on a keep-alive connection to learn
// which generation accepted it, then asks /slow?ms=ms on the same
// connection and reads the answer in the background.
func holdConn(t *testing.T, addr string, ms int) *heldConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connect a held client: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	br := bufio.NewReader(conn)
	h := &heldConn{conn: conn, done: make(chan struct{})}
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("held client, first request: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("held client, first request: %d close=%v %q %v", resp.StatusCode, resp.Close, body, err)
	}
	if _, err := fmt.Sscanf(string(body), "gen=%d pid=%d", &h.gen, &h.pid); err != nil {
		t.Fatalf("held client, first request: answer %q: %v", body, err)
	}
	if _, err := fmt.Fprintf(conn, "GET /slow?ms=%d HTTP/1.1\r\nHost: x\r\n\r\n", ms); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(h.done)
		resp, err := http.ReadResponse(br, nil)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			h.status, h.body, h.close = resp.StatusCode, string(b), resp.Close
		}
		h.err, h.at = err, time.Now()
	}()
	return h
}

// wait waits for the held request's outcome, at most within.
func (h *heldConn) wait(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-h.done:
	case <-time.After(within):
		t.Fatalf("held client of generation %d: no outcome within %s", h.gen, within)
	}
}

// answered reports whether the held request got its whole 200.
func (h *heldConn) answered(ms int) bool {
	return h.err == nil && h.status == 200 && h.body == fmt.Sprintf("slept %d ms\n", ms)
}

// restartNoWait is `rpwrap ctl restart` without --wait: it answers at the
// flip. It returns the answer and how long it took.
func (w *wrapper) restartNoWait() (supervisor.Response, time.Duration) {
	w.t.Helper()
	return w.callRestart(false)
}

func (w *wrapper) callRestart(wait bool) (supervisor.Response, time.Duration) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	resp, err := supervisor.Call(ctx, w.control, supervisor.Request{Command: "restart", Wait: wait})
	took := time.Since(t0)
	if err != nil {
		w.t.Fatalf("ctl restart (wait %v): %v; output:\n%s", wait, err, w.out.String())
	}
	if !resp.OK || resp.Restart == nil {
		w.t.Fatalf("ctl restart (wait %v) failed: %+v; output:\n%s", wait, resp, w.out.String())
	}
	return resp, took
}

// rpwrapAccepts reports whether this rpwrap's command line takes flags
// (it parses them, then --version exits 0).
func rpwrapAccepts(t *testing.T, flags ...string) bool {
	cmd := exec.Command(testBinary(t), append(flags, "--version")...)
	cmd.Env = append(os.Environ(), asRpwrap+"=1")
	return cmd.Run() == nil
}

// Replaced generations drain side by side, each until its own deadline,
// while new connections go to the newest: each held keep-alive client with
// a slow request in flight gets its answer from the draining generation
// that accepted it, across the restarts that follow; `ctl restart`
// answers at the flip, long before the drain timeout; `ctl status` shows
// every draining generation with its deadline (--drain-timeout after the
// flip that replaced it); one restart too many for --max-draining stops
// the oldest draining generation early; a generation whose client outlasts
// the drain timeout is killed at its deadline; and `ctl restart --wait`
// answers only once the predecessor is drained. A load of new connections
// runs throughout and loses none.
func TestGenerationsDrainSideBySide(t *testing.T) {
	const drainTimeout = 20 * time.Second
	maxDraining := 2
	flags := []string{"--listen", "127.0.0.1:0", "--selector", "ebpf", "--ready", "notify",
		"--drain-timeout", drainTimeout.String(), "--stop-timeout", "1s"}
	if rpwrapAccepts(t, "--max-draining", "2") {
		flags = append(flags, "--max-draining", "2")
	} else {
		maxDraining = 4 // supervisor.Config's default, without the flag
		t.Logf("this rpwrap has no --max-draining: testing the cap at its default of %d", maxDraining)
	}
	w := startWrapper(t, flags)

	// Generation k (1 .. maxDraining+1) holds a client before restart k
	// replaces it. The first is stopped by the cap before its client's
	// answer is due; the middle ones answer while draining; the last one's
	// client outlasts the drain timeout, so it is killed at its deadline.
	const (
		capped   = 18000 // ms: longer than the restarts before the cap, shorter than the drain timeout
		answered = 10000 // ms: half the drain timeout, longer than the restarts that follow
		outlasts = 30000 // ms: longer than the drain timeout
	)
	replaced := maxDraining + 1
	msFor := func(k int) int {
		switch k {
		case 1:
			return capped
		case replaced:
			return outlasts
		}
		return answered
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load, err := loadgen.Start(ctx, loadgen.Config{
		Target: w.addr, Path: "/", Clients: 4, Duration: 5 * time.Minute, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitRequests(t, load, 200)

	held := map[int]*heldConn{}
	deadlines := map[int]time.Time{}
	pids := map[int]int{}
	var lastRestart time.Time
	for k := 1; k <= replaced; k++ {
		h := holdConn(t, w.addr, msFor(k))
		if h.gen != k {
			t.Fatalf("before restart %d: a new connection went to generation %d, want %d", k, h.gen, k)
		}
		held[k], pids[k] = h, h.pid
		resp, took := w.restartNoWait()
		lastRestart = time.Now()
		r := resp.Restart
		t.Logf("restart %d: generation %d replaced %d, answered after %s", k, r.Generation, r.Predecessor, took.Round(time.Millisecond))
		if took >= drainTimeout/2 {
			t.Errorf("restart %d took %s to answer, want it at the flip, well before --drain-timeout %s", k, took, drainTimeout)
		}
		if r.Generation != k+1 || r.Predecessor != k || r.Drained {
			t.Errorf("restart %d: %+v, want generation %d replacing %d, not drained yet", k, r, k+1, k)
		}
		st := w.status()
		gs := map[int]supervisor.GenerationStatus{}
		for _, g := range st.Generations {
			gs[g.Generation] = g
		}
		next, ok := gs[k+1]
		if !ok || next.State != supervisor.StateActive || next.Flipped == nil || next.Deadline != nil {
			t.Fatalf("after restart %d: generation %d is %+v, want active, flipped, with no deadline", k, k+1, next)
		}
		g, ok := gs[k]
		if !ok || g.State != supervisor.StateDraining || g.Deadline == nil {
			t.Fatalf("after restart %d: generation %d is %+v, want draining with a deadline; status %+v", k, k, g, st)
		}
		// Its deadline is --drain-timeout after the flip that replaced it
		// (taken just before the successor's Flipped).
		if d := g.Deadline.Sub(*next.Flipped); d > drainTimeout || d < drainTimeout-time.Second {
			t.Errorf("generation %d: deadline %s after its successor's flip, want %s", k, d, drainTimeout)
		}
		deadlines[k] = *g.Deadline
		if st.MaxDraining != maxDraining {
			t.Errorf("status says max_draining %d, want %d", st.MaxDraining, maxDraining)
		}
		waitRequests(t, load, load.Progress().Sent+50) // load on every generation
	}

	// Side by side: every generation replaced after the first is draining
	// at once, each with its own deadline, the newest serving.
	st := w.status()
	var draining []int
	for _, g := range st.Generations {
		if g.State == supervisor.StateDraining {
			draining = append(draining, g.Generation)
			if g.Deadline == nil || !g.Deadline.Equal(deadlines[g.Generation]) {
				t.Errorf("generation %d: deadline %v, want %v as before", g.Generation, g.Deadline, deadlines[g.Generation])
			}
		}
	}
	var b strings.Builder
	st.Write(&b)
	t.Logf("ctl status after %d restarts:\n%s", replaced, b.String())
	for k := 2; k <= replaced; k++ {
		found := false
		for _, n := range draining {
			found = found || n == k
		}
		if !found {
			t.Errorf("after %d restarts, generation %d is not draining; draining: %v", replaced, k, draining)
		}
	}

	// The cap: the oldest was stopped before its deadline, its client cut.
	w.waitOutput("stopping it before its drain deadline")
	if w.logIndex("stopping it before its drain deadline", "generation=1 ") < 0 {
		t.Errorf("the cap stopped another generation than the oldest; output:\n%s", w.out.String())
	}
	held[1].wait(t, time.Minute)
	if held[1].answered(capped) {
		t.Errorf("generation 1 answered its client: the cap did not stop it")
	}
	requireAllGone(t, pids[1])
	if gone := time.Now(); !gone.Before(deadlines[1]) {
		t.Errorf("generation 1 was stopped by the cap at %s, not before its deadline %s", gone, deadlines[1])
	}

	// The middle generations answer their clients while draining, after
	// the later restarts, and end on their own before their deadlines.
	for k := 2; k < replaced; k++ {
		h := held[k]
		h.wait(t, time.Minute)
		if !h.answered(answered) || !h.close {
			t.Errorf("generation %d's client: status %d close=%v %q %v, want its 200 with Connection: close from the draining server",
				k, h.status, h.close, h.body, h.err)
		}
		if !h.at.After(lastRestart) {
			t.Errorf("generation %d answered before the last restart: it did not drain side by side with the others", k)
		}
		requireAllGone(t, pids[k])
		if gone := time.Now(); !gone.Before(deadlines[k]) {
			t.Errorf("generation %d ended at %s, after its deadline %s", k, gone, deadlines[k])
		}
	}

	// The last replaced one keeps its client until its deadline, then is
	// killed; it is gone within a grace after the deadline.
	last := replaced
	const grace = 5 * time.Second
	if until := time.Until(deadlines[last]) - 2*time.Second; until > 0 {
		time.Sleep(until)
		if processGone(pids[last]) {
			t.Errorf("generation %d ended before its deadline, with its client's request in flight", last)
		}
	}
	time.Sleep(time.Until(deadlines[last].Add(grace)))
	if !processGone(pids[last]) {
		t.Errorf("generation %d (pid %d) still runs %s after its deadline", last, pids[last], grace)
	}
	held[last].wait(t, time.Minute)
	if held[last].answered(outlasts) {
		t.Errorf("generation %d answered a request longer than the drain timeout", last)
	}
	waitUntil(t, "rpwrap to log the kill at the deadline", func() bool {
		return w.logIndex("did not stop by its deadline", "generation="+itoa(last)+" ") >= 0
	})

	// ctl restart --wait answers once the predecessor is drained: after
	// its client got its answer, with the predecessor gone.
	const waitMs = 3000
	h := holdConn(t, w.addr, waitMs)
	if h.gen != replaced+1 {
		t.Fatalf("a new connection went to generation %d, want %d", h.gen, replaced+1)
	}
	resp, took := w.callRestart(true)
	answeredAt := time.Now()
	r := resp.Restart
	t.Logf("restart --wait: %+v, answered after %s", *r, took.Round(time.Millisecond))
	if !r.Drained || r.Predecessor != h.gen || r.Drain <= 0 {
		t.Errorf("restart --wait: %+v, want generation %d drained", *r, h.gen)
	}
	if !processGone(h.pid) {
		t.Errorf("restart --wait answered while its predecessor (pid %d) still runs", h.pid)
	}
	select {
	case <-h.done:
	default:
		t.Errorf("restart --wait answered before the predecessor answered its client")
	}
	h.wait(t, time.Minute)
	if !h.answered(waitMs) || h.at.After(answeredAt) {
		t.Errorf("the predecessor's client: %d %q %v at %s, want its answer before restart --wait's at %s", h.status, h.body, h.err, h.at, answeredAt)
	}
	if st := w.status(); st.Restarts != replaced+1 || len(st.Generations) != 1 {
		t.Errorf("at the end: %d restarts, generations %+v; want %d restarts and only the active generation", st.Restarts, st.Generations, replaced+1)
	}

	waitRequests(t, load, load.Progress().Sent+200)
	load.Stop()
	requireNoLoss(t, load.Wait(), 1000)
}
