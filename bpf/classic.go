//go:build linux

package bpf

import "golang.org/x/sys/unix"

// skfNetOff is SKF_NET_OFF (linux/filter.h), -0x100000 as an unsigned k:
// classic BPF loads at skfNetOff+k read byte k of the network header. A reuseport program's
// packet data starts after the transport header (the kernel pulls it
// before running the program), so this is the way back to the ports.
const skfNetOff = 0xfff00000

// ipv6HeaderLen is the fixed IPv6 header; a probe's SYN carries no
// extension header.
const ipv6HeaderLen = 40

type probeIndex struct {
	port  uint16
	index uint32
}

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }

func jeq(k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: jt, Jf: jf, K: k}
}

func ret(k uint32) unix.SockFilter { return stmt(unix.BPF_RET|unix.BPF_K, k) }

// classicProgram returns the program that answers active (a group index)
// for every packet except those whose source port is in probes, which get
// the probe's index, and, with a canary, the share of the others whose
// source port hashes below its weight (classicCanary). It reads the IP
// version, finds the transport header (IHL for IPv4, 40 bytes for IPv6)
// and loads the source port:
//
//	ldb  [net+0]; rsh #4; jeq #4 v4; jeq #6 v6 else active
//	v4:  ldxb 4*([net+0]&0xf); ja port
//	v6:  ldx #40
//	port: ldh [x+net]; jeq #p0 r0; jeq #p1 r1; ...
//	[canary: mul #golden; rsh #16; jge #weight active; ret #canary]
//	active: ret #active; r0: ret #i0; r1: ret #i1; ...
func classicProgram(active uint32, probes []probeIndex, canary canaryIndex) []unix.SockFilter {
	if len(probes) == 0 && canary.weight == 0 {
		return []unix.SockFilter{ret(active)}
	}
	split := classicCanary(canary)
	n := uint8(len(probes))
	skip := n + uint8(len(split)) // from the last port test to active
	prog := []unix.SockFilter{
		stmt(unix.BPF_LD|unix.BPF_B|unix.BPF_ABS, skfNetOff),
		stmt(unix.BPF_ALU|unix.BPF_RSH|unix.BPF_K, 4),
		jeq(4, 1, 0),
		jeq(6, 2, skip+4),
		stmt(unix.BPF_LDX|unix.BPF_B|unix.BPF_MSH, skfNetOff),
		stmt(unix.BPF_JMP|unix.BPF_JA, 1),
		stmt(unix.BPF_LDX|unix.BPF_W|unix.BPF_IMM, ipv6HeaderLen),
		stmt(unix.BPF_LD|unix.BPF_H|unix.BPF_IND, skfNetOff),
	}
	for _, p := range probes {
		prog = append(prog, jeq(uint32(p.port), skip, 0))
	}
	prog = append(prog, split...)
	prog = append(prog, ret(active))
	for _, p := range probes {
		prog = append(prog, ret(p.index))
	}
	return prog
}
