//go:build linux

package bpf

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// receive counts the datagrams c receives until it closes.
func receive(t *testing.T, c *net.UDPConn) *atomic.Int64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 16)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			n.Add(1)
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
	return &n
}

// send sends one datagram from each of n fresh sockets (n source ports),
// or n datagrams from local when it is set. It sends in batches and waits
// until received() has grown by each batch, so that no receive buffer
// overflows on a busy machine.
func send(t *testing.T, to, local *net.UDPAddr, n int, received func() int64) {
	t.Helper()
	const batch = 100
	want := received()
	var c *net.UDPConn
	for i := range n {
		if c == nil || local == nil {
			var err error
			if c, err = net.DialUDP("udp4", local, to); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if want++; i%batch == batch-1 || i == n-1 {
			waitFor(t, "datagrams", func() bool { return received() == want })
		}
	}
}

func TestDatagramsLandOnTheActiveSlot(t *testing.T) {
	testutil.RequireRoot(t)
	const n, probes = 1000, 50
	for _, f := range flavours {
		t.Run(string(f), func(t *testing.T) {
			ua := listenUDP(t, "udp4", "127.0.0.1:0")
			ub := listenUDP(t, "udp4", ua.LocalAddr().String())
			sel := newSelector(t, ua, f)
			b := add(t, sel, ub)
			nA, nB := receive(t, ua), receive(t, ub)
			to := ua.LocalAddr().(*net.UDPAddr)
			local := &net.UDPAddr{IP: to.IP, Port: probePort(t, "127.0.0.1")}
			if err := sel.SetProbe(uint16(local.Port), b); err != nil {
				t.Fatal(err)
			}
			received := func() int64 { return nA.Load() + nB.Load() }
			send(t, to, nil, n, received)
			send(t, to, local, probes, received)
			if nA.Load() != n || nB.Load() != probes {
				t.Fatalf("active A: A got %d, B got %d; want %d and the %d probes", nA.Load(), nB.Load(), n, probes)
			}
			activate(t, sel, b)
			send(t, to, nil, n, received)
			if nA.Load() != n || nB.Load() != n+probes {
				t.Fatalf("active B: A got %d, B got %d in all; want %d and %d", nA.Load(), nB.Load(), n, n+probes)
			}
		})
	}
}
