//go:build linux

package bpf

import (
	"errors"
	"net"
	"testing"
	"time"

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
// one byte, close) through the eBPF selector with the program as rpwrap
// loads it and with the same program built without counters, alternating
// between two groups connection by connection so that both see the same
// machine. It reports the wall time of a connection of each and, from the
// kernel's BPF statistics (BPF_ENABLE_STATS, for this benchmark only), the
// time one run of each program takes.
func BenchmarkConnectionCounters(b *testing.B) {
	testutil.RequireRoot(b)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run time statistics: %v", err)
	}
	defer stats.Close()
	type side struct {
		addr string
		prog *ebpf.Program
		sel  Selector
		wall time.Duration
	}
	setup := func(withCounters bool) *side {
		la := listenTCP(b, "tcp4", "127.0.0.1:0")
		lb := listenTCP(b, "tcp4", la.Addr().String())
		sel := newSelector(b, la, EBPF)
		activate(b, sel, add(b, sel, lb))
		s := &side{addr: la.Addr().String(), prog: sel.(*ebpfSelector).prog, sel: sel}
		if !withCounters {
			s.prog = replaceProgram(b, sel.(*ebpfSelector), la, -1)
		}
		serve(b, la, 'A')
		serve(b, lb, 'B')
		return s
	}
	// The side set up first was faster by up to 2x in wall time, whichever
	// it was: take turns from one run (-count) to the next.
	var with, without *side
	if counterBenchRuns++; counterBenchRuns%2 == 1 {
		with, without = setup(true), setup(false)
	} else {
		without, with = setup(false), setup(true)
	}
	before := map[*side]*ebpf.ProgramStats{}
	for _, s := range []*side{without, with} {
		st, err := s.prog.Stats()
		if err != nil {
			b.Fatal(err)
		}
		before[s] = st
	}
	n := 0
	for b.Loop() {
		order := []*side{without, with}
		if n%2 == 1 {
			order[0], order[1] = with, without
		}
		for _, s := range order {
			t := time.Now()
			if o := dial(s.addr, nil); o.err != nil || o.reset || o.id != 'B' {
				b.Fatalf("connection failed or misrouted: %+v", o)
			}
			s.wall += time.Since(t)
		}
		n++
	}
	b.StopTimer()
	for name, s := range map[string]*side{"without": without, "with": with} {
		st, err := s.prog.Stats()
		if err != nil {
			b.Fatal(err)
		}
		runs := st.RunCount - before[s].RunCount
		if runs < uint64(n) {
			b.Fatalf("%s counters: the program ran %d times for %d connections", name, runs, n)
		}
		b.ReportMetric(float64(s.wall.Nanoseconds())/float64(n), name+"-ns/conn")
		b.ReportMetric(float64((st.Runtime-before[s].Runtime).Nanoseconds())/float64(runs), name+"-prog-ns/run")
	}
	if c := counts(b, with.sel)[with.sel.Active()]; c.Active < uint64(n) {
		b.Fatalf("with counters: %+v for %d connections", c, n)
	}
	if c := counts(b, without.sel)[without.sel.Active()]; c.Active != 0 {
		b.Fatalf("without counters: %+v, want nothing counted", c)
	}
	b.ReportMetric(0, "ns/op")
}

// counterBenchRuns counts the runs of BenchmarkConnectionCounters.
var counterBenchRuns int

// replaceProgram attaches to l's group the selector program built on s's
// maps with the counters map fd given (-1: none), and returns it; it is
// closed at the end of the benchmark.
func replaceProgram(tb testing.TB, s *ebpfSelector, l *net.TCPListener, counters int) *ebpf.Program {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "rpwrap_select", Type: ebpf.SkReuseport, AttachType: ebpf.AttachSkReuseportSelectOrMigrate,
		Instructions: selectorProgram(s.sockets.FD(), s.active.FD(), s.probes.FD(), s.canary.FD(), counters, nil),
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { prog.Close() })
	if err := withFD(l, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, prog.FD())
	}); err != nil {
		tb.Fatal(err)
	}
	return prog
}
