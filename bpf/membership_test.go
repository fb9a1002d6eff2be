//go:build linux

package bpf

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// shutdownListener takes a TCP listener out of its group at once, whoever
// else holds it: shutdown(2) with SHUT_RD.
func shutdownListener(l *net.TCPListener) error {
	rc, err := l.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_RD) }); err != nil {
		return err
	}
	return serr
}

// membershipChurn replaces the active socket of a classic group rounds
// times, as restarts do: in each round a new socket joins the group while
// the socket replaced a round earlier leaves it, both at once; then the new
// one is made active and dials connections, each of which must reach it.
// join and leave are the two changes, with their bookkeeping. It returns
// how many of the connections reached another socket.
func membershipChurn(t *testing.T, rounds, dials int,
	join func(sel Selector, listen func() (*net.TCPListener, error)) (*net.TCPListener, Slot, error),
	leave func(sel Selector, l *net.TCPListener, slot Slot) error) (misrouted, total int) {
	first := listenTCP(t, "tcp4", "127.0.0.1:0")
	addr := first.Addr().String()
	sel := newSelector(t, first, CBPF)
	serve(t, first, 0)
	listen := func() (*net.TCPListener, error) {
		l, err := reuseportConfig().Listen(t.Context(), "tcp4", addr)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { l.Close() })
		return l.(*net.TCPListener), nil
	}
	second, slot2, err := join(sel, listen)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, second, 1)
	activate(t, sel, slot2)
	old, oldSlot, cur, curSlot := first, Slot(0), second, slot2
	for r := 2; r < rounds+2; r++ {
		var next *net.TCPListener
		var nextSlot Slot
		var joinErr, leaveErr error
		var wg sync.WaitGroup
		wg.Go(func() { next, nextSlot, joinErr = join(sel, listen) })
		wg.Go(func() { leaveErr = leave(sel, old, oldSlot) })
		wg.Wait()
		if err := errors.Join(joinErr, leaveErr); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		id := byte(r)
		serve(t, next, id)
		activate(t, sel, nextSlot)
		for range dials {
			o := dial(addr, nil)
			switch {
			case o.err != nil || o.reset:
				t.Fatalf("round %d: a connection failed: reset=%v %v", r, o.reset, o.err)
			case o.id != id:
				misrouted++
			}
			total++
		}
		old, oldSlot, cur, curSlot = cur, curSlot, next, nextSlot
	}
	return misrouted, total
}

// The classic selector numbers its sockets as the kernel does only if it
// sees every join and leave in the kernel's order. With Join and Leave,
// sockets that join and leave at once, as a restart's successor and an
// older generation do, keep every new connection on the active socket.
// The control does the same with Add and Remove around the kernel's
// changes (the old way): the numbering goes wrong and connections reach a
// replaced socket.
func TestClassicJoinAndLeaveKeepTheNumberingUnderChurn(t *testing.T) {
	const rounds, dials = 40, 8
	misrouted, total := membershipChurn(t, rounds, dials,
		func(sel Selector, listen func() (*net.TCPListener, error)) (l *net.TCPListener, slot Slot, err error) {
			slot, err = sel.Join(func() (Member, error) {
				l, err = listen()
				return l, err
			})
			return l, slot, err
		},
		func(sel Selector, l *net.TCPListener, slot Slot) error {
			return sel.Leave(slot, func() error {
				return errors.Join(shutdownListener(l), l.Close())
			})
		})
	t.Logf("Join and Leave: %d of %d connections reached a socket other than the active one", misrouted, total)
	if misrouted != 0 {
		t.Errorf("%d of %d connections reached a socket other than the active one, want 0", misrouted, total)
	}
}

func TestClassicAddAndRemoveAroundTheKernelMisnumberUnderChurnControl(t *testing.T) {
	const rounds, dials = 40, 8
	misrouted, total := membershipChurn(t, rounds, dials,
		func(sel Selector, listen func() (*net.TCPListener, error)) (*net.TCPListener, Slot, error) {
			l, err := listen()
			if err != nil {
				return nil, 0, err
			}
			slot, err := sel.Add(l)
			return l, slot, err
		},
		func(sel Selector, l *net.TCPListener, slot Slot) error {
			err := errors.Join(shutdownListener(l), l.Close())
			time.Sleep(time.Millisecond) // as a caller that first checks the socket is gone
			return errors.Join(err, sel.Remove(slot))
		})
	t.Logf("control, Add and Remove: %d of %d connections reached a socket other than the active one", misrouted, total)
	if misrouted == 0 {
		t.Errorf("0 of %d connections reached another socket: the control shows no misnumbering", total)
	}
}
