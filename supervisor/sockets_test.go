//go:build linux

package supervisor

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
)

// The socket view lists, per listener, each generation whose socket rpwrap
// still holds, oldest first, with its slot and whether it is the active
// one; a generation whose copy was released is left out.
func TestSocketsListsTheGenerationsHoldingASocket(t *testing.T) {
	s, _ := newTestSupervisor(Config{})
	spec, err := fdpass.ParseSpec("tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := func() *fdpass.Listener {
		l, err := fdpass.Listen(spec, 9)
		if err != nil {
			t.Fatal(err)
		}
		spec = l.Spec()
		t.Cleanup(func() { l.Close() })
		return l
	}
	l1 := listen()
	sel, err := bpf.New(l1, bpf.CBPF)
	if err != nil {
		t.Fatal(err)
	}
	defer sel.Close()
	slot1 := sel.Active() // New made l1's slot the active one
	l2, l3 := listen(), listen()
	slot2, err := sel.Add(l2)
	if err != nil {
		t.Fatal(err)
	}
	if err := sel.Activate(slot2); err != nil {
		t.Fatal(err)
	}
	s.groups = []*group{{spec: spec, sel: sel}}
	g1, g2, g3 := s.newTestGeneration(1, StateDraining), s.newTestGeneration(2, StateActive), s.newTestGeneration(3, StateStopped)
	g1.pid, g2.pid, g3.pid = 101, 102, 103
	g1.listeners, g1.slots = []*fdpass.Listener{l1}, []bpf.Slot{slot1}
	g2.listeners, g2.slots = []*fdpass.Listener{l2}, []bpf.Slot{slot2}
	g3.listeners = []*fdpass.Listener{l3}
	l3.Close()

	var b strings.Builder
	v := s.Sockets()
	v.Write(&b)
	out := b.String()
	want := fmt.Sprintf(`%s  selector cbpf (classic, no id), active slot 1
  generation 1 (pid 101, draining), slot 0, socket:[%d]
    SO_REUSEPORT=1 SO_REUSEADDR=1 TCP_DEFER_ACCEPT=0 TCP_FASTOPEN=0 backlog=9 queued=0 `, spec, l1.Inode())
	if !strings.HasPrefix(out, want) {
		t.Errorf("ctl sockets text:\n%s\nwant it to begin with\n%s", out, want)
	}
	if !strings.Contains(out, fmt.Sprintf("  generation 2 (pid 102, active), slot 1 (active), socket:[%d]\n", l2.Inode())) || strings.Contains(out, "generation 3") {
		t.Errorf("ctl sockets text:\n%s\nwant generation 2 active in slot 1 and no generation 3 (released)", out)
	}
	if n := len(v.Listeners[0].Generations); n != 2 {
		t.Errorf("%d generations listed, want 2", n)
	}
}
