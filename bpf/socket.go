//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// sockInfo is what the selector needs to know about a member of a group.
type sockInfo struct {
	family, typ, proto int
	addr               netip.AddrPort
}

func (i sockInfo) network() string {
	n := "tcp"
	if i.proto == unix.IPPROTO_UDP {
		n = "udp"
	}
	if i.family == unix.AF_INET6 {
		return n + "6"
	}
	return n + "4"
}

func (i sockInfo) String() string { return i.network() + " " + i.addr.String() }

// sameGroup reports whether j can be a member of i's reuseport group.
func (i sockInfo) sameGroup(j sockInfo) bool {
	return i.family == j.family && i.proto == j.proto && i.addr == j.addr
}

// withFD runs fn on the descriptor of c.
func withFD(c syscall.Conn, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// inspect reads the socket options of c and checks that c is a socket a
// reuseport program can steer.
func inspect(c syscall.Conn) (info sockInfo, err error) {
	err = withFD(c, func(fd int) error {
		info, err = inspectFD(fd)
		return err
	})
	return info, err
}

func inspectFD(fd int) (sockInfo, error) {
	var i sockInfo
	var err error
	get := func(level, opt int) int {
		v, e := unix.GetsockoptInt(fd, level, opt)
		if e != nil && err == nil {
			err = fmt.Errorf("read socket option %d of fd %d: %w", opt, fd, e)
		}
		return v
	}
	i.family, i.typ, i.proto = get(unix.SOL_SOCKET, unix.SO_DOMAIN), get(unix.SOL_SOCKET, unix.SO_TYPE), get(unix.SOL_SOCKET, unix.SO_PROTOCOL)
	reuseport, listening := get(unix.SOL_SOCKET, unix.SO_REUSEPORT), get(unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return i, err
	}
	if err := checkKind(i); err != nil {
		return i, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return i, fmt.Errorf("read local address of fd %d: %w", fd, err)
	}
	i.addr = addrPort(sa)
	switch {
	case reuseport == 0:
		return i, fmt.Errorf("socket %s lacks SO_REUSEPORT: set it before bind(2)", i)
	case i.addr.Port() == 0:
		return i, fmt.Errorf("socket %s is not bound: bind(2) it to the group's address first", i)
	case i.proto == unix.IPPROTO_TCP && listening == 0:
		return i, fmt.Errorf("socket %s is not listening: call listen(2) before adding it", i)
	}
	return i, nil
}

// checkKind accepts TCP and UDP sockets of IPv4 and IPv6 only.
func checkKind(i sockInfo) error {
	if i.family != unix.AF_INET && i.family != unix.AF_INET6 {
		return fmt.Errorf("socket of family %d is not IPv4 or IPv6", i.family)
	}
	switch {
	case i.typ == unix.SOCK_STREAM && i.proto == unix.IPPROTO_TCP, i.typ == unix.SOCK_DGRAM && i.proto == unix.IPPROTO_UDP:
		return nil
	case i.proto == unix.IPPROTO_MPTCP:
		return errors.New("socket is MPTCP, which a reuseport program cannot steer: create it with net.ListenConfig.SetMultipathTCP(false) or socket(2) with IPPROTO_TCP")
	}
	return fmt.Errorf("socket of type %d protocol %d is neither TCP nor UDP", i.typ, i.proto)
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// checkFD checks that fd is a member of group.
func checkFD(fd int, group sockInfo) error {
	i, err := inspectFD(fd)
	if err != nil {
		return err
	}
	if !group.sameGroup(i) {
		return fmt.Errorf("socket %s is not in the reuseport group %s: create it with the same protocol, family and address", i, group)
	}
	return nil
}

// detach removes the program of the group of c (SO_DETACH_REUSEPORT_BPF).
func detach(c syscall.Conn) error {
	return withFD(c, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	})
}

// detachAny detaches the program through the first of conns that is
// still open. It returns nil when the group has no program left.
func detachAny(conns map[Slot]syscall.Conn) error {
	var errs []error
	for _, c := range conns {
		err := detach(c)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("detach reuseport program: %w", errors.Join(errs...))
}
