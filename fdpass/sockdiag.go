//go:build linux

package fdpass

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/rpwrap/rpwrap/internal/procfs"
	"golang.org/x/sys/unix"
)

// Structures of linux/inet_diag.h, see sock_diag(7).
type inetDiagSockID struct {
	SPort  [2]byte // big endian
	DPort  [2]byte
	Src    [16]byte
	Dst    [16]byte
	If     uint32
	Cookie [2]uint32
}

type inetDiagReqV2 struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	Pad      uint8
	States   uint32
	ID       inetDiagSockID
}

type inetDiagMsg struct {
	Family  uint8
	State   uint8
	Timer   uint8
	Retrans uint8
	ID      inetDiagSockID
	Expires uint32
	RQueue  uint32
	WQueue  uint32
	UID     uint32
	Inode   uint32
}

const (
	tcpTimeWait = 6  // TCP_TIME_WAIT: never blocks a bind with SO_REUSEADDR
	tcpSynRecv  = 3  // TCP_SYN_RECV: request sockets, not bound
	tcpListen   = 10 // TCP_LISTEN
	// boundStates are the states of sockets that can block a bind: not
	// TIME_WAIT and SYN_RECV, of which a busy server has a hundred thousand.
	boundStates = ^uint32(0) &^ (1<<tcpTimeWait | 1<<tcpSynRecv)
)

// ListeningInodes returns the inodes of every TCP socket listening on port,
// IPv4 and IPv6, in rpwrap's network namespace, from sock_diag(7) filtered
// in the kernel by state, so it stays cheap with many connections open.
func ListeningInodes(port uint16) ([]uint64, error) {
	socks, err := Listening(port)
	if err != nil {
		return nil, err
	}
	inodes := make([]uint64, len(socks))
	for i, so := range socks {
		inodes[i] = so.Inode
	}
	return inodes, nil
}

// findHolder looks for a socket bound to spec's port and an overlapping
// address, and for a process holding it. ok is false when sock_diag or /proc
// tell nothing (no permission, or the holder sits in another namespace).
func findHolder(spec Spec) (pid int, comm string, ok bool) {
	inodes := boundInodes(spec)
	if len(inodes) == 0 {
		return 0, "", false
	}
	pid = findSocketOwner(inodes)
	if pid == 0 {
		return 0, "", false
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return pid, strings.TrimSpace(string(b)), true
}

// boundInodes lists the inodes of sockets of spec's protocol whose address
// could conflict with spec's, in both address families.
func boundInodes(spec Spec) map[uint64]bool {
	proto := uint8(unix.IPPROTO_TCP)
	if spec.Network == "udp" {
		proto = unix.IPPROTO_UDP
	}
	inodes := map[uint64]bool{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		msgs, err := dumpSockets(family, proto, boundStates)
		if err != nil {
			continue
		}
		for _, m := range msgs {
			if m.Inode != 0 && conflicts(spec.Addr, m) {
				inodes[uint64(m.Inode)] = true
			}
		}
	}
	return inodes
}

func conflicts(want netip.AddrPort, m inetDiagMsg) bool {
	if binary.BigEndian.Uint16(m.ID.SPort[:]) != want.Port() {
		return false
	}
	var have netip.Addr
	if m.Family == unix.AF_INET {
		have = netip.AddrFrom4([4]byte(m.ID.Src[:4]))
	} else {
		have = netip.AddrFrom16(m.ID.Src)
	}
	a, b := want.Addr().Unmap(), have.Unmap()
	if a == b {
		return true
	}
	// A wildcard overlaps every address of its family; the IPv6 wildcard
	// (dual-stack by default) overlaps IPv4 ones too.
	return (a.IsUnspecified() && (a.Is6() || b.Is4())) || (b.IsUnspecified() && (b.Is6() || a.Is4()))
}

// dumpSockets asks NETLINK_SOCK_DIAG for the sockets of family and proto in
// states (a bit mask of 1<<TCP_STATE).
func dumpSockets(family, proto uint8, states uint32) ([]inetDiagMsg, error) {
	return querySockets(inetDiagReqV2{Family: family, Protocol: proto, States: states}, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
}

// querySockets sends one sock_diag request and collects the answers. An
// NLMSG_ERROR answer with an errno is returned as that errno.
func querySockets(req inetDiagReqV2, flags uint16) ([]inetDiagMsg, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, os.NewSyscallError("socket NETLINK_SOCK_DIAG", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, diagRequest(req, flags), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto NETLINK_SOCK_DIAG", err)
	}
	var out []inetDiagMsg
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, os.NewSyscallError("recvfrom NETLINK_SOCK_DIAG", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("parse sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno < 0 {
						return out, syscall.Errno(-errno)
					}
				}
				return out, nil
			}
			var d inetDiagMsg
			if binary.Read(bytes.NewReader(m.Data), binary.NativeEndian, &d) == nil {
				out = append(out, d)
			}
		}
		if flags&unix.NLM_F_DUMP == 0 && len(out) > 0 {
			return out, nil
		}
	}
}

func diagRequest(req inetDiagReqV2, flags uint16) []byte {
	hdr := unix.NlMsghdr{
		Len:   uint32(unix.SizeofNlMsghdr + binary.Size(req)),
		Type:  unix.SOCK_DIAG_BY_FAMILY,
		Flags: flags,
		Seq:   1,
	}
	var b bytes.Buffer
	binary.Write(&b, binary.NativeEndian, hdr)
	binary.Write(&b, binary.NativeEndian, req)
	return b.Bytes()
}

// findSocketOwner returns a pid that has one of inodes open, or 0. Another
// process is preferred over this one, whose own reuseport listeners on the
// address may be among inodes.
func findSocketOwner(inodes map[uint64]bool) int {
	self, found := os.Getpid(), 0
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || !holdsSocket(pid, inodes) {
			continue
		}
		if pid != self {
			return pid
		}
		found = pid
	}
	return found
}

func holdsSocket(pid int, inodes map[uint64]bool) bool {
	return procfs.HoldsAny([]int{pid}, inodes)
}
