//go:build linux

package intercept

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxSockaddr bounds what is read from the server's memory: the size of
// struct sockaddr_storage. Longer addrlen values are left to the kernel.
const maxSockaddr = unix.SizeofSockaddrAny

var errNotInet = errors.New("not an AF_INET or AF_INET6 address")

// sockaddr is the address a bind(2) names.
type sockaddr struct {
	family int // unix.AF_INET or unix.AF_INET6
	addr   netip.AddrPort
}

// readSockaddr reads addrlen bytes at ptr in the memory of thread tid.
func readSockaddr(tid uint32, ptr, addrlen uint64) ([]byte, error) {
	if addrlen < 2 || addrlen > maxSockaddr {
		return nil, fmt.Errorf("addrlen %d out of range", addrlen)
	}
	f, err := os.Open("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/mem")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, addrlen)
	n, err := unix.Pread(int(f.Fd()), buf, int64(ptr))
	if err != nil {
		return nil, os.NewSyscallError("pread", err)
	}
	if n != len(buf) {
		return nil, fmt.Errorf("short read of sockaddr: %d of %d bytes", n, len(buf))
	}
	return buf, nil
}

// parseSockaddr decodes an AF_INET or AF_INET6 sockaddr as bind(2) would
// accept it; the IPv6 scope id is ignored.
func parseSockaddr(b []byte) (sockaddr, error) {
	family := int(binary.NativeEndian.Uint16(b))
	switch {
	case family == unix.AF_INET && len(b) >= unix.SizeofSockaddrInet4:
		ip := netip.AddrFrom4([4]byte(b[4:8]))
		return sockaddr{family, netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[2:4]))}, nil
	case family == unix.AF_INET6 && len(b) >= 24: // SIN6_LEN_RFC2133
		ip := netip.AddrFrom16([16]byte(b[8:24]))
		return sockaddr{family, netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[2:4]))}, nil
	}
	return sockaddr{}, errNotInet
}

// familyOf is the socket family an address of Managed is bound with.
func familyOf(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
