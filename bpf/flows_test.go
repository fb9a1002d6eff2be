//go:build linux

package bpf

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// echoID answers every datagram c receives with id, until c closes.
func echoID(t testing.TB, c *net.UDPConn, id byte) {
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP([]byte{id}, from)
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
}

// ask sends payload from c and returns the id of the socket that answered.
func ask(t testing.TB, c *net.UDPConn, payload []byte) byte {
	t.Helper()
	buf := make([]byte, 16)
	for range 5 {
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err == nil && n == 1 {
			return buf[0]
		}
	}
	t.Fatalf("no answer to %s", c.LocalAddr())
	return 0
}

func dialUDP(t testing.TB, network string, to net.Addr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP(network, nil, to.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// answers asks once from every client and counts the answers by id.
func answers(t testing.TB, clients []*net.UDPConn) map[byte]int {
	got := map[byte]int{}
	for _, c := range clients {
		got[ask(t, c, []byte("x"))]++
	}
	return got
}

func TestFlowsStayWithTheirSocketUntilItCloses(t *testing.T) {
	testutil.RequireRoot(t)
	for _, fam := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(fam.network, func(t *testing.T) {
			const n = 20
			ua := listenUDP(t, fam.network, fam.addr)
			ub := listenUDP(t, fam.network, ua.LocalAddr().String())
			sel, err := NewWithFlows(ua, EBPF, FlowsTuple)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sel.Close() })
			echoID(t, ua, 'A')
			old := make([]*net.UDPConn, n)
			for i := range old {
				old[i] = dialUDP(t, fam.network, ua.LocalAddr())
			}
			if got := answers(t, old); got['A'] != n {
				t.Fatalf("before the flip: answers %v, want %d from A", got, n)
			}
			b := add(t, sel, ub)
			echoID(t, ub, 'B')
			activate(t, sel, b)
			fresh := make([]*net.UDPConn, n)
			for i := range fresh {
				fresh[i] = dialUDP(t, fam.network, ua.LocalAddr())
			}
			if got := answers(t, fresh); got['B'] != n {
				t.Fatalf("new flows after the flip: answers %v, want %d from B", got, n)
			}
			for range 3 {
				if got := answers(t, old); got['A'] != n {
					t.Fatalf("old flows after the flip: answers %v, want %d from A", got, n)
				}
			}
			counts, ok := FlowCounts(sel)
			if !ok || counts[0] != n || counts[b] != n {
				t.Fatalf("flow counts %v (ok %v), want %d on slot 0 and %d on slot %d", counts, ok, n, n, b)
			}
			ua.Close()
			if err := sel.Remove(0); err != nil {
				t.Fatal(err)
			}
			if got := answers(t, old); got['B'] != n {
				t.Fatalf("old flows after A closed: answers %v, want %d from B", got, n)
			}
			if counts, _ := FlowCounts(sel); counts[0] != 0 || counts[b] != 2*n {
				t.Fatalf("flow counts after A closed %v, want %d on slot %d only", counts, 2*n, b)
			}
		})
	}
}

func TestFlowsOffMovesEveryFlowAtTheFlip(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 20
	for _, f := range []struct {
		flavour Flavour
		mode    FlowMode
	}{{EBPF, FlowsOff}, {CBPF, FlowsTuple}} {
		t.Run(string(f.flavour)+"-"+string(f.mode), func(t *testing.T) {
			ua := listenUDP(t, "udp4", "127.0.0.1:0")
			ub := listenUDP(t, "udp4", ua.LocalAddr().String())
			sel, err := NewWithFlows(ua, f.flavour, f.mode)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sel.Close() })
			echoID(t, ua, 'A')
			old := make([]*net.UDPConn, n)
			for i := range old {
				old[i] = dialUDP(t, "udp4", ua.LocalAddr())
			}
			answers(t, old)
			b := add(t, sel, ub)
			echoID(t, ub, 'B')
			activate(t, sel, b)
			if got := answers(t, old); got['B'] != n {
				t.Fatalf("old flows after the flip: answers %v, want all %d from B", got, n)
			}
			if _, ok := FlowCounts(sel); ok {
				t.Fatal("FlowCounts: ok for a selector without a flow table")
			}
		})
	}
}

func TestQUICServerIDRoutesAcrossAddresses(t *testing.T) {
	testutil.RequireRoot(t)
	ua := listenUDP(t, "udp4", "127.0.0.1:0")
	ub := listenUDP(t, "udp4", ua.LocalAddr().String())
	sel, err := NewWithFlows(ua, EBPF, FlowsQUIC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sel.Close() })
	echoID(t, ua, 'A')
	b := add(t, sel, ub)
	echoID(t, ub, 'B')
	if err := SetServerID(sel, 7, 0); err != nil {
		t.Fatal(err)
	}
	if err := SetServerID(sel, 8, b); err != nil {
		t.Fatal(err)
	}
	activate(t, sel, b)
	short := func(id byte) []byte { return []byte{0x40, 0x00, id, 1, 2, 3, 4, 5, 6, 7} }
	handshake := func(id byte) []byte { return []byte{0xe0, 0, 0, 0, 1, 8, 0x00, id, 1, 2, 3, 4, 5, 6, 0, 0} }
	initial := func(id byte) []byte { return []byte{0xc0, 0, 0, 0, 1, 8, 0x00, id, 1, 2, 3, 4, 5, 6, 0, 0} }
	for _, c := range []struct {
		name    string
		payload []byte
		want    byte
	}{
		{"short header, id of A", short(7), 'A'},
		{"short header, id of B", short(8), 'B'},
		{"short header, unknown id", short(9), 'B'},
		{"handshake, id of A", handshake(7), 'A'},
		{"initial, id of A", initial(7), 'B'},
	} {
		// A fresh socket each time: a new 4-tuple, as after a migration.
		if got := ask(t, dialUDP(t, "udp4", ua.LocalAddr()), c.payload); got != c.want {
			t.Errorf("%s: answered by %c, want %c", c.name, got, c.want)
		}
	}
	if err := ClearServerID(sel, 7); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, dialUDP(t, "udp4", ua.LocalAddr()), short(7)); got != 'B' {
		t.Errorf("cleared id: answered by %c, want B", got)
	}
	if err := SetServerID(newCBPF4(t), 1, 0); err == nil {
		t.Error("SetServerID on a cBPF selector: no error")
	}
}

// newCBPF4 returns a cBPF selector on a fresh UDP socket.
func newCBPF4(t *testing.T) Selector {
	return newSelector(t, listenUDP(t, "udp4", "127.0.0.1:0"), CBPF)
}

func TestDeselectMovesFlowsWhileTheSocketLives(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 20
	ua := listenUDP(t, "udp4", "127.0.0.1:0")
	ub := listenUDP(t, "udp4", ua.LocalAddr().String())
	sel, err := NewWithFlows(ua, EBPF, FlowsTuple)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sel.Close() })
	echoID(t, ua, 'A')
	old := make([]*net.UDPConn, n)
	for i := range old {
		old[i] = dialUDP(t, "udp4", ua.LocalAddr())
	}
	answers(t, old)
	b := add(t, sel, ub)
	echoID(t, ub, 'B')
	activate(t, sel, b)
	if err := Deselect(sel, b); err == nil {
		t.Fatal("Deselect of the active slot: no error")
	}
	answers(t, old)
	idle, ok := FlowIdle(sel, 0)
	if !ok || idle > 10*time.Second {
		t.Fatalf("FlowIdle of slot 0: %v, ok %v; want just seen", idle, ok)
	}
	time.Sleep(100 * time.Millisecond)
	if idle, _ := FlowIdle(sel, 0); idle < 50*time.Millisecond {
		t.Fatalf("FlowIdle after 100ms without datagrams: %v", idle)
	}
	if err := Deselect(sel, 0); err != nil {
		t.Fatal(err)
	}
	if got := answers(t, old); got['B'] != n {
		t.Fatalf("old flows after Deselect: answers %v, want all %d from B", got, n)
	}
	if err := sel.Remove(0); err != nil {
		t.Fatal(err)
	}
}
