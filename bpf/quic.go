//go:build linux

package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// QUIC connection IDs that name their server (FlowsQUIC), in the manner of
// QUIC-LB's plaintext algorithm (draft-ietf-quic-load-balancers):
//
//	byte 0      free for the server (QUIC-LB's first octet: config
//	            rotation bits and length)
//	byte 1      the server id, 1..255, that rpwrap gave the generation
//	bytes 2..   the server's own, random
//
// Every connection ID a server issues must be at least 2 bytes long and
// carry its server id in byte 1. The program reads byte 1 of the
// destination connection ID of short-header packets (1-RTT: the DCID
// starts right after the first byte) and of long-header Handshake packets
// of QUIC version 1 (the DCID follows its length byte at offset 5); an id
// set with SetServerID sends the packet to that slot. Initial and 0-RTT
// packets carry a DCID the client chose, and go by the flow table like any
// other datagram: a new connection lands on the active slot.
const (
	quicIDOffset = 1 // the server id's offset in a connection ID
	stackQUICID  = -76
)

// MaxServerID is the largest QUIC server id; ids are 1..MaxServerID, and 0
// means none.
const MaxServerID = 255

// quicRoute selects the slot named by the server id in a QUIC packet's
// destination connection ID, and goes on to the tuple route when there is
// none, it is unknown, or its slot holds no live socket.
func quicRoute(sockets, servers int) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.DWord).WithSymbol("flow_quic"),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 8+1+quicIDOffset+1),
		asm.JGT.Reg(asm.R4, asm.R3, "flow_tuple"),
		asm.LoadMem(asm.R4, asm.R2, 8, asm.Byte), // the QUIC packet's first byte
		asm.Mov.Reg(asm.R5, asm.R4),
		asm.And.Imm(asm.R5, 0xc0),
		asm.JNE.Imm(asm.R5, 0x40, "flow_quic_long"), // short header: form 0, fixed bit 1
		asm.LoadMem(asm.R4, asm.R2, 8+1+quicIDOffset, asm.Byte),
		asm.Ja.Label("flow_quic_id"),
		asm.And.Imm(asm.R4, 0xf0).WithSymbol("flow_quic_long"),
		asm.JNE.Imm(asm.R4, 0xe0, "flow_tuple"), // long header, fixed bit, type 2: Handshake
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 8+6+quicIDOffset+1),
		asm.JGT.Reg(asm.R4, asm.R3, "flow_tuple"),
		asm.LoadMem(asm.R4, asm.R2, 8+5, asm.Byte), // DCID length
		asm.JLT.Imm(asm.R4, quicIDOffset+1, "flow_tuple"),
		asm.LoadMem(asm.R4, asm.R2, 8+6+quicIDOffset, asm.Byte),
		asm.StoreMem(asm.RFP, stackQUICID, asm.R4, asm.Word).WithSymbol("flow_quic_id"),
		asm.LoadMapPtr(asm.R1, servers),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackQUICID),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "flow_tuple"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word),
	}
	insns = append(insns, selectSlot(sockets, asm.R7, routeFlow)...)
	return append(insns, asm.Ja.Label("flow_tuple"))
}

// ErrNoQUIC is wrapped by SetServerID on a selector that does not route by
// QUIC connection ID.
var ErrNoQUIC = errors.New("selector does not route by QUIC connection ID")

// SetServerID routes QUIC packets whose connection ID carries server id
// id (1..MaxServerID) to slot. It fails with ErrNoQUIC when sel does not
// route QUIC (cBPF, a TCP group, another flow mode), ErrUnknownSlot, or the
// kernel's error.
func SetServerID(sel Selector, id uint8, slot Slot) error {
	s, ok := sel.(*ebpfSelector)
	if !ok || s.flow.servers == nil {
		return fmt.Errorf("route QUIC server id %d: %w", id, ErrNoQUIC)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(slot); err != nil {
		return fmt.Errorf("route QUIC server id %d to slot %d of reuseport group %s: %w", id, slot, s.group, err)
	}
	if id == 0 {
		return fmt.Errorf("route QUIC server id 0 of reuseport group %s: ids are 1..%d", s.group, MaxServerID)
	}
	if err := s.flow.servers.Put(uint32(id), uint32(slot)); err != nil {
		return fmt.Errorf("route QUIC server id %d to slot %d of reuseport group %s: %w", id, slot, s.group, err)
	}
	return nil
}

// ClearServerID removes the route of QUIC server id id; clearing one that
// does not exist, or on a selector without QUIC routes, is not an error.
func ClearServerID(sel Selector, id uint8) error {
	s, ok := sel.(*ebpfSelector)
	if !ok || s.flow.servers == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.flow.servers.Delete(uint32(id)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clear QUIC server id %d of reuseport group %s: %w", id, s.group, err)
	}
	return nil
}

// RoutesQUIC reports whether sel routes QUIC packets by server id.
func RoutesQUIC(sel Selector) bool {
	s, ok := sel.(*ebpfSelector)
	return ok && s.flow.servers != nil
}
