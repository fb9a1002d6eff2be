//go:build linux

package bpf

import (
	"net"
	"os"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// migration is what became of connections queued on a listener that
// closed after the flip.
type migration struct{ acceptedB, gotB, reset, other int }

// closeWithQueue queues n connections on A (active, never accepting),
// flips to B (if flip), closes A and counts what the clients and B see. It runs in a
// network namespace of its own with net.ipv4.tcp_migrate_req set to
// migrateReq, so the sysctl touches no other test.
func closeWithQueue(t *testing.T, f Flavour, migrateReq string, n int, flip bool) migration {
	var (
		sel     Selector
		la, lb  *net.TCPListener
		clients []net.Conn
	)
	inNetNS(t, func() {
		if err := os.WriteFile("/proc/sys/net/ipv4/tcp_migrate_req", []byte(migrateReq), 0); err != nil {
			t.Error(err)
			return
		}
		la = listenTCP(t, "tcp4", "127.0.0.1:0")
		lb = listenTCP(t, "tcp4", la.Addr().String())
		sel = newSelector(t, la, f)
		for range n {
			c, err := net.Dial("tcp4", la.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			clients = append(clients, c)
		}
	})
	waitFor(t, "connections queued on A", func() bool { return acceptQueue(t, la) == n })
	b := add(t, sel, lb)
	if flip {
		activate(t, sel, b)
	}
	la.Close()
	if err := sel.Remove(0); err != nil {
		t.Fatal(err)
	}
	accepted := serve(t, lb, 'B')
	var m migration
	for _, c := range clients {
		switch o := finish(c); {
		case o.reset:
			m.reset++
		case o.err != nil:
			m.other++
		case o.id == 'B':
			m.gotB++
		}
	}
	m.acceptedB = int(accepted.Load())
	return m
}

func TestQueuedConnectionsOfAClosedListenerMigrateToTheActiveSlot(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 200
	for _, req := range []string{"0", "1"} {
		t.Run("tcp_migrate_req="+req, func(t *testing.T) {
			m := closeWithQueue(t, EBPF, req, n, true)
			if m != (migration{acceptedB: n, gotB: n}) {
				t.Fatalf("%+v, want all %d accepted on B and none reset", m, n)
			}
		})
	}
}

// When the active slot's listener closes itself, its queue goes to a live
// slot all the same: the program never drops a migrating request.
func TestQueuedConnectionsOfTheClosedActiveListenerMigrateToALiveSlot(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 200
	if m := closeWithQueue(t, EBPF, "0", n, false); m != (migration{acceptedB: n, gotB: n}) {
		t.Fatalf("%+v, want all %d accepted on B and none reset", m, n)
	}
}

// The classic flavour cannot migrate: the kernel resets the queue of a
// closed listener, or picks by hash with tcp_migrate_req=1 (here B, the
// only member left). The caller drains the queue before closing.
func TestClassicQueuedConnectionsOfAClosedListenerAreResetOrHashed(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 200
	t.Run("tcp_migrate_req=0", func(t *testing.T) {
		if m := closeWithQueue(t, CBPF, "0", n, true); m != (migration{reset: n}) {
			t.Fatalf("%+v, want all %d reset", m, n)
		}
	})
	t.Run("tcp_migrate_req=1", func(t *testing.T) {
		if m := closeWithQueue(t, CBPF, "1", n, true); m != (migration{acceptedB: n, gotB: n}) {
			t.Fatalf("%+v, want all %d hashed to B, the only member left", m, n)
		}
	})
}
