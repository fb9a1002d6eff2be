//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
)

// A Member is a socket of a group as Join sees it: one that can be closed
// again when it cannot be added.
type Member interface {
	syscall.Conn
	Close() error
}

// membership orders the changes of a group's members. The kernel numbers
// a group's sockets in the order they joined and moves the last one into
// the place of one that leaves (socket(7)); the classic selector mirrors
// that numbering. Were a socket to join while another leaves, between the
// kernel's change and the mirror's, the mirror would number them the other
// way round, and every new connection would go to the wrong socket until
// the next change. Join and Leave make each change and its mirroring one
// step; they are the same for both flavours, so that callers need not
// know which they have.
type membership struct{ mu sync.Mutex }

// join runs fn, which makes a socket join the group, and adds the socket
// with add, as one step. A socket that cannot be added is closed again in
// the same step: it joined last, so its leaving moves no other.
func (m *membership) join(add func(syscall.Conn) (Slot, error), fn func() (Member, error)) (Slot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sock, err := fn()
	if err != nil {
		return 0, err
	}
	slot, err := add(sock)
	if err != nil {
		if cerr := sock.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close the socket that could not be added: %w", cerr))
		}
		return 0, err
	}
	return slot, nil
}

// leave runs fn, which takes slot's socket out of the group, and removes
// the slot with remove right after, as one step. When fn fails the socket
// is taken to be still in the group, and its slot stays.
func (m *membership) leave(remove func(Slot) error, slot Slot, fn func() error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := fn(); err != nil {
		return fmt.Errorf("take slot %d out of its group: %w", slot, err)
	}
	return remove(slot)
}

func (s *cbpfSelector) Join(fn func() (Member, error)) (Slot, error) {
	return s.member.join(s.Add, fn)
}

func (s *cbpfSelector) Leave(slot Slot, fn func() error) error {
	return s.member.leave(s.Remove, slot, fn)
}

func (s *ebpfSelector) Join(fn func() (Member, error)) (Slot, error) {
	return s.member.join(s.Add, fn)
}

func (s *ebpfSelector) Leave(slot Slot, fn func() error) error {
	return s.member.leave(s.Remove, slot, fn)
}
