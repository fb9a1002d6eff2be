//go:build linux

package bpf

import (
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// BenchmarkActivate measures one flip.
func BenchmarkActivate(b *testing.B) {
	testutil.RequireRoot(b)
	for _, f := range flavours {
		b.Run(string(f), func(b *testing.B) {
			la := listenTCP(b, "tcp4", "127.0.0.1:0")
			sel := newSelector(b, la, f)
			slots := [2]Slot{sel.Active(), add(b, sel, listenTCP(b, "tcp4", la.Addr().String()))}
			i := 0
			for b.Loop() {
				i ^= 1
				if err := sel.Activate(slots[i]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkConnection measures one connection (connect, accept, one byte,
// close) through a group of two listeners, unsteered and steered.
func BenchmarkConnection(b *testing.B) {
	testutil.RequireRoot(b)
	for _, f := range []Flavour{"unsteered", EBPF, CBPF} {
		b.Run(string(f), func(b *testing.B) {
			la := listenTCP(b, "tcp4", "127.0.0.1:0")
			lb := listenTCP(b, "tcp4", la.Addr().String())
			if f != "unsteered" {
				sel := newSelector(b, la, f)
				activate(b, sel, add(b, sel, lb))
			}
			serve(b, la, 'A')
			serve(b, lb, 'B')
			for b.Loop() {
				if o := dial(la.Addr().String(), nil); o.err != nil || o.reset {
					b.Fatalf("connection failed: reset=%v %v", o.reset, o.err)
				}
			}
		})
	}
}
