//go:build linux

package bpf

import (
	"github.com/cilium/ebpf/asm"
)

// Offsets in struct sk_reuseport_md (include/uapi/linux/bpf.h).
const (
	mdData        = 0  // __bpf_md_ptr(void *, data)
	mdDataEnd     = 8  // __bpf_md_ptr(void *, data_end)
	mdMigratingSk = 48 // __bpf_md_ptr(struct bpf_sock *, migrating_sk), Linux 5.14
)

// skPass is the SK_REUSEPORT verdict that lets the connection in (SK_DROP,
// 0, would refuse it; the program never returns that).
const skPass = 1

// Stack slots of the program.
const (
	stackKey  = -4 // u32 key for map lookups
	stackSlot = -8 // u32 slot handed to bpf_sk_select_reuseport
)

// selectorProgram returns the SK_REUSEPORT program. For every new
// connection, and for every request migrating out of a closing listener,
// it selects, from the socket map, the first of these that holds a live
// socket:
//
//  1. the slot in the probes map under the packet's source port: the
//     context's data starts at the transport header for TCP and UDP alike,
//     so the port is the first two bytes; a migrating request has an
//     empty packet and skips this step;
//  2. for a share of the connections, by flow hash, the canary slot in
//     the canary map (canaryRoute), while a canary runs;
//  3. the slot in the one-entry active map;
//  4. slots 0, 1, ... MaxSlots-1 in order, so that a migrating request is
//     never dropped while the group holds one of our sockets.
//
// It returns SK_PASS in every case, never SK_DROP: when no slot holds a
// live socket, the kernel picks by hash.
//
// A UDP group that keeps flows runs flows, the flow routes (flows.go),
// between steps 1 and 2, and a canary (canary.go) takes its share of new
// connections there too. A selection made by a route is counted in
// counters (see countRoutes).
func selectorProgram(sockets, active, probes, canary, counters int, flows asm.Instructions) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	insns = append(insns, probeRoute(sockets, probes)...)
	insns = append(insns, flows...)
	if len(flows) == 0 {
		// The flow routes place every new flow on the active slot
		// themselves: a group that keeps flows has no canary split.
		insns = append(insns, canaryRoute(sockets, canary)...)
	}
	insns = append(insns, activeRoute(sockets, active)...)
	insns = append(insns, scanRoute(sockets)...)
	insns = append(insns,
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	)
	return append(insns, countRoutes(counters, references(insns))...)
}

// references returns the labels that the jumps of insns name.
func references(insns asm.Instructions) map[string]bool {
	refs := map[string]bool{}
	for _, ins := range insns {
		if r := ins.Reference(); r != "" {
			refs[r] = true
		}
	}
	return refs
}

// probeRoute looks the source port up in the probes map; a datagram or
// connection that is not a probe goes on to the routes that follow.
func probeRoute(sockets, probes int) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.DWord),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 2),
		asm.JGT.Reg(asm.R4, asm.R3, "probe_miss"),
		asm.LoadMem(asm.R4, asm.R2, 0, asm.Half),
		asm.HostTo(asm.BE, asm.R4, asm.Half),
		asm.StoreMem(asm.RFP, stackKey, asm.R4, asm.Word),
		asm.LoadMapPtr(asm.R1, probes),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "probe_miss"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word),
	}
	insns = append(insns, selectSlot(sockets, asm.R7, routeProbe)...)
	// The routes that follow begin here: a miss falls through to them.
	return append(insns, asm.Mov.Reg(asm.R6, asm.R6).WithSymbol("probe_miss"))
}

// activeRoute selects the active slot.
func activeRoute(sockets, active int) asm.Instructions {
	insns := asm.Instructions{
		asm.StoreImm(asm.RFP, stackKey, 0, asm.Word).WithSymbol("active"),
		asm.LoadMapPtr(asm.R1, active),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "scan"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word),
	}
	return append(insns, selectSlot(sockets, asm.R7, routeActive)...)
}

// scanRoute tries every slot in order.
func scanRoute(sockets int) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Imm(asm.R7, 0).WithSymbol("scan")}
	sel := selectSlot(sockets, asm.R7, routeScan)
	sel[0] = sel[0].WithSymbol("loop")
	insns = append(insns, sel...)
	return append(insns,
		asm.Add.Imm(asm.R7, 1),
		asm.JLT.Imm(asm.R7, MaxSlots, "loop"),
	)
}

// selectSlot calls bpf_sk_select_reuseport(ctx, sockets, &slot, 0) with the
// slot in register r and, when it succeeds, jumps to the code that counts
// the selection under route rt and returns SK_PASS.
func selectSlot(sockets int, r asm.Register, rt route) asm.Instructions {
	return asm.Instructions{
		asm.StoreMem(asm.RFP, stackSlot, r, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, sockets),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, stackSlot),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
		asm.JEq.Imm(asm.R0, 0, rt.label()),
	}
}

// migrateProbe is the smallest program that needs Linux 5.14's
// SELECT_OR_MIGRATE context: it reads migrating_sk.
func migrateProbe() asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, mdMigratingSk, asm.DWord),
		asm.Mov.Imm(asm.R0, skPass),
		asm.Return(),
	}
}
