// Package bpf steers the new connections of an SO_REUSEPORT group to one
// chosen socket: the selector behind rpwrap's zero-downtime handover.
//
// It implements the two steering options of socket(7):
//
//   - SO_ATTACH_REUSEPORT_EBPF: an SK_REUSEPORT program (bpf(2), expected
//     attach type BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, Linux 5.14) written
//     with cilium/ebpf's asm package, with four maps: a
//     REUSEPORT_SOCKARRAY of slots, a one-entry ARRAY holding the active
//     slot, a HASH of probe routes, and a PERCPU_ARRAY that counts, per
//     slot and route, what the program selected (ReadCounters). The
//     program calls
//     bpf_sk_select_reuseport (bpf-helpers(7)) for every new TCP connection
//     or UDP datagram, and for every request migrating out of a closing
//     listener's accept queue. Activate, the flip, is one map update.
//   - SO_ATTACH_REUSEPORT_CBPF: a classic BPF program that returns the
//     group index of the active socket. It needs no privileges. Activate
//     attaches a new program; the selector mirrors the kernel's indexes
//     (listen(2) order for TCP, bind(2) order for UDP; when a member leaves,
//     the last member moves into its index).
//
// # UDP flows
//
// NewWithFlows with FlowsTuple or FlowsQUIC gives a UDP group's eBPF
// program a flow table (flows.go): an LRU hash of MaxFlows entries from the
// datagram's addresses and ports (read with bpf_skb_load_bytes_relative
// from BPF_HDR_START_NET, IPv4 and IPv6) to the slot that received the
// flow's first datagram, written by the program itself. A known flow goes
// to its slot while that slot holds a live socket; any other goes to the
// active slot and is recorded. FlowsQUIC first routes QUIC packets by the
// server id in their destination connection ID (quic.go, SetServerID).
// Deselect takes a slot out of the socket map while its socket stays open,
// so that its flows move; FlowIdle and FlowCounts report on them. The
// classic flavour keeps no state and ignores the mode.
//
// New picks the eBPF flavour when Supported returns nil and falls back to
// the classic one otherwise (with Auto); the caller logs which it got.
//
// # The probe route
//
// SetProbe sends the connections that come from one source port to a
// named slot, whatever the active slot is, so that a readiness check
// reaches the successor before the flip. The eBPF program reads the port
// at offset 0 of the context's packet data, which starts at the TCP or UDP
// header (measured on Linux 6.18: a SYN shows its 40-byte TCP header, a UDP
// datagram its 8-byte header and payload). The classic program's data
// starts after the transport header, so it loads the IP header through
// SKF_NET_OFF and the port behind it (IHL for IPv4, 40 bytes for IPv6; IPv4
// clients of a dual-stack [::] group included). Both flavours implement it.
// Bind the probe to a port outside net.ipv4.ip_local_port_range, so that no
// ordinary connection happens to use it.
//
// # What the classic flavour cannot do
//
//   - Migration. When a listener closes, the connections in its accept
//     queue are reset with net.ipv4.tcp_migrate_req=0 (the default), or
//     handed to a member picked by hash with 1; the classic program is not
//     asked. The eBPF flavour sends them to the active slot whatever the
//     sysctl says. The caller compensates: after the flip it drains the old
//     listener's accept queue to zero (tcpi_unacked of TCP_INFO) before
//     closing the last reference to it.
//   - Foreign members. A socket of the same uid that binds the address with
//     SO_REUSEPORT takes a group index the selector does not know about:
//     indexes after it shift, and closing a member moves it into that
//     member's index, so it may receive the connections meant for the
//     active slot. With eBPF selection is by map, and a foreign member
//     receives nothing while a slot holds a live socket.
//
// Both flavours hold no reference that keeps the group alive: the program
// belongs to the group and goes with its last member. Close detaches it
// (SO_DETACH_REUSEPORT_BPF) and frees the program and maps; the group then
// spreads connections by hash. Sockets must be plain TCP or UDP: an MPTCP
// listener (Go's default since 1.24) cannot be steered.
//
// Example:
//
//	old, _ := lc.Listen(ctx, "tcp4", "127.0.0.1:8080") // SO_REUSEPORT, SetMultipathTCP(false)
//	sel, err := bpf.New(old.(syscall.Conn), bpf.Auto)
//	if err != nil { ... }
//	log.Printf("reuseport selector: %s", sel.Flavour())
//	var next *net.TCPListener
//	slot, err := sel.Join(func() (bpf.Member, error) { // joining and its record in one step
//		l, err := lc.Listen(ctx, "tcp4", "127.0.0.1:8080")
//		if err != nil {
//			return nil, err
//		}
//		next = l.(*net.TCPListener)
//		return next, nil
//	})
//	err = sel.SetProbe(probePort, slot) // readiness check reaches next only
//	err = sel.Activate(slot)            // the flip
//	// drain old's accept queue (cBPF), then:
//	err = sel.Leave(0, func() error { return old.Close() })
package bpf
