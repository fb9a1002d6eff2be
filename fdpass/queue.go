//go:build linux

package fdpass

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// skMeminfoVars is SK_MEMINFO_VARS of linux/sock_diag.h; index 0 of the
// SO_MEMINFO array is SK_MEMINFO_RMEM_ALLOC.
const skMeminfoVars = 9

// ReceiveQueue returns how many bytes wait in the socket's receive queue
// (SK_MEMINFO_RMEM_ALLOC of SO_MEMINFO, socket(7)): for a UDP socket, the
// datagrams nobody has read yet, with their overhead; 0 when it is empty.
// It fails when the socket is closed.
func ReceiveQueue(sock syscall.Conn) (uint32, error) {
	var info [skMeminfoVars]uint32
	err := control(sock, func(fd int) error {
		n := uint32(unsafe.Sizeof(info))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read receive queue: %w", os.NewSyscallError("getsockopt SO_MEMINFO", err))
	}
	return info[0], nil
}

// Relisten calls listen(2) again on a TCP listener with backlog (<= 0: the
// kernel's maximum), which resets the accept queue's size for every holder
// of the socket: a server that called listen(fd, 5) on the socket it was
// given changed it for rpwrap too. UDP sockets are left alone.
func (l *Listener) Relisten(backlog int) error {
	if l.spec.Network != "tcp" {
		return nil
	}
	if backlog <= 0 {
		backlog = math.MaxInt32
	}
	err := control(l, func(fd int) error { return unix.Listen(fd, backlog) })
	if err != nil {
		return fmt.Errorf("restore the backlog of %s: %w", l.spec.Addr, os.NewSyscallError("listen", err))
	}
	return nil
}

// ListeningSocket is one TCP socket in the LISTEN state, from sock_diag(7).
type ListeningSocket struct {
	Addr  netip.AddrPort
	Inode uint64
}

// Listening returns every TCP socket listening on port, IPv4 and IPv6.
func Listening(port uint16) ([]ListeningSocket, error) {
	var out []ListeningSocket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		msgs, err := dumpSockets(family, unix.IPPROTO_TCP, 1<<tcpListen)
		if err != nil {
			return nil, fmt.Errorf("list listening sockets: %w", err)
		}
		for _, m := range msgs {
			if m.Inode != 0 && binary.BigEndian.Uint16(m.ID.SPort[:]) == port {
				out = append(out, ListeningSocket{Addr: netip.AddrPortFrom(diagAddr(m), port), Inode: uint64(m.Inode)})
			}
		}
	}
	return out, nil
}

func diagAddr(m inetDiagMsg) netip.Addr {
	if m.Family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(m.ID.Src[:4]))
	}
	return netip.AddrFrom16(m.ID.Src)
}

// Conn is what sock_diag(7) tells of one TCP connection: its state
// (TCP_ESTABLISHED and so on, linux/tcp_states.h) and its inode, which is 0
// while the connection waits in an accept queue and again once the process
// that accepted it has closed it (an orphan in FIN_WAIT or TIME_WAIT).
type Conn struct {
	State uint8
	Inode uint64
}

// TCP states of linux/tcp_states.h that LookupConn's callers test.
const (
	TCPEstablished = 1
	TCPSynRecv     = 3
)

// LookupConn looks up the TCP connection whose own address is local and
// whose peer is remote, with an exact sock_diag(7) request, not a dump. It
// fails with an error wrapping syscall.ENOENT when no such connection
// exists: the kernel then answers with a listener of local's address, which
// is not this connection, and LookupConn says so.
func LookupConn(local, remote netip.AddrPort) (Conn, error) {
	family := uint8(unix.AF_INET6)
	if local.Addr().Is4() {
		family = unix.AF_INET
	}
	req := inetDiagReqV2{Family: family, Protocol: unix.IPPROTO_TCP, States: ^uint32(0)}
	binary.BigEndian.PutUint16(req.ID.SPort[:], local.Port())
	binary.BigEndian.PutUint16(req.ID.DPort[:], remote.Port())
	putDiagAddr(&req.ID.Src, local.Addr())
	putDiagAddr(&req.ID.Dst, remote.Addr())
	req.ID.Cookie = [2]uint32{^uint32(0), ^uint32(0)} // INET_DIAG_NOCOOKIE
	msgs, err := querySockets(req, unix.NLM_F_REQUEST)
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return Conn{}, fmt.Errorf("look up connection %s -> %s: %w", remote, local, err)
	}
	for _, m := range msgs {
		if m.State != tcpListen && binary.BigEndian.Uint16(m.ID.SPort[:]) == local.Port() && binary.BigEndian.Uint16(m.ID.DPort[:]) == remote.Port() {
			return Conn{State: m.State, Inode: uint64(m.Inode)}, nil
		}
	}
	return Conn{}, fmt.Errorf("look up connection %s -> %s: %w", remote, local, syscall.ENOENT)
}

func putDiagAddr(dst *[16]byte, a netip.Addr) {
	if a.Is4() {
		b := a.As4()
		copy(dst[:4], b[:])
		return
	}
	*dst = a.As16()
}
