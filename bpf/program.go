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
//  2. the slot in the one-entry active map;
//  3. slots 0, 1, ... MaxSlots-1 in order, so that a migrating request is
//     never dropped while the group holds one of our sockets.
//
// It returns SK_PASS in every case, never SK_DROP: when no slot holds a
// live socket, the kernel picks by hash.
//
// A UDP group that keeps flows runs flows, the flow routes (flows.go),
// between steps 1 and 2.
func selectorProgram(sockets, active, probes int, flows asm.Instructions) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	insns = append(insns, probeRoute(sockets, probes, firstSymbol(flows, "active"))...)
	insns = append(insns, flows...)
	insns = append(insns, activeRoute(sockets, active)...)
	insns = append(insns, scanRoute(sockets)...)
	return append(insns,
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	)
}

// probeRoute looks the source port up in the probes map; a datagram or
// connection that is not a probe goes on to the label next.
func probeRoute(sockets, probes int, next string) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.DWord),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 2),
		asm.JGT.Reg(asm.R4, asm.R3, next),
		asm.LoadMem(asm.R4, asm.R2, 0, asm.Half),
		asm.HostTo(asm.BE, asm.R4, asm.Half),
		asm.StoreMem(asm.RFP, stackKey, asm.R4, asm.Word),
		asm.LoadMapPtr(asm.R1, probes),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stackKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, next),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word),
	}
	return append(insns, selectSlot(sockets, asm.R7)...)
}

// firstSymbol returns the label of the first of insns, or def when insns
// is empty.
func firstSymbol(insns asm.Instructions, def string) string {
	if len(insns) == 0 {
		return def
	}
	return insns[0].Symbol()
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
	return append(insns, selectSlot(sockets, asm.R7)...)
}

// scanRoute tries every slot in order.
func scanRoute(sockets int) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Imm(asm.R7, 0).WithSymbol("scan")}
	sel := selectSlot(sockets, asm.R7)
	sel[0] = sel[0].WithSymbol("loop")
	insns = append(insns, sel...)
	return append(insns,
		asm.Add.Imm(asm.R7, 1),
		asm.JLT.Imm(asm.R7, MaxSlots, "loop"),
	)
}

// selectSlot calls bpf_sk_select_reuseport(ctx, sockets, &slot, 0) with the
// slot in register r and jumps to "pass" when it succeeds.
func selectSlot(sockets int, r asm.Register) asm.Instructions {
	return asm.Instructions{
		asm.StoreMem(asm.RFP, stackSlot, r, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, sockets),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, stackSlot),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
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
