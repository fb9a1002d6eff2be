//go:build linux

package fdpass

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// EstablishedInodes returns the inodes of the established TCP connections,
// IPv4 and IPv6, whose own (local) port is port: the server side of the
// connections a process on port has accepted. A connection still waiting
// in an accept queue has no inode yet and is left out.
func EstablishedInodes(port uint16) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		msgs, err := dumpSockets(family, unix.IPPROTO_TCP, 1<<TCPEstablished)
		if err != nil {
			return nil, fmt.Errorf("list established connections: %w", err)
		}
		for _, m := range msgs {
			if m.Inode != 0 && binary.BigEndian.Uint16(m.ID.SPort[:]) == port {
				out[uint64(m.Inode)] = true
			}
		}
	}
	return out, nil
}
