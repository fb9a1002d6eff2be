//go:build linux

package main

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// flow is one UDP client socket sending datagrams in lock step (the next
// once the echo of the last came back) to a demo server run with -udp-tag,
// counting which generation answered each.
type flow struct {
	id      int
	c       *net.UDPConn
	mu      sync.Mutex
	sent    int
	lost    int
	answers map[int]int // generation -> datagrams it answered
	first   int         // the generation that answered the first datagram
}

func newFlow(t *testing.T, id int, addr string) *flow {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &flow{id: id, c: c, answers: map[int]int{}}
}

// exchange sends one datagram and waits up to 2s for its echo, skipping
// late echoes of earlier ones.
func (f *flow) exchange(seq int) {
	payload := fmt.Appendf(nil, "flow %d seq %d", f.id, seq)
	f.mu.Lock()
	f.sent++
	f.mu.Unlock()
	if _, err := f.c.Write(payload); err != nil {
		f.count(0)
		return
	}
	buf := make([]byte, 256)
	f.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, err := f.c.Read(buf)
		if err != nil {
			f.count(0)
			return
		}
		rest, ok := bytes.CutPrefix(buf[:n], append(payload, " gen="...))
		if !ok {
			continue // a late echo
		}
		gen, err := strconv.Atoi(string(rest))
		if err != nil {
			gen = -1
		}
		f.count(gen)
		return
	}
}

// count records an answer from gen, or a loss (gen 0).
func (f *flow) count(gen int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen == 0 {
		f.lost++
		return
	}
	if f.first == 0 {
		f.first = gen
	}
	f.answers[gen]++
}

// run exchanges datagrams every interval until stop is closed.
func (f *flow) run(interval time.Duration, stop <-chan struct{}) {
	for seq := 0; ; seq++ {
		f.exchange(seq)
		select {
		case <-stop:
			return
		case <-time.After(interval):
		}
	}
}

// moved is how many of f's answers came from another generation than its
// first.
func (f *flow) moved() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for gen, k := range f.answers {
		if gen != f.first {
			n += k
		}
	}
	return n
}

// udpFlowsAcrossRestarts runs 20 long-lived flows that begin on generation
// 1 through 5 restarts, and after each restart 4 short new flows, and
// returns the long ones and the short ones.
func udpFlowsAcrossRestarts(t *testing.T, listen, mode string) (long, short []*flow) {
	w := startWrapper(t, []string{"--listen", listen, "--selector", "ebpf", "--ready", "notify", "--udp-flows", mode,
		"--udp-flow-idle", "2s", "--drain-timeout", "30s", "--max-draining", "8"}, "-udp-tag", "-udp-linger", "1s")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 20 {
		f := newFlow(t, i, w.addr)
		f.exchange(-1)
		long = append(long, f)
		wg.Go(func() { f.run(10*time.Millisecond, stop) })
	}
	for i := range 5 {
		resp, _ := w.restartNoWait()
		r := resp.Restart
		for j := range 4 {
			f := newFlow(t, 100*(i+1)+j, w.addr)
			for seq := range 10 {
				f.exchange(seq)
			}
			if f.first != r.Generation || f.moved() != 0 || f.lost != 0 {
				t.Errorf("new flow %d after restart %d: answers by generation %v, %d lost; want all 10 from generation %d", f.id, i+1, f.answers, f.lost, r.Generation)
			}
			short = append(short, f)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if mode != "off" {
		st := w.status()
		if g := st.Generations[0]; g.Generation != 1 || len(g.Flows) != 1 || g.Flows[0] != 20 {
			t.Errorf("status: generation %d serves flows %v; want generation 1 serving 20", g.Generation, g.Flows)
		}
	}
	close(stop)
	wg.Wait()
	return long, short
}

// Twenty flows that began on the first generation are answered by it alone
// across five restarts, every datagram, while new flows go to the newest
// generation; the old ones get their stop signal once their flows are idle.
func TestUDPFlowsStayWithTheirGenerationAcrossRestarts(t *testing.T) {
	for _, listen := range []string{"udp://127.0.0.1:0", "udp://[::1]:0"} {
		t.Run(listen, func(t *testing.T) {
			long, _ := udpFlowsAcrossRestarts(t, listen, "tuple")
			sent, lost := 0, 0
			for _, f := range long {
				sent, lost = sent+f.sent, lost+f.lost
				if f.first != 1 || f.moved() != 0 {
					t.Errorf("long flow %d: answers by generation %v; want all from generation 1", f.id, f.answers)
				}
			}
			t.Logf("20 long flows: %d datagrams sent, %d lost", sent, lost)
			if lost != 0 {
				t.Errorf("%d of %d datagrams of the long flows lost", lost, sent)
			}
		})
	}
}

// The control: with --udp-flows off the old flows move to each new
// generation at its flip.
func TestUDPFlowsOffMovesOldFlowsAtTheFlip(t *testing.T) {
	long, _ := udpFlowsAcrossRestarts(t, "udp://127.0.0.1:0", "off")
	moved, total := 0, 0
	for _, f := range long {
		moved += f.moved()
		for _, k := range f.answers {
			total += k
		}
	}
	t.Logf("--udp-flows off: %d of %d answers to the long flows came from a later generation than their first", moved, total)
	if moved == 0 {
		t.Error("no answer to an old flow came from a later generation: the control does not show what the flow table prevents")
	}
}

// Flows that never go idle move to the new generation at half the drain
// timeout, under load, and lose no datagram: the old socket leaves the
// socket map first, and the stop signal (on which the demo server closes
// its socket at once) comes once its receive queue is empty.
func TestUDPFlowsMoveUnderLoadLosingNoDatagram(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "udp://127.0.0.1:0", "--selector", "ebpf", "--ready", "notify", "--drain-timeout", "2s"},
		"-udp-read-delay", "1ms")
	l := startLoads(t, nil, []string{w.addr})
	restartsUnderLoads(t, w, l, 5)
	l.requireNoLoss(300)
	if !strings.Contains(w.out.String(), "its UDP flows are still active at half its drain timeout") {
		t.Error("no generation's flows were moved at half its drain timeout: the test did not move flows under load")
	}
}
