//go:build linux

package bpf

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// A canary of 20% gets between 15% and 25% of new connections, by flow
// hash; the program's own counts are exactly what the listeners accepted;
// a share of 0 sends every connection to the active slot again.
func TestCanaryGetsItsShareOfNewConnections(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 4000
	g := newGroup(t, EBPF, "tcp4", "127.0.0.1:0")
	if err := SetCanary(g.sel, g.b, 20); err != nil {
		t.Fatal(err)
	}
	got := dialMany(t, g.addr, n)
	if got['A']+got['B'] != n || got['B'] < n*15/100 || got['B'] > n*25/100 {
		t.Fatalf("canary B at 20%%: clients reached %v, want B between %d and %d of %d", got, n*15/100, n*25/100, n)
	}
	c, err := CanaryCounts(g.sel)
	if err != nil {
		t.Fatal(err)
	}
	if c.Canary != uint64(got['B']) || c.Rest != uint64(got['A']) {
		t.Fatalf("program counted canary %d, rest %d; listeners saw B %d, A %d", c.Canary, c.Rest, got['B'], got['A'])
	}
	t.Logf("canary share measured: %d of %d (%.1f%%)", got['B'], n, c.Share())
	if err := SetCanary(g.sel, g.b, 0); err != nil {
		t.Fatal(err)
	}
	if got := dialMany(t, g.addr, 500); got['A'] != 500 {
		t.Fatalf("canary ended: clients reached %v, want A:500 only", got)
	}
	if err := SetCanary(g.sel, g.b, 100); err != nil {
		t.Fatal(err)
	}
	if got := dialMany(t, g.addr, 500); got['B'] != 500 {
		t.Fatalf("canary at 100%%: clients reached %v, want B:500 only", got)
	}
	if err := g.sel.Remove(g.b); err != nil {
		t.Fatal(err)
	}
	if err := SetCanary(g.sel, g.b, 20); !errors.Is(err, ErrUnknownSlot) {
		t.Fatalf("SetCanary on a removed slot: %v, want ErrUnknownSlot", err)
	}
}

// The classic BPF canary splits by source port: about 20% of the
// connections, a probe route still wins, and it counts nothing.
func TestClassicCanaryGetsItsShareOfNewConnections(t *testing.T) {
	const n = 4000
	g := newGroup(t, CBPF, "tcp4", "127.0.0.1:0")
	if err := SetCanary(g.sel, g.b, 20); err != nil {
		t.Fatal(err)
	}
	got := dialMany(t, g.addr, n)
	if got['A']+got['B'] != n || got['B'] < n*15/100 || got['B'] > n*25/100 {
		t.Fatalf("canary B at 20%%: clients reached %v, want B between %d and %d of %d", got, n*15/100, n*25/100, n)
	}
	t.Logf("classic canary share measured: %d of %d (%.1f%%)", got['B'], n, 100*float64(got['B'])/n)
	if _, err := CanaryCounts(g.sel); !errors.Is(err, ErrNotSupported) {
		t.Errorf("CanaryCounts with cBPF: %v, want ErrNotSupported", err)
	}
	if err := SetCanary(g.sel, g.b, 0); err != nil {
		t.Fatal(err)
	}
	if got := dialMany(t, g.addr, 500); got['A'] != 500 {
		t.Fatalf("canary ended: clients reached %v, want A:500 only", got)
	}
}

// The classic program with probes and a canary: a probe's port gets the
// probe's index whatever its hash, the others the canary's or the
// active's, and the jumps land inside the program.
func TestClassicProgramWithProbesAndCanary(t *testing.T) {
	prog := classicProgram(0, []probeIndex{{port: 40000, index: 2}, {port: 40001, index: 3}}, canaryIndex{index: 1, weight: canaryScale / 5})
	for i, ins := range prog {
		if ins.Code&0x07 == unix.BPF_JMP && ins.Code != unix.BPF_JMP|unix.BPF_JA {
			if t1, t2 := i+1+int(ins.Jt), i+1+int(ins.Jf); t1 >= len(prog) || t2 >= len(prog) {
				t.Fatalf("instruction %d jumps past the end (%d, %d of %d)", i, t1, t2, len(prog))
			}
		}
	}
	if last := prog[len(prog)-1]; last.K != 3 || prog[len(prog)-3].K != 0 || prog[len(prog)-4].K != 1 {
		t.Errorf("returns %v, want ... canary 1, active 0, probes 2, 3", prog[len(prog)-4:])
	}
}
