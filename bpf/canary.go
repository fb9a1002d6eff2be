//go:build linux

package bpf

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// mdHash is the offset of the flow hash in struct sk_reuseport_md
// (include/uapi/linux/bpf.h: data, data_end, len, eth_protocol,
// ip_protocol, bind_inany, then __u32 hash). For TCP it is the kernel's
// hash of the 4-tuple (inet_ehashfn), the one that spreads a group
// without a program: a client that retries from the same port gets the
// same answer.
const mdHash = 32

// canaryScale is what a share of 100% is in the canary map: the route
// compares the low 16 bits of the flow hash with the weight.
const canaryScale = 1 << 16

// The canary map's one value, 24 bytes: the slot that gets the share, the
// share in parts of canaryScale (0: no canary), and what the program
// counted since the value was last written: connections sent to the
// canary slot, and the others (TCP: SYNs only, as the counters).
const (
	canarySlotOff   = 0
	canaryWeightOff = 4
	canaryHitsOff   = 8
	canaryRestOff   = 16
	canaryValueSize = 24
)

// canaryRoute sends a share of the new connections to the canary slot:
// those whose flow hash, low 16 bits, is below the weight. The others, and
// every connection when the weight is 0 or the canary slot holds no live
// socket, go on to the active route.
func canaryRoute(sockets, canary int) asm.Instructions {
	insns := asm.Instructions{
		asm.StoreImm(asm.RFP, stackKey, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, canary),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "active"),
		// R4 is what the counts grow by: 1 for a new connection or a
		// datagram, 0 for a TCP segment other than a SYN (see Counts.Stray).
		asm.Mov.Imm(asm.R4, 1),
	}
	insns = append(insns, newConnection("canary_new", "canary_split", "canary_stray")...)
	insns = append(insns,
		asm.Mov.Imm(asm.R4, 0).WithSymbol("canary_stray"),
		asm.LoadMem(asm.R2, asm.R0, canaryWeightOff, asm.Word).WithSymbol("canary_split"),
		asm.JEq.Imm(asm.R2, 0, "active"),
		asm.LoadMem(asm.R3, asm.R6, mdHash, asm.Word),
		asm.And.Imm(asm.R3, canaryScale-1),
		asm.JGE.Reg(asm.R3, asm.R2, "canary_rest"),
		asm.AddAtomic.Mem(asm.R0, asm.R4, asm.DWord, canaryHitsOff),
		asm.LoadMem(asm.R7, asm.R0, canarySlotOff, asm.Word),
	)
	insns = append(insns, selectSlot(sockets, asm.R7, routeCanary)...)
	return append(insns,
		asm.Ja.Label("active"),
		asm.AddAtomic.Mem(asm.R0, asm.R4, asm.DWord, canaryRestOff).WithSymbol("canary_rest"),
		asm.Ja.Label("active"),
	)
}

// canaryValue encodes the canary map's value.
func canaryValue(slot Slot, weight uint32) []byte {
	b := make([]byte, canaryValueSize)
	binary.NativeEndian.PutUint32(b[canarySlotOff:], uint32(slot))
	binary.NativeEndian.PutUint32(b[canaryWeightOff:], weight)
	return b
}

// CanaryCount is what a selector counted since the canary was set: new
// connections the program sent to the canary slot, and those it passed on
// to the active slot.
type CanaryCount struct {
	Canary uint64 `json:"canary"`
	Rest   uint64 `json:"rest"`
}

// Share is the measured share of the canary in percent, 0 when nothing
// was counted.
func (c CanaryCount) Share() float64 {
	if c.Canary+c.Rest == 0 {
		return 0
	}
	return 100 * float64(c.Canary) / float64(c.Canary+c.Rest)
}

// canarySelector is what a Selector implements when it can split new
// connections between two slots.
type canarySelector interface {
	setCanary(s Slot, weight uint32) error
	canaryCount() (CanaryCount, error)
}

// SetCanary makes sel send about percent% of new connections to slot s,
// and the others to the active slot; percent 0 ends the split: every new
// connection goes to the active slot again. EBPF splits by the kernel's
// hash of the 4-tuple, in one map write that also resets the counts
// CanaryCounts reports; CBPF by a hash of the source port, with a new
// program. Either way a client retrying from the same source port gets
// the same answer. It fails with ErrUnknownSlot for a slot not in use,
// and when percent is not between 0 and 100.
func SetCanary(sel Selector, s Slot, percent float64) error {
	c, ok := sel.(canarySelector)
	if !ok {
		return fmt.Errorf("split new connections: %w by the %s selector (run with --selector ebpf)", ErrNotSupported, sel.Flavour())
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("split new connections: %v%% is not a share between 0 and 100", percent)
	}
	return c.setCanary(s, uint32(percent*canaryScale/100+0.5))
}

// CanaryCounts returns what sel counted since the last SetCanary; it fails
// with an error wrapping ErrNotSupported for a cBPF selector, which counts
// nothing.
func CanaryCounts(sel Selector) (CanaryCount, error) {
	c, ok := sel.(canarySelector)
	if !ok {
		return CanaryCount{}, fmt.Errorf("count the split: %w by the %s selector", ErrNotSupported, sel.Flavour())
	}
	return c.canaryCount()
}

func (s *ebpfSelector) setCanary(slot Slot, weight uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if weight == 0 {
		slot = 0
	} else if err := s.usableLocked(slot); err != nil {
		return fmt.Errorf("send a share of new connections to slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	if s.closed {
		return ErrClosed
	}
	if err := s.canary.Update(uint32(0), canaryValue(slot, weight), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("send a share of new connections to slot %d of reuseport group %s: write canary map: %w", slot, s.group, err)
	}
	return nil
}

func (s *ebpfSelector) canaryCount() (CanaryCount, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return CanaryCount{}, ErrClosed
	}
	var b []byte
	if err := s.canary.Lookup(uint32(0), &b); err != nil {
		return CanaryCount{}, fmt.Errorf("read canary map of reuseport group %s: %w", s.group, err)
	}
	return CanaryCount{
		Canary: binary.NativeEndian.Uint64(b[canaryHitsOff:]),
		Rest:   binary.NativeEndian.Uint64(b[canaryRestOff:]),
	}, nil
}
