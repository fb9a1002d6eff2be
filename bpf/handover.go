//go:build linux

package bpf

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Handover describes a selector for another process, the rpwrap that
// takes over after an in-place upgrade (execve(2)): its flavour, its slots
// and, for eBPF, its kernel objects by name and file descriptor number.
// The descriptors are the selector's own; they must reach the new process
// open (not close-on-exec) and are owned by it afterwards.
type Handover struct {
	Flavour Flavour         `json:"flavour"`
	Active  Slot            `json:"active"`
	Slots   []Slot          `json:"slots"`            // in use
	Order   []Slot          `json:"order,omitempty"`  // cBPF: the slot at each kernel index
	Probes  map[uint16]Slot `json:"probes,omitempty"` // cBPF: probe routes
	Layout  string          `json:"layout,omitempty"` // eBPF: fingerprint of the program's code
	Flows   FlowMode        `json:"flows,omitempty"`  // eBPF, UDP: the flow mode (see NewWithFlows)
	Objects []Object        `json:"objects,omitempty"`
}

// Object is one eBPF kernel object of a selector: the program or a map.
type Object struct {
	Name string `json:"name"`
	FD   int    `json:"fd"`
}

// object is a named field of an ebpfSelector holding a kernel object.
type object struct {
	name string
	prog **ebpf.Program
	m    **ebpf.Map
}

// objects lists every kernel object of the selector: the program and each
// map. It is the one list the handover goes by (Export, Adopt): a new map
// is added here with one line, besides its creation in load and free.
func (s *ebpfSelector) objects() []object {
	all := []object{
		{name: "rpwrap_select", prog: &s.prog},
		{name: "rpwrap_sockets", m: &s.sockets},
		{name: "rpwrap_active", m: &s.active},
		{name: "rpwrap_probes", m: &s.probes},
		{name: "rpwrap_canary", m: &s.canary},
		{name: "rpwrap_counters", m: &s.counters},
	}
	return append(all, s.flow.objects()...)
}

// absent reports whether o is a map this selector does not have (the flow
// maps of a TCP group, or before load).
func (o object) absent() bool { return o.m != nil && *o.m == nil }

func (o object) fd() int {
	if o.prog != nil {
		return (*o.prog).FD()
	}
	return (*o.m).FD()
}

// layoutOf fingerprints a program's code, map references left out (their
// fds differ from one load to the next): two selectors with the same
// layout run the same program on maps of the same names.
func layoutOf(insns asm.Instructions) string {
	h := sha256.New()
	for _, ins := range insns {
		if ins.IsLoadFromMap() {
			ins.Constant = 0
		}
		fmt.Fprintf(h, "%v;", ins)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Export describes sel for Adopt in another process. The descriptors it
// names stay the selector's: they are valid while sel is open. It fails on
// a closed selector or one of an unknown kind.
func Export(sel Selector) (Handover, error) {
	switch s := sel.(type) {
	case *ebpfSelector:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return Handover{}, ErrClosed
		}
		h := Handover{Flavour: EBPF, Active: s.cur, Slots: slotsOf(s.conns), Layout: s.layout, Flows: s.flow.mode}
		for _, o := range s.objects() {
			if !o.absent() {
				h.Objects = append(h.Objects, Object{Name: o.name, FD: o.fd()})
			}
		}
		return h, nil
	case *cbpfSelector:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return Handover{}, ErrClosed
		}
		return Handover{Flavour: CBPF, Active: s.cur, Slots: slotsOf(s.conns), Order: slices.Clone(s.order), Probes: clonePorts(s.probes)}, nil
	}
	return Handover{}, fmt.Errorf("hand over selector: unknown kind %T", sel)
}

func slotsOf(conns map[Slot]syscall.Conn) []Slot {
	var ss []Slot
	for s := range conns {
		ss = append(ss, s)
	}
	slices.Sort(ss)
	return ss
}

func clonePorts(m map[uint16]Slot) map[uint16]Slot {
	c := make(map[uint16]Slot, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Adopt takes over the selector h describes, in the process its
// descriptors were passed to, with conns the sockets of its slots. A slot
// of h.Slots without a socket in conns is one whose socket was let go of:
// eBPF forgets it, cBPF (whose kernel indices depend on it) fails. An
// empty Layout makes it load its own program whatever the layout. The program keeps steering the group throughout. When
// this binary's program is the one h names (same layout, every object
// present), Adopt keeps the program and maps as they are (reloaded reports
// false); otherwise it loads its own, fills the socket and active maps from
// conns and h, copies the entries of every other map the two have in
// common, and attaches it with SO_ATTACH_REUSEPORT_EBPF, which replaces the
// old program for the whole group at once (reloaded reports true). Adopt
// owns h's descriptors from the call on, and closes those it does not keep,
// on error too.
func Adopt(h Handover, conns map[Slot]syscall.Conn) (_ Selector, reloaded bool, err error) {
	byName := map[string]int{}
	for _, o := range h.Objects {
		byName[o.Name] = o.FD
	}
	defer func() {
		for _, fd := range byName {
			unix.Close(fd)
		}
	}()
	var first syscall.Conn
	for _, c := range conns {
		first = c
	}
	if first == nil {
		return nil, false, errors.New("adopt selector: it has no socket")
	}
	info, err := inspect(first)
	if err != nil {
		return nil, false, fmt.Errorf("adopt selector: %w", err)
	}
	switch h.Flavour {
	case CBPF:
		for _, slot := range h.Order {
			if conns[slot] == nil {
				return nil, false, fmt.Errorf("adopt cBPF selector on %s: no socket for slot %d of the group's order", info, slot)
			}
		}
		return &cbpfSelector{slots: slots{group: info, conns: conns, cur: h.Active}, order: slices.Clone(h.Order), probes: clonePorts(h.Probes)}, false, nil
	case EBPF:
		sel, reloaded, err := adoptEBPF(&ebpfSelector{slots: slots{group: info, conns: conns, cur: h.Active}, flow: flowMaps{mode: h.Flows}}, h, byName)
		if err == nil {
			sel.(*ebpfSelector).dropMissing(h.Slots)
		}
		return sel, reloaded, err
	}
	return nil, false, fmt.Errorf("adopt selector: unknown flavour %q", h.Flavour)
}

// adoptEBPF keeps or replaces the objects in byName (see Adopt); the
// descriptors in byName stay the caller's.
func adoptEBPF(s *ebpfSelector, h Handover, byName map[string]int) (_ Selector, reloaded bool, err error) {
	s.presets = map[string]*ebpf.Map{}
	defer func() {
		for _, m := range s.presets { // handed over, not taken
			m.Close()
		}
		s.presets = nil
	}()
	for _, o := range s.objects() {
		if fd, ok := byName[o.name]; ok && o.m != nil {
			m, err := mapFromFD(fd)
			if err != nil {
				return nil, false, fmt.Errorf("adopt eBPF selector on %s: map %s: %w", s.group, o.name, err)
			}
			s.presets[o.name] = m
		}
	}
	if err := s.load(); err != nil { // takes the presets that fit
		s.free()
		return nil, false, fmt.Errorf("adopt eBPF selector on %s: %w", s.group, err)
	}
	_, hasProg := byName["rpwrap_select"]
	if s.layout == h.Layout && hasProg && s.allPreset(byName) {
		p, err := programFromFD(byName["rpwrap_select"])
		if err != nil {
			s.free()
			return nil, false, fmt.Errorf("adopt eBPF selector on %s: %w", s.group, err)
		}
		s.prog.Close()
		s.prog = p // the program attached to the group all along
		return s, false, nil
	}
	if err := s.refill(byName); err != nil {
		s.free()
		return nil, true, fmt.Errorf("adopt eBPF selector on %s with a program of its own: %w", s.group, err)
	}
	return s, true, nil
}

// mapFor returns the map spec describes: the one of that name an adoption
// passed, when it has the same shape, else a new one.
func (s *ebpfSelector) mapFor(spec *ebpf.MapSpec) (*ebpf.Map, error) {
	if m := s.presets[spec.Name]; m != nil && m.Type() == spec.Type && m.KeySize() == spec.KeySize &&
		m.ValueSize() == spec.ValueSize && m.MaxEntries() == spec.MaxEntries {
		delete(s.presets, spec.Name)
		s.taken = append(s.taken, spec.Name)
		return m, nil
	}
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create %s map %s: %w", spec.Type, spec.Name, err)
	}
	return m, nil
}

// allPreset reports whether load took every map of the selector from the
// ones passed.
func (s *ebpfSelector) allPreset(byName map[string]int) bool {
	for _, o := range s.objects() {
		if o.m != nil && !o.absent() && !slices.Contains(s.taken, o.name) {
			return false
		}
	}
	return true
}

func mapFromFD(fd int) (*ebpf.Map, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	m, err := ebpf.NewMapFromFD(dup)
	if err != nil {
		unix.Close(dup)
	}
	return m, err
}

func programFromFD(fd int) (*ebpf.Program, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	p, err := ebpf.NewProgramFromFD(dup)
	if err != nil {
		unix.Close(dup)
	}
	return p, err
}

// refill completes the maps load created afresh (the socket map from the
// sockets, the others from the passed maps of the same name and shape) and
// attaches the freshly loaded program, which replaces the old one for the
// whole group at once.
func (s *ebpfSelector) refill(byName map[string]int) error {
	if !slices.Contains(s.taken, "rpwrap_sockets") {
		for slot, c := range s.conns {
			if err := withFD(c, func(fd int) error { return s.sockets.Update(uint32(slot), uint64(fd), ebpf.UpdateAny) }); err != nil {
				return fmt.Errorf("put slot %d in the socket map (a socket is in one socket map at a time): %w", slot, err)
			}
		}
	}
	for _, o := range s.objects() {
		fd, ok := byName[o.name]
		if !ok || o.m == nil || o.absent() || slices.Contains(s.taken, o.name) || (*o.m).Type() == ebpf.ReusePortSockArray {
			continue
		}
		if err := copyMap(*o.m, fd); err != nil {
			return fmt.Errorf("copy map %s: %w", o.name, err)
		}
	}
	if err := s.active.Put(uint32(0), uint32(s.cur)); err != nil {
		return fmt.Errorf("write active map: %w", err)
	}
	var errs []error
	for _, c := range s.conns {
		err := withFD(c, func(fd int) error {
			return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, s.prog.FD())
		})
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("attach eBPF program to reuseport group %s (SO_ATTACH_REUSEPORT_EBPF): %w", s.group, errors.Join(errs...))
}

// copyMap copies every entry of the map at fd (not closed) into dst when
// both have the same type and sizes; a map that changed shape, or holds
// per-CPU values, is left as freshly loaded.
func copyMap(dst *ebpf.Map, fd int) error {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	src, err := ebpf.NewMapFromFD(dup)
	if err != nil {
		unix.Close(dup)
		return err
	}
	defer src.Close()
	if src.Type() != dst.Type() || src.KeySize() != dst.KeySize() || src.ValueSize() != dst.ValueSize() {
		return nil
	}
	switch src.Type() {
	case ebpf.PerCPUArray, ebpf.PerCPUHash, ebpf.LRUCPUHash:
		return nil // per-CPU values: counters start again from zero
	}
	key, val := make([]byte, src.KeySize()), make([]byte, src.ValueSize())
	it := src.Iterate()
	for it.Next(&key, &val) {
		if err := dst.Put(key, val); err != nil {
			return err
		}
	}
	return it.Err()
}

// Forget closes sel's own descriptors without detaching its program from
// the group: for a take-over that failed, whose previous owner still
// steers the group through the same objects.
func Forget(sel Selector) {
	if s, ok := sel.(*ebpfSelector); ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed {
			s.closed = true
			s.free()
		}
	}
}

// dropMissing empties the map entries of the slots in slots whose socket
// rpwrap let go of just before the hand-over (a drain's last step): the
// kernel empties such a slot itself once the socket's last holder closes.
func (s *ebpfSelector) dropMissing(slots []Slot) {
	for _, slot := range slots {
		if s.conns[slot] == nil {
			s.sockets.Delete(uint32(slot))
		}
	}
}
