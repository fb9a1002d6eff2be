//go:build linux

package supervisor

import (
	"fmt"
	"io"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
)

// Sockets is the socket view of `rpwrap ctl sockets`: per listener, in
// --listen order, the sockets that rpwrap holds there for each
// generation, with their options as the kernel reports them.
type Sockets struct {
	At        time.Time        `json:"at"`
	Listeners []ListenerSocket `json:"listeners"`
}

// ListenerSocket is one --listen address: its selector and the sockets
// of the generations in its reuseport group.
type ListenerSocket struct {
	Listen     string `json:"listen"`
	Selector   string `json:"selector"`             // ebpf or cbpf
	Program    string `json:"program"`              // "ebpf id 42", "cbpf (classic, no id)"
	ProgramID  uint32 `json:"program_id,omitempty"` // eBPF: bpftool prog show id N
	ActiveSlot uint32 `json:"active_slot"`
	// Generations holds one entry per generation rpwrap still holds a
	// socket for, oldest first.
	Generations []GenerationSocket `json:"generations"`
}

// GenerationSocket is rpwrap's copy of one generation's socket.
type GenerationSocket struct {
	Generation int                   `json:"generation"`
	Pid        int                   `json:"pid"`
	State      State                 `json:"state"`
	Slot       *uint32               `json:"slot,omitempty"` // nil: not in the selector
	Active     bool                  `json:"active"`         // its slot is the active one: new connections land here
	Options    *fdpass.SocketOptions `json:"options,omitempty"`
	Error      string                `json:"error,omitempty"` // why the options could not be read
}

// genSnapshot is what Sockets reads of a generation under s.mu.
type genSnapshot struct {
	g     *generation
	state State
}

// Sockets builds the socket view from a snapshot of the generations taken
// under the lock; the options are read afterwards, with getsockopt on
// rpwrap's own copies, which stay valid (one closed meanwhile is left out).
func (s *Supervisor) Sockets() Sockets {
	s.mu.Lock()
	snap := make([]genSnapshot, 0, len(s.gens))
	for _, g := range s.gens {
		snap = append(snap, genSnapshot{g, g.state})
	}
	s.mu.Unlock()
	view := Sockets{At: time.Now()}
	for i, grp := range s.groups {
		view.Listeners = append(view.Listeners, listenerSocket(i, grp, snap))
	}
	return view
}

// listenerSocket describes group i.
func listenerSocket(i int, grp *group, snap []genSnapshot) ListenerSocket {
	ls := ListenerSocket{Listen: grp.spec.String(), Selector: string(grp.sel.Flavour()), ActiveSlot: uint32(grp.sel.Active())}
	ls.Program = "cbpf (classic, no id)"
	if grp.sel.Flavour() == bpf.EBPF {
		ls.Program = "ebpf (id unknown)"
		if id, ok := bpf.ProgramID(grp.sel); ok {
			ls.ProgramID, ls.Program = id, fmt.Sprintf("ebpf id %d", id)
		}
	}
	for _, gs := range snap {
		if i >= len(gs.g.listeners) || gs.g.listeners[i].Inode() == 0 {
			continue // released: rpwrap holds no copy any more
		}
		sock := GenerationSocket{Generation: gs.g.n, Pid: gs.g.pid, State: gs.state}
		if i < len(gs.g.slots) {
			slot := uint32(gs.g.slots[i])
			sock.Slot, sock.Active = &slot, slot == ls.ActiveSlot
		}
		o, err := fdpass.Options(gs.g.listeners[i])
		if err != nil {
			sock.Error = err.Error()
		} else {
			sock.Options = &o
		}
		ls.Generations = append(ls.Generations, sock)
	}
	return ls
}

// Write prints the view for a human: a block per listener, two lines per
// generation's socket.
func (v Sockets) Write(w io.Writer) {
	for i, l := range v.Listeners {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s  selector %s, active slot %d\n", l.Listen, l.Program, l.ActiveSlot)
		if len(l.Generations) == 0 {
			fmt.Fprintln(w, "  no socket held")
		}
		for _, g := range l.Generations {
			g.write(w)
		}
	}
}

func (g GenerationSocket) write(w io.Writer) {
	slot := "no slot"
	if g.Slot != nil {
		slot = fmt.Sprintf("slot %d", *g.Slot)
		if g.Active {
			slot += " (active)"
		}
	}
	head := fmt.Sprintf("  generation %d (pid %d, %s), %s", g.Generation, g.Pid, g.State, slot)
	o := g.Options
	if o == nil {
		fmt.Fprintf(w, "%s: %s\n", head, g.Error)
		return
	}
	fmt.Fprintf(w, "%s, socket:[%d]\n", head, o.Inode)
	fmt.Fprintf(w, "    %s\n", o)
}
