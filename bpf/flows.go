//go:build linux

package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// FlowMode says how the eBPF selector of a UDP group keeps datagrams of one
// flow on one socket.
type FlowMode string

const (
	// FlowsOff steers every datagram to the active slot: at the flip,
	// every flow moves to the new socket.
	FlowsOff FlowMode = "off"
	// FlowsTuple keeps a flow (source and destination address and port)
	// on the slot that received its first datagram while that slot holds
	// a live socket; new flows go to the active slot.
	FlowsTuple FlowMode = "tuple"
	// FlowsQUIC is FlowsTuple plus QUIC connection IDs: a short-header
	// packet (and a Handshake packet) whose destination connection ID
	// carries a server id set with SetServerID goes to that server's slot,
	// whatever its addresses, so a client that migrates or is rebound by a
	// NAT keeps its generation.
	FlowsQUIC FlowMode = "quic"
)

// ParseFlowMode checks a mode name: off, tuple or quic.
func ParseFlowMode(s string) (FlowMode, error) {
	switch m := FlowMode(s); m {
	case FlowsOff, FlowsTuple, FlowsQUIC:
		return m, nil
	}
	return "", fmt.Errorf("unknown UDP flow mode %q (want tuple, quic or off)", s)
}

// MaxFlows is how many flows the flow table of one UDP group remembers.
// It is an LRU hash: when it is full, placing a new flow evicts the least
// recently used one, whose next datagram is then placed as a new flow (on
// the active slot). At about 100 bytes of kernel memory an entry, a full
// table takes some 6.5 MB.
const MaxFlows = 65536

// flowValue is the flow table's value: the slot and when the program last
// saw a datagram of the flow (bpf_ktime_get_coarse_ns, CLOCK_MONOTONIC_COARSE).
type flowValue struct {
	Slot uint32
	_    uint32
	Seen uint64
}

const flowValueSize = 16

// flowKeySize is the flow table's key: the UDP header's source and
// destination ports as they are on the wire, the IP version (4 or 6), and
// the source and destination addresses (IPv4: 8 bytes, then 24 zeros;
// IPv6: 32 bytes).
const flowKeySize = 40

// Stack of the flow route, below the slots the other routes use.
const (
	flowKey = -56 // flowKeySize bytes: -56 .. -17
	flowVal = -72 // flowValueSize bytes written to the flow table: -72 .. -57
)

// mdEthProtocol is struct sk_reuseport_md's eth_protocol (skb->protocol,
// network byte order).
const mdEthProtocol = 20

// bpfHdrStartNet is BPF_HDR_START_NET for bpf_skb_load_bytes_relative.
const bpfHdrStartNet = 1

// The EtherTypes as eth_protocol holds them: in network byte order in a
// u32 read on this host.
var (
	ethIPv4 = int32(binary.NativeEndian.Uint16([]byte{0x08, 0x00}))
	ethIPv6 = int32(binary.NativeEndian.Uint16([]byte{0x86, 0xdd}))
)

// flowMaps are the maps of the flow routes; a selector without flows has
// none (fds < 0).
type flowMaps struct {
	mode    FlowMode
	flows   *ebpf.Map // LRU_HASH: flow key -> slot
	seen    *ebpf.Map // ARRAY: slot -> when a datagram of a known flow last reached it
	servers *ebpf.Map // HASH: QUIC server id -> slot (quic mode only)
}

// load creates the maps of the mode with newMap (the selector's mapFor: an
// adoption's maps of the same shape are taken as they are).
func (f *flowMaps) load(newMap func(*ebpf.MapSpec) (*ebpf.Map, error)) (err error) {
	if f.mode == FlowsOff || f.mode == "" {
		return nil
	}
	if f.flows, err = newMap(&ebpf.MapSpec{Name: "rpwrap_flows", Type: ebpf.LRUHash, KeySize: flowKeySize, ValueSize: flowValueSize, MaxEntries: MaxFlows}); err != nil {
		return err
	}
	if f.seen, err = newMap(&ebpf.MapSpec{Name: "rpwrap_flow_seen", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: MaxSlots}); err != nil {
		return err
	}
	if f.mode == FlowsQUIC {
		if f.servers, err = newMap(&ebpf.MapSpec{Name: "rpwrap_quic_ids", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: MaxSlots}); err != nil {
			return err
		}
	}
	return nil
}

// objects lists the flow maps for the selector's handover (see objects).
func (f *flowMaps) objects() []object {
	return []object{{name: "rpwrap_flows", m: &f.flows}, {name: "rpwrap_flow_seen", m: &f.seen}, {name: "rpwrap_quic_ids", m: &f.servers}}
}

func (f *flowMaps) free() error {
	return errors.Join(f.flows.Close(), f.seen.Close(), f.servers.Close())
}

// route returns the flow routes of the program, to run before the active
// route; none when flows are off.
func (f *flowMaps) route(sockets, active int) asm.Instructions {
	if f.flows == nil {
		return nil
	}
	var insns asm.Instructions
	if f.servers != nil {
		insns = quicRoute(sockets, f.servers.FD())
	}
	return append(insns, tupleRoute(sockets, active, f.flows.FD(), f.seen.FD())...)
}

// tupleRoute looks the datagram's flow up in the flow table and selects the
// slot found there. A flow it does not know, or whose slot holds no live
// socket any more, it places on the active slot and writes to the table;
// when that fails too it leaves the datagram to the routes after it.
func tupleRoute(sockets, active, flows, seen int) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.DWord).WithSymbol("flow_tuple"),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 4),
		asm.JGT.Reg(asm.R4, asm.R3, "active"),
		asm.LoadMem(asm.R4, asm.R2, 0, asm.Word), // both ports
		asm.StoreMem(asm.RFP, flowKey, asm.R4, asm.Word),
		asm.LoadMem(asm.R4, asm.R6, mdEthProtocol, asm.Word),
		asm.JEq.Imm(asm.R4, ethIPv6, "flow_v6"),
		asm.JNE.Imm(asm.R4, ethIPv4, "active"),
		asm.StoreImm(asm.RFP, flowKey+4, 4, asm.Word),
		asm.Mov.Imm(asm.R4, 0),
		asm.StoreMem(asm.RFP, flowKey+16, asm.R4, asm.DWord),
		asm.StoreMem(asm.RFP, flowKey+24, asm.R4, asm.DWord),
		asm.StoreMem(asm.RFP, flowKey+32, asm.R4, asm.DWord),
	}
	insns = append(insns, loadNet(12, flowKey+8, 8)...) // saddr, daddr
	insns = append(insns,
		asm.JNE.Imm(asm.R0, 0, "active"),
		asm.Ja.Label("flow_lookup"),
		asm.StoreImm(asm.RFP, flowKey+4, 6, asm.Word).WithSymbol("flow_v6"),
	)
	insns = append(insns, loadNet(8, flowKey+8, 32)...)
	insns = append(insns,
		asm.JNE.Imm(asm.R0, 0, "active"),
		asm.LoadMapPtr(asm.R1, flows).WithSymbol("flow_lookup"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, flowKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "flow_new"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.FnKtimeGetCoarseNs.Call(),
		asm.StoreMem(asm.R7, 8, asm.R0, asm.DWord), // the flow's seen
		asm.StoreMem(asm.RFP, flowVal+8, asm.R0, asm.DWord),
		asm.LoadMem(asm.R7, asm.R7, 0, asm.Word),
		asm.StoreMem(asm.RFP, stackKey, asm.R7, asm.Word),
		asm.LoadMapPtr(asm.R1, seen),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "flow_select"),
		asm.LoadMem(asm.R1, asm.RFP, flowVal+8, asm.DWord),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord), // the slot's seen
	)
	sel := selectSlot(sockets, asm.R7, routeFlow)
	sel[0] = sel[0].WithSymbol("flow_select")
	insns = append(insns, sel...)
	return append(insns, placeFlow(sockets, active, flows)...)
}

// placeFlow writes the active slot to the flow table under the key on the
// stack and selects it; if it holds no live socket, it deletes the entry
// again and goes on to the active route. The entry is written before the
// selection so that it names the very slot the datagram went to, even if
// a flip happens in between.
func placeFlow(sockets, active, flows int) asm.Instructions {
	insns := asm.Instructions{
		asm.StoreImm(asm.RFP, stackKey, 0, asm.Word).WithSymbol("flow_new"),
		asm.LoadMapPtr(asm.R1, active),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "active"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word),
		asm.StoreMem(asm.RFP, flowVal, asm.R7, asm.Word),
		asm.StoreImm(asm.RFP, flowVal+4, 0, asm.Word),
		asm.FnKtimeGetCoarseNs.Call(),
		asm.StoreMem(asm.RFP, flowVal+8, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, flows),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, flowKey),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, flowVal),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY
		asm.FnMapUpdateElem.Call(),
	}
	insns = append(insns, selectSlot(sockets, asm.R7, routeActive)...)
	return append(insns,
		asm.LoadMapPtr(asm.R1, flows),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, flowKey),
		asm.FnMapDeleteElem.Call(),
		asm.Ja.Label("active"),
	)
}

// loadNet calls bpf_skb_load_bytes_relative(ctx, off, fp+to, n,
// BPF_HDR_START_NET): n bytes of the IP header from offset off.
func loadNet(off, to, n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, off),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, to),
		asm.Mov.Imm(asm.R4, n),
		asm.Mov.Imm(asm.R5, bpfHdrStartNet),
		asm.FnSkbLoadBytesRelative.Call(),
	}
}

// FlowCounts returns how many flows the flow table of sel's group holds
// for each slot. ok is false when the selector keeps no flows (cBPF, a TCP
// group, flows off) or is closed.
func FlowCounts(sel Selector) (counts map[Slot]int, ok bool) {
	f, is := sel.(interface{ flowCounts() (map[Slot]int, bool) })
	if !is {
		return nil, false
	}
	return f.flowCounts()
}

func (s *ebpfSelector) flowCounts() (map[Slot]int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.flow.flows == nil {
		return nil, false
	}
	counts := map[Slot]int{}
	var k [flowKeySize]byte
	var v flowValue
	it := s.flow.flows.Iterate()
	for it.Next(&k, &v) {
		counts[Slot(v.Slot)]++
	}
	return counts, it.Err() == nil
}

// forgetFlowsLocked deletes the flows of slot from the flow table, so that
// a socket that takes the slot later does not inherit them. A datagram of
// such a flow that comes meanwhile finds the slot empty and is placed as a
// new flow.
func (s *ebpfSelector) forgetFlowsLocked(slot Slot) error {
	if s.flow.flows == nil {
		return nil
	}
	var keys [][flowKeySize]byte
	var k [flowKeySize]byte
	var v flowValue
	it := s.flow.flows.Iterate()
	for it.Next(&k, &v) {
		if Slot(v.Slot) == slot {
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read flow table: %w", err)
	}
	for _, k := range keys {
		if err := s.flow.flows.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete flow of slot %d: %w", slot, err)
		}
	}
	return nil
}

// FlowIdle reports how long ago a datagram of a known flow last reached
// slot in sel's group (the time since boot when none ever did). ok is
// false when sel keeps no flows or is closed. It reads one map entry.
func FlowIdle(sel Selector, slot Slot) (idle time.Duration, ok bool) {
	s, is := sel.(*ebpfSelector)
	if !is {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.flow.seen == nil {
		return 0, false
	}
	var last uint64
	if err := s.flow.seen.Lookup(uint32(slot), &last); err != nil {
		return 0, false
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &now); err != nil {
		return 0, false
	}
	if n := uint64(now.Nano()); n > last {
		idle = time.Duration(n - last)
	}
	return idle, true
}

// Deselect takes slot out of the socket map while its socket stays open
// and the slot stays taken (until Remove): nothing reaches the socket any
// more, and the flows of slot go to the active slot with their next
// datagram. It fails with ErrUnknownSlot, and for the active slot.
func Deselect(sel Selector, slot Slot) error {
	s, is := sel.(*ebpfSelector)
	if !is {
		return fmt.Errorf("deselect slot %d: %w", slot, ErrNotSupported)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(slot); err != nil {
		return fmt.Errorf("deselect slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	if slot == s.cur {
		return fmt.Errorf("deselect slot %d of reuseport group %s: it is the active slot", slot, s.group)
	}
	if err := s.sockets.Delete(uint32(slot)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deselect slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	return nil
}
