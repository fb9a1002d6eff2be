//go:build linux

package bpf

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// route names the step of the eBPF program that selected a socket; the
// counters map has one entry per slot and route.
type route int32

// The routes counted, in the order of the counters map's entries of a slot.
// A new route of the program gets a constant here, before numRoutes, and a
// field in Counts.
const (
	routeProbe   route = iota // the probes map, by source port
	routeActive               // the active map
	routeScan                 // the scan of every slot, when the active one is empty
	routeCanary               // the canary's share of new connections (canary.go)
	routeFlow                 // a datagram of a UDP flow the flow table, or its QUIC connection ID, placed before (flows.go)
	routeMigrate              // a request migrating out of a closing listener, whatever route picked it
	routeStray                // a TCP segment without SYN looked up against the listeners (see Counts.Stray)
	numRoutes
)

// stackCounter is the u32 key of the counters map on the program's stack.
const stackCounter = -12

const (
	mdIPProtocol = 24 // __u32 ip_protocol of struct sk_reuseport_md
	ipprotoTCP   = 6  // IPPROTO_TCP
	tcpFlagsOff  = 13 // the flags byte of the TCP header (RFC 9293)
	tcpSYN       = 0x02
	tcpACK       = 0x10
)

// label is the instruction that counts a selection made by r.
func (r route) label() string { return fmt.Sprintf("ctr_route_%d", r) }

// Counts is what the eBPF program selected for one slot since the socket
// there was added: new connections (TCP) or datagrams (UDP), by the route
// that chose the slot. Migrated counts the requests migrating out of a
// closing listener of the group that were given to this slot (TCP, Linux
// 5.14's SELECT_OR_MIGRATE); they are not in the other three, and they were
// counted once already when their SYN came.
type Counts struct {
	Probe    uint64 `json:"probe"`    // readiness probes, steered by source port
	Active   uint64 `json:"active"`   // the active slot
	Scan     uint64 `json:"scan"`     // fallback: the active slot was empty, the first live one was taken
	Canary   uint64 `json:"canary"`   // the canary's share, while a canary runs
	Flow     uint64 `json:"flow"`     // UDP: datagrams of flows the slot already held
	Migrated uint64 `json:"migrated"` // requests handed over from a closing listener
	// Stray counts TCP segments other than a SYN that the kernel looked up
	// against the listeners: a segment that races the handshake it belongs
	// to (the kernel found neither the request nor the new connection for
	// an instant) or arrives for a connection that is gone. They are no new
	// connections, and not in Steered.
	Stray uint64 `json:"stray"`
}

// Steered is every new connection or datagram the slot was given: Probe,
// Active, Scan, Canary and Flow, not Migrated.
func (c Counts) Steered() uint64 { return c.Probe + c.Active + c.Scan + c.Canary + c.Flow }

// Add returns the sum of c and d.
func (c Counts) Add(d Counts) Counts {
	return Counts{c.Probe + d.Probe, c.Active + d.Active, c.Scan + d.Scan, c.Canary + d.Canary, c.Flow + d.Flow, c.Migrated + d.Migrated, c.Stray + d.Stray}
}

// ErrNoCounters is wrapped by Counters for a cBPF selector: a classic
// program has no maps, so the kernel counts nothing per socket for it.
var ErrNoCounters = fmt.Errorf("%w: a classic BPF selector keeps no counters", ErrNotSupported)

// ReadCounters returns the counts of every slot in use in sel. It fails with
// an error wrapping ErrNoCounters for a cBPF selector, ErrClosed after
// Close, or the kernel's error from reading the map.
func ReadCounters(sel Selector) (map[Slot]Counts, error) {
	c, ok := sel.(interface {
		Counters() (map[Slot]Counts, error)
	})
	if !ok {
		return nil, ErrNoCounters
	}
	return c.Counters()
}

// Counters returns the counts of every slot in use, summed over the CPUs.
func (s *ebpfSelector) Counters() (map[Slot]Counts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	out := make(map[Slot]Counts, len(s.conns))
	for slot := range s.conns {
		c, err := s.countsLocked(slot)
		if err != nil {
			return nil, err
		}
		out[slot] = c
	}
	return out, nil
}

// countsLocked reads the entries of one slot.
func (s *ebpfSelector) countsLocked(slot Slot) (Counts, error) {
	var sums [numRoutes]uint64
	for r := range numRoutes {
		var perCPU []uint64
		if err := s.counters.Lookup(counterKey(slot, r), &perCPU); err != nil {
			return Counts{}, fmt.Errorf("read counters of slot %d of reuseport group %s: %w", slot, s.group, err)
		}
		for _, v := range perCPU {
			sums[r] += v
		}
	}
	return Counts{Probe: sums[routeProbe], Active: sums[routeActive], Scan: sums[routeScan], Canary: sums[routeCanary], Flow: sums[routeFlow],
		Migrated: sums[routeMigrate], Stray: sums[routeStray]}, nil
}

// resetCountersLocked zeroes a slot's entries before a socket takes it, so
// that its counts start from nothing when the slot is reused.
func (s *ebpfSelector) resetCountersLocked(slot Slot) error {
	zero := make([]uint64, ebpf.MustPossibleCPU())
	for r := range numRoutes {
		if err := s.counters.Put(counterKey(slot, r), zero); err != nil {
			return fmt.Errorf("reset counters of slot %d: %w", slot, err)
		}
	}
	return nil
}

func counterKey(slot Slot, r route) uint32 { return uint32(slot)*uint32(numRoutes) + uint32(r) }

// newCounters creates the PERCPU_ARRAY of u64 counters, one per slot and
// route: no atomic operation is needed on the data path. An adoption's
// counters map of the same shape is taken as it is.
func (s *ebpfSelector) newCounters() (*ebpf.Map, error) {
	return s.mapFor(&ebpf.MapSpec{Name: "rpwrap_counters", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8,
		MaxEntries: MaxSlots * uint32(numRoutes)})
}

// countRoutes is placed after the program's return: selectSlot jumps to
// the label of its route when bpf_sk_select_reuseport succeeded, and the
// code here adds one to counters[slot*numRoutes+route], the slot read back
// from stackSlot, then returns SK_PASS. A migrating request (migrating_sk
// set) counts under routeMigrate. With counters < 0 (no map) every label
// just jumps to "pass"; that program is the baseline of the counters'
// benchmark. Only the labels in used are emitted.
func countRoutes(counters int, used map[string]bool) asm.Instructions {
	var insns asm.Instructions
	for r := range numRoutes {
		if r == routeMigrate || r == routeStray || !used[r.label()] {
			continue // set in ctr_add, or a route this program does not have (the verifier refuses unreachable code)
		}
		if counters < 0 {
			insns = append(insns, asm.Ja.Label("pass").WithSymbol(r.label()))
			continue
		}
		insns = append(insns,
			asm.Mov.Imm(asm.R1, int32(r)).WithSymbol(r.label()),
			asm.Ja.Label("ctr_add"),
		)
	}
	if counters < 0 {
		return insns
	}
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R6, mdMigratingSk, asm.DWord).WithSymbol("ctr_add"),
		asm.JEq.Imm(asm.R2, 0, "ctr_tcp"),
		asm.Mov.Imm(asm.R1, int32(routeMigrate)),
		asm.Ja.Label("ctr_key"),
	)
	insns = append(insns, newConnection("ctr_tcp", "ctr_key", "ctr_stray")...) // TCP: only a SYN without ACK is a new connection
	return append(insns,
		asm.Mov.Imm(asm.R1, int32(routeStray)).WithSymbol("ctr_stray"),
		asm.LoadMem(asm.R2, asm.RFP, stackSlot, asm.Word).WithSymbol("ctr_key"),
		asm.Mul.Imm(asm.R2, int32(numRoutes)),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.StoreMem(asm.RFP, stackCounter, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, counters),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackCounter),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Ja.Label("pass"),
	)
}

// newConnection, labelled first, jumps to isNew for a datagram or a TCP SYN
// without ACK, and to stray for any other TCP segment (see Counts.Stray).
// It uses R2, R3 and R5.
func newConnection(first, isNew, stray string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, mdIPProtocol, asm.Word).WithSymbol(first),
		asm.JNE.Imm(asm.R2, ipprotoTCP, isNew),
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.DWord),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R5, asm.R2),
		asm.Add.Imm(asm.R5, tcpFlagsOff+1),
		asm.JGT.Reg(asm.R5, asm.R3, stray),
		asm.LoadMem(asm.R5, asm.R2, tcpFlagsOff, asm.Byte),
		asm.And.Imm(asm.R5, tcpSYN|tcpACK),
		asm.JEq.Imm(asm.R5, tcpSYN, isNew),
		asm.Ja.Label(stray),
	}
}
