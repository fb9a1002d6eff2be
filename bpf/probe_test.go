//go:build linux

package bpf

import (
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// dialFrom makes n connections, one after the other, from local.
func dialFrom(t *testing.T, addr string, local *net.TCPAddr, n int) map[byte]int {
	t.Helper()
	counts := map[byte]int{}
	for range n {
		o := dial(addr, local)
		if o.err != nil || o.reset {
			t.Fatalf("probe connection from %s: reset=%v %v", local, o.reset, o.err)
		}
		counts[o.id]++
	}
	return counts
}

func TestProbeRouteReachesItsSlotOnly(t *testing.T) {
	testutil.RequireRoot(t)
	const ordinary, probes = 1000, 100
	for _, f := range flavours {
		for _, fam := range []struct{ network, ip string }{{"tcp4", "127.0.0.1"}, {"tcp6", "::1"}} {
			t.Run(string(f)+"/"+fam.network, func(t *testing.T) {
				g := newGroup(t, f, fam.network, net.JoinHostPort(fam.ip, "0"))
				local := &net.TCPAddr{IP: net.ParseIP(fam.ip), Port: probePort(t, fam.ip)}
				if err := g.sel.SetProbe(uint16(local.Port), g.b); err != nil {
					t.Fatal(err)
				}
				var probed map[byte]int
				var wg sync.WaitGroup
				wg.Go(func() { probed = dialFrom(t, g.addr, local, probes) })
				got := dialMany(t, g.addr, ordinary)
				wg.Wait()
				if got['A'] != ordinary || len(got) != 1 || probed['B'] != probes || len(probed) != 1 {
					t.Fatalf("ordinary clients reached %v (want A:%d), probes %v (want B:%d)", got, ordinary, probed, probes)
				}
				if err := g.sel.ClearProbe(uint16(local.Port)); err != nil {
					t.Fatal(err)
				}
				if probed := dialFrom(t, g.addr, local, 10); probed['A'] != 10 {
					t.Fatalf("after ClearProbe probes reached %v, want A:10", probed)
				}
			})
		}
	}
}

// A probe route through the IPv4 header of a v4-mapped connection to a
// dual-stack [::] group.
func TestProbeRouteOfIPv4ClientInDualStackGroup(t *testing.T) {
	testutil.RequireRoot(t)
	for _, f := range flavours {
		t.Run(string(f), func(t *testing.T) {
			g := newGroup(t, f, "tcp", "[::]:0")
			port := g.la.Addr().(*net.TCPAddr).Port
			local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: probePort(t, "127.0.0.1")}
			if err := g.sel.SetProbe(uint16(local.Port), g.b); err != nil {
				t.Fatal(err)
			}
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			if got := dialMany(t, addr, 100); got['A'] != 100 {
				t.Fatalf("ordinary IPv4 clients reached %v, want A:100", got)
			}
			if probed := dialFrom(t, addr, local, 20); probed['B'] != 20 {
				t.Fatalf("IPv4 probes reached %v, want B:20", probed)
			}
		})
	}
}
