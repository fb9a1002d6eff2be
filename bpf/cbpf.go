//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// cbpfSelector steers by group index: it mirrors the kernel's order of the
// group's members and attaches a new constant program on every change.
type cbpfSelector struct {
	slots
	order  []Slot // order[i] is the slot at kernel index i
	probes map[uint16]Slot
	canary canarySplit // cbpf_canary.go
}

func newCBPF(first syscall.Conn, group sockInfo) (Selector, error) {
	s := &cbpfSelector{
		slots:  slots{group: group, conns: map[Slot]syscall.Conn{0: first}},
		order:  []Slot{0},
		probes: map[uint16]Slot{},
	}
	if err := s.attachLocked(); err != nil {
		return nil, fmt.Errorf("create cBPF reuseport selector on %s: %w", group, err)
	}
	return s, nil
}

func (s *cbpfSelector) Flavour() Flavour { return CBPF }

// Add appends the socket to the mirrored order: the kernel gives a socket
// the next index when it joins the group, so Add must be called in the
// order the sockets joined (listen(2) for TCP, bind(2) for UDP).
func (s *cbpfSelector) Add(sock syscall.Conn) (Slot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	slot, ok := freeSlot(s.conns)
	if !ok {
		return 0, fmt.Errorf("add socket to reuseport group %s: %w: %d sockets", s.group, ErrFull, MaxSlots)
	}
	if err := withFD(sock, func(fd int) error { return checkFD(fd, s.group) }); err != nil {
		return 0, fmt.Errorf("add socket to reuseport group %s: %w", s.group, err)
	}
	s.conns[slot] = sock
	s.order = append(s.order, slot)
	return slot, nil
}

func (s *cbpfSelector) Activate(slot Slot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(slot); err != nil {
		return fmt.Errorf("activate slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	prev := s.cur
	s.cur = slot
	if err := s.attachLocked(); err != nil {
		s.cur = prev
		return fmt.Errorf("activate slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	return nil
}

// Remove mirrors the kernel: the last member moves into the index of the
// one that left (socket(7)).
func (s *cbpfSelector) Remove(slot Slot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(slot); err != nil {
		return fmt.Errorf("remove slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	i := slices.Index(s.order, slot)
	last := len(s.order) - 1
	s.order[i] = s.order[last]
	s.order = s.order[:last]
	delete(s.conns, slot)
	for port, ps := range s.probes {
		if ps == slot {
			delete(s.probes, port)
		}
	}
	if s.canary.slot == slot {
		s.canary = canarySplit{}
	}
	if len(s.conns) == 0 {
		return nil
	}
	if err := s.attachLocked(); err != nil {
		return fmt.Errorf("remove slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	return nil
}

func (s *cbpfSelector) SetProbe(srcPort uint16, slot Slot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(slot); err != nil {
		return fmt.Errorf("route probe port %d to slot %d of reuseport group %s: %w", srcPort, slot, s.group, err)
	}
	prev, had := s.probes[srcPort]
	if !had && len(s.probes) >= MaxProbes {
		return fmt.Errorf("route probe port %d to slot %d of reuseport group %s: %w: %d probe routes", srcPort, slot, s.group, ErrFull, MaxProbes)
	}
	s.probes[srcPort] = slot
	if err := s.attachLocked(); err != nil {
		if had {
			s.probes[srcPort] = prev
		} else {
			delete(s.probes, srcPort)
		}
		return fmt.Errorf("route probe port %d to slot %d of reuseport group %s: %w", srcPort, slot, s.group, err)
	}
	return nil
}

func (s *cbpfSelector) ClearProbe(srcPort uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.probes[srcPort]; !ok {
		return nil
	}
	delete(s.probes, srcPort)
	if err := s.attachLocked(); err != nil {
		return fmt.Errorf("clear probe route of port %d in reuseport group %s: %w", srcPort, s.group, err)
	}
	return nil
}

func (s *cbpfSelector) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	return detachAny(s.conns)
}

// attachLocked replaces the group's program with one built from the
// current state, through the first member that is still in the group.
func (s *cbpfSelector) attachLocked() error {
	prog := classicProgram(s.indexLocked(s.cur), s.probeIndexesLocked(), s.canaryIndexLocked())
	fprog := &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	var errs []error
	for _, slot := range s.order {
		err := withFD(s.conns[slot], func(fd int) error {
			return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, fprog)
		})
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("slot %d: %w", slot, err))
	}
	return fmt.Errorf("attach classic BPF program (SO_ATTACH_REUSEPORT_CBPF) through any member: %w", errors.Join(errs...))
}

// indexLocked returns the kernel index of slot, or 0 when it left.
func (s *cbpfSelector) indexLocked(slot Slot) uint32 {
	return uint32(max(slices.Index(s.order, slot), 0))
}

func (s *cbpfSelector) probeIndexesLocked() []probeIndex {
	var ps []probeIndex
	for port, slot := range s.probes {
		ps = append(ps, probeIndex{port: port, index: s.indexLocked(slot)})
	}
	slices.SortFunc(ps, func(a, b probeIndex) int { return int(a.port) - int(b.port) })
	return ps
}
