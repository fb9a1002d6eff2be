//go:build linux

package bpf

import (
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// BenchmarkDatagram measures one datagram (send on loopback, the selector's
// program, receive) through a group of two UDP sockets, from 64 client
// sockets in turn: without the flow table (off), with it (tuple), and with
// QUIC server ids in front of it (quic, short-header packets of an unknown
// id, so both routes run). Besides the datagrams per second it reports the
// program's own run time per datagram, from the kernel's BPF statistics
// (BPF_ENABLE_STATS, on only while the benchmark runs).
func BenchmarkDatagram(b *testing.B) {
	testutil.RequireRoot(b)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	for _, mode := range []FlowMode{FlowsOff, FlowsTuple, FlowsQUIC} {
		b.Run(string(mode), func(b *testing.B) {
			ua := listenUDP(b, "udp4", "127.0.0.1:0")
			ub := listenUDP(b, "udp4", ua.LocalAddr().String())
			sel, err := NewWithFlows(ua, EBPF, mode)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { sel.Close() })
			activate(b, sel, add(b, sel, ub))
			clients := make([]*net.UDPConn, 64)
			for i := range clients {
				clients[i] = dialUDP(b, "udp4", ua.LocalAddr())
			}
			payload := []byte{0x40, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
			buf := make([]byte, 64)
			i := 0
			for b.Loop() {
				if _, err := clients[i%len(clients)].Write(payload); err != nil {
					b.Fatal(err)
				}
				i++
				if _, err := ub.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "datagrams/s")
			st, err := sel.(*ebpfSelector).prog.Stats()
			if err != nil {
				b.Fatal(err)
			}
			if st.RunCount > 0 {
				b.ReportMetric(float64(st.Runtime.Nanoseconds())/float64(st.RunCount), "prog-ns/datagram")
			}
		})
	}
}
