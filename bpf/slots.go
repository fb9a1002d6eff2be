//go:build linux

package bpf

import (
	"sync"
	"syscall"
)

// slots is the bookkeeping both flavours share: the sockets by slot, the
// active slot, and whether the selector is closed. Methods ending in Locked
// expect mu to be held.
type slots struct {
	mu     sync.Mutex
	group  sockInfo
	conns  map[Slot]syscall.Conn
	cur    Slot
	closed bool
	member membership // Join and Leave, one at a time (membership.go)
}

// usableLocked checks that the selector is open and slot is in use.
func (s *slots) usableLocked(slot Slot) error {
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.conns[slot]; !ok {
		return ErrUnknownSlot
	}
	return nil
}

// Active returns the slot that receives new connections.
func (s *slots) Active() Slot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}
