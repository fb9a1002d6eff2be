//go:build linux

package bpf

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Classic BPF has no flow hash and no map: its canary hashes the source
// port (Fibonacci hashing: the port times 2^32/phi, the top 16 bits), so
// a client retrying from the same port still gets the same answer, and
// the split is a new program attached in one setsockopt. It counts
// nothing: CanaryCounts fails with ErrNotSupported.

// goldenRatio32 is 2^32 divided by the golden ratio, odd.
const goldenRatio32 = 0x9e3779b9

// canarySplit is a cBPF selector's canary: slot and weight (of canaryScale;
// 0 for none).
type canarySplit struct {
	slot   Slot
	weight uint32
}

// canaryIndex is a canary by kernel index, for classicProgram.
type canaryIndex struct {
	index  uint32
	weight uint32
}

// classicCanary is the part of the program that sends the source ports
// (in A) that hash below the weight to the canary's index, and jumps over
// that return otherwise: mul #golden; rsh #16; jge #weight, 1, 0; ret
// #index. No canary: nothing.
func classicCanary(c canaryIndex) []unix.SockFilter {
	if c.weight == 0 {
		return nil
	}
	return []unix.SockFilter{
		stmt(unix.BPF_ALU|unix.BPF_MUL|unix.BPF_K, goldenRatio32),
		stmt(unix.BPF_ALU|unix.BPF_RSH|unix.BPF_K, 16),
		{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, Jt: 1, Jf: 0, K: c.weight},
		ret(c.index),
	}
}

func (s *cbpfSelector) canaryIndexLocked() canaryIndex {
	if s.canary.weight == 0 {
		return canaryIndex{}
	}
	return canaryIndex{index: s.indexLocked(s.canary.slot), weight: s.canary.weight}
}

func (s *cbpfSelector) setCanary(slot Slot, weight uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if weight == 0 {
		if s.closed {
			return ErrClosed
		}
		slot = 0
	} else if err := s.usableLocked(slot); err != nil {
		return fmt.Errorf("send a share of new connections to slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	prev := s.canary
	s.canary = canarySplit{slot: slot, weight: weight}
	if err := s.attachLocked(); err != nil {
		s.canary = prev
		return fmt.Errorf("send a share of new connections to slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	return nil
}

func (s *cbpfSelector) canaryCount() (CanaryCount, error) {
	return CanaryCount{}, fmt.Errorf("count the split of reuseport group %s: %w: a classic BPF program counts nothing", s.group, ErrNotSupported)
}
