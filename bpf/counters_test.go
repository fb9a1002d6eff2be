//go:build linux

package bpf

import (
	"errors"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

func counts(t testing.TB, sel Selector) map[Slot]Counts {
	t.Helper()
	c, err := ReadCounters(sel)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The program counts every connection it selects, by slot and route:
// ordinary clients under the active slot, probes under theirs, and the
// fallback scan when the active slot's socket has gone.
func TestCountersCountEachSelectionByRoute(t *testing.T) {
	testutil.RequireRoot(t)
	const ordinary, probes, scanned = 300, 20, 50
	g := newGroup(t, EBPF, "tcp4", "127.0.0.1:0")
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: probePort(t, "127.0.0.1")}
	if err := g.sel.SetProbe(uint16(local.Port), g.b); err != nil {
		t.Fatal(err)
	}
	dialMany(t, g.addr, ordinary)
	dialFrom(t, g.addr, local, probes)
	got := counts(t, g.sel)
	if want := (Counts{Active: ordinary}); got[g.a] != want {
		t.Errorf("slot A: %+v, want %+v", got[g.a], want)
	}
	if want := (Counts{Probe: probes}); got[g.b] != want {
		t.Errorf("slot B: %+v, want %+v", got[g.b], want)
	}
	g.la.Close() // the active slot empties: the scan finds B
	dialMany(t, g.addr, scanned)
	if got := counts(t, g.sel)[g.b]; got != (Counts{Probe: probes, Scan: scanned}) {
		t.Errorf("slot B after A closed: %+v, want probe %d, scan %d", got, probes, scanned)
	}
}

// A request migrating out of a closing listener counts as migrated on the
// slot that takes it, not as a second selection.
func TestCountersCountMigratedRequestsApart(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 100
	var sel Selector
	var b Slot
	inNetNS(t, func() {
		la := listenTCP(t, "tcp4", "127.0.0.1:0")
		lb := listenTCP(t, "tcp4", la.Addr().String())
		sel = newSelector(t, la, EBPF)
		var clients []net.Conn
		for range n {
			c, err := net.Dial("tcp4", la.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
			t.Cleanup(func() { c.Close() })
		}
		waitFor(t, "connections queued on A", func() bool { return acceptQueue(t, la) == n })
		b = add(t, sel, lb)
		activate(t, sel, b)
		la.Close()
		waitFor(t, "connections migrated to B", func() bool { return acceptQueue(t, lb) == n })
	})
	if got := counts(t, sel)[b]; got != (Counts{Migrated: n}) {
		t.Fatalf("slot B: %+v, want %d migrated and nothing else", got, n)
	}
}

// A slot taken again starts from zero.
func TestCountersOfAReusedSlotStartAtZero(t *testing.T) {
	testutil.RequireRoot(t)
	g := newGroup(t, EBPF, "tcp4", "127.0.0.1:0")
	activate(t, g.sel, g.b)
	dialMany(t, g.addr, 10)
	activate(t, g.sel, g.a)
	g.lb.Close()
	if err := g.sel.Remove(g.b); err != nil {
		t.Fatal(err)
	}
	lc := listenTCP(t, "tcp4", g.addr)
	c := add(t, g.sel, lc)
	if c != g.b {
		t.Fatalf("the new socket got slot %d, want the freed slot %d", c, g.b)
	}
	if got := counts(t, g.sel)[c]; got != (Counts{}) {
		t.Fatalf("reused slot: %+v, want zero", got)
	}
}

// UDP: one count per datagram.
func TestCountersCountDatagrams(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 50
	ua := listenUDP(t, "udp4", "127.0.0.1:0")
	sel := newSelector(t, ua, EBPF)
	c, err := net.Dial("udp4", ua.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	for range n {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ua.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
	}
	if got := counts(t, sel)[sel.Active()]; got != (Counts{Active: n}) {
		t.Fatalf("%+v, want %d datagrams on the active slot", got, n)
	}
}

func TestClassicSelectorHasNoCounters(t *testing.T) {
	testutil.RequireRoot(t)
	sel := newSelector(t, listenTCP(t, "tcp4", "127.0.0.1:0"), CBPF)
	if _, err := ReadCounters(sel); !errors.Is(err, ErrNoCounters) || !errors.Is(err, ErrNotSupported) {
		t.Fatalf("ReadCounters of a cBPF selector: %v, want ErrNoCounters", err)
	}
}

// BenchmarkConnectionCounters measures one connection (connect, accept,
// one byte, close) through the eBPF selector, with the program as rpwrap
// loads it and with the same program built without counters.
func BenchmarkConnectionCounters(b *testing.B) {
	testutil.RequireRoot(b)
	for _, withCounters := range []bool{false, true} {
		name := "without"
		if withCounters {
			name = "with"
		}
		b.Run(name, func(b *testing.B) {
			la := listenTCP(b, "tcp4", "127.0.0.1:0")
			lb := listenTCP(b, "tcp4", la.Addr().String())
			sel := newSelector(b, la, EBPF)
			activate(b, sel, add(b, sel, lb))
			if !withCounters {
				replaceProgram(b, sel.(*ebpfSelector), la, -1)
			}
			serve(b, la, 'A')
			serve(b, lb, 'B')
			for b.Loop() {
				if o := dial(la.Addr().String(), nil); o.err != nil || o.reset || o.id != 'B' {
					b.Fatalf("connection failed or misrouted: %+v", o)
				}
			}
			b.StopTimer()
			if c := counts(b, sel)[sel.Active()]; withCounters && c.Active == 0 || !withCounters && c.Active != 0 {
				b.Fatalf("counts %+v with counters %v", c, withCounters)
			}
		})
	}
}

// replaceProgram attaches to l's group the selector program built on s's
// maps with the counters map fd given (-1: none).
func replaceProgram(tb testing.TB, s *ebpfSelector, l *net.TCPListener, counters int) {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "rpwrap_select", Type: ebpf.SkReuseport, AttachType: ebpf.AttachSkReuseportSelectOrMigrate,
		Instructions: selectorProgram(s.sockets.FD(), s.active.FD(), s.probes.FD(), s.canary.FD(), counters, nil),
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		tb.Fatal(err)
	}
	defer prog.Close() // the group holds it once attached
	if err := withFD(l, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, prog.FD())
	}); err != nil {
		tb.Fatal(err)
	}
}
