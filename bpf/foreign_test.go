//go:build linux

package bpf

import (
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// A socket of the same uid that joins the group without the selector gets
// nothing from the eBPF flavour: selection is by map, not by group index.
func TestForeignMemberGetsNoConnection(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 1000
	la := listenTCP(t, "tcp4", "127.0.0.1:0")
	sel := newSelector(t, la, EBPF)
	foreign := listenTCP(t, "tcp4", la.Addr().String())
	lb := listenTCP(t, "tcp4", la.Addr().String())
	b := add(t, sel, lb)
	nA, nF, nB := serve(t, la, 'A'), serve(t, foreign, 'F'), serve(t, lb, 'B')
	if got := dialMany(t, la.Addr().String(), n); got['A'] != n || len(got) != 1 {
		t.Fatalf("active A: clients reached %v, want A:%d only", got, n)
	}
	activate(t, sel, b)
	if got := dialMany(t, la.Addr().String(), n); got['B'] != n || len(got) != 1 {
		t.Fatalf("active B: clients reached %v, want B:%d only", got, n)
	}
	if nA.Load() != n || nB.Load() != n || nF.Load() != 0 {
		t.Fatalf("accepted A:%d B:%d foreign:%d, want %d, %d, 0", nA.Load(), nB.Load(), nF.Load(), n, n)
	}
}

// The classic flavour steers by group index and cannot see a foreign
// member: one that joined before B takes B's index, so activating B sends
// every connection to the foreign socket.
func TestClassicForeignMemberTakesTheIndexOfTheNextSocket(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 1000
	la := listenTCP(t, "tcp4", "127.0.0.1:0")
	sel := newSelector(t, la, CBPF)
	foreign := listenTCP(t, "tcp4", la.Addr().String())
	lb := listenTCP(t, "tcp4", la.Addr().String())
	b := add(t, sel, lb)
	serve(t, la, 'A')
	serve(t, foreign, 'F')
	serve(t, lb, 'B')
	if got := dialMany(t, la.Addr().String(), n); got['A'] != n || len(got) != 1 {
		t.Fatalf("active A: clients reached %v, want A:%d only", got, n)
	}
	activate(t, sel, b)
	if got := dialMany(t, la.Addr().String(), n); got['F'] != n || len(got) != 1 {
		t.Fatalf("active B: clients reached %v, want the foreign socket (F):%d only", got, n)
	}
}
