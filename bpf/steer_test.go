//go:build linux

package bpf

import (
	"net"
	"strconv"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// group is a steered TCP group of two listeners, A (slot a, active) and B
// (slot b), each serving its own id byte.
type group struct {
	sel    Selector
	a, b   Slot
	la, lb *net.TCPListener
	addr   string
	nA, nB func() int64
}

func newGroup(t *testing.T, f Flavour, network, addr string) *group {
	t.Helper()
	la := listenTCP(t, network, addr)
	lb := listenTCP(t, network, la.Addr().String())
	g := &group{la: la, lb: lb, addr: la.Addr().String()}
	g.sel = newSelector(t, la, f)
	g.a, g.b = g.sel.Active(), add(t, g.sel, lb)
	ca, cb := serve(t, la, 'A'), serve(t, lb, 'B')
	g.nA, g.nB = ca.Load, cb.Load
	return g
}

func TestEveryConnectionLandsOnTheActiveSlot(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 10000
	for _, f := range flavours {
		t.Run(string(f), func(t *testing.T) {
			g := newGroup(t, f, "tcp4", "127.0.0.1:0")
			if got := dialMany(t, g.addr, n); got['A'] != n || len(got) != 1 {
				t.Fatalf("active A: clients reached %v, want A:%d only", got, n)
			}
			activate(t, g.sel, g.b)
			if got := dialMany(t, g.addr, n); got['B'] != n || len(got) != 1 {
				t.Fatalf("active B: clients reached %v, want B:%d only", got, n)
			}
			if g.sel.Active() != g.b {
				t.Fatalf("Active() = %d after Activate(%d)", g.sel.Active(), g.b)
			}
			if a, b := g.nA(), g.nB(); a != n || b != n {
				t.Fatalf("listeners accepted A:%d B:%d, want %d each", a, b, n)
			}
		})
	}
}

func TestIPv6GroupIsSteered(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 1000
	for _, f := range flavours {
		t.Run(string(f), func(t *testing.T) {
			g := newGroup(t, f, "tcp6", "[::1]:0")
			if got := dialMany(t, g.addr, n); got['A'] != n || len(got) != 1 {
				t.Fatalf("active A: clients reached %v, want A:%d only", got, n)
			}
			activate(t, g.sel, g.b)
			if got := dialMany(t, g.addr, n); got['B'] != n || len(got) != 1 {
				t.Fatalf("active B: clients reached %v, want B:%d only", got, n)
			}
		})
	}
}

// [::]:P (dual-stack) and 0.0.0.0:P are two groups: IPv4 clients reach
// the IPv4 group while it exists, and the steered IPv6 group after.
func TestWildcardIPv4AndIPv6FormTwoGroups(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 200
	for _, f := range flavours {
		t.Run(string(f), func(t *testing.T) {
			g := newGroup(t, f, "tcp", "[::]:0")
			port := g.la.Addr().(*net.TCPAddr).Port
			activate(t, g.sel, g.b)
			l4 := listenTCP(t, "tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
			if _, err := g.sel.Add(l4); err == nil {
				t.Fatal("Add accepted a 0.0.0.0 listener into the [::] group")
			}
			n4 := serve(t, l4, '4')
			v4, v6 := net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), net.JoinHostPort("::1", strconv.Itoa(port))
			if got := dialMany(t, v4, n); got['4'] != n || len(got) != 1 {
				t.Fatalf("IPv4 clients reached %v, want the 0.0.0.0 listener (4) only", got)
			}
			if got := dialMany(t, v6, n); got['B'] != n || len(got) != 1 {
				t.Fatalf("IPv6 clients reached %v, want B:%d only", got, n)
			}
			l4.Close()
			if got := dialMany(t, v4, n); got['B'] != n || len(got) != 1 {
				t.Fatalf("IPv4 clients without a 0.0.0.0 listener reached %v, want B:%d only", got, n)
			}
			if n4.Load() != n {
				t.Fatalf("0.0.0.0 listener accepted %d, want %d", n4.Load(), n)
			}
		})
	}
}
