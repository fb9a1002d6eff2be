//go:build linux

package fdpass

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrGroupNotEmpty means a socket that rpwrap did not create already sits in
// the reuseport group of an address rpwrap is to serve.
var ErrGroupNotEmpty = errors.New("reuseport group not empty")

// CheckAlone fails with ErrGroupNotEmpty when a socket other than l is bound
// to exactly l's address (TCP: listening there), that is, in l's reuseport
// group: another rpwrap, or a server that binds with SO_REUSEPORT. rpwrap
// attaches its selector to the whole group, so it must be the group's only
// owner; a second rpwrap that attached its program and then exited would
// leave the first one's group unsteered. The error names the other socket's
// process when /proc tells it. A failing sock_diag query is no error.
func (l *Listener) CheckAlone() error {
	proto, states := uint8(unix.IPPROTO_TCP), uint32(1<<tcpListen)
	if l.spec.Network == "udp" {
		proto, states = unix.IPPROTO_UDP, ^uint32(0)
	}
	mine, others := l.Inode(), map[uint64]bool{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		msgs, err := dumpSockets(family, proto, states)
		if err != nil {
			return nil
		}
		for _, m := range msgs {
			if m.Inode != 0 && uint64(m.Inode) != mine && sameAddr(l.spec.Addr, m) {
				others[uint64(m.Inode)] = true
			}
		}
	}
	if len(others) == 0 {
		return nil
	}
	holder := "holder unknown"
	if pid := findSocketOwner(others); pid != 0 {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		holder = fmt.Sprintf("pid %d, %s", pid, strings.TrimSpace(string(b)))
	}
	return fmt.Errorf("listen %s %s: %w: another SO_REUSEPORT socket is already bound there (%s): is another rpwrap, or the server itself, serving this address? rpwrap steers the whole group and must own it",
		l.spec.Network, l.spec.Addr, ErrGroupNotEmpty, holder)
}

// sameAddr reports whether m is bound to exactly addr.
func sameAddr(addr netip.AddrPort, m inetDiagMsg) bool {
	if binary.BigEndian.Uint16(m.ID.SPort[:]) != addr.Port() {
		return false
	}
	var have netip.Addr
	if m.Family == unix.AF_INET {
		have = netip.AddrFrom4([4]byte(m.ID.Src[:4]))
	} else {
		have = netip.AddrFrom16(m.ID.Src)
	}
	return have.Unmap() == addr.Addr().Unmap() && (m.Family == unix.AF_INET) == addr.Addr().Unmap().Is4()
}
