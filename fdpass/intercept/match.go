//go:build linux

package intercept

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// match is how one bind relates to one managed socket on the same port.
type match struct {
	m      *managed
	mapped bool   // ::ffff:a.b.c.d on an AF_INET6 socket, for the IPv4 a.b.c.d
	reason string // "": the bind gets m; else why it does not
	use    string // for a reason: the --listen that would make it match
	note   string // for a match: what differs between the two sockets
}

// relate matches the bind of sa on the server's socket t against m, which
// has sa's port. A bind matches when the address and the socket's family,
// SO_TYPE and SO_PROTOCOL are m's, or when it is the IPv4-mapped form of
// m's IPv4 address on a dual-stack AF_INET6 socket (what the JVM does): the
// kernel would make that socket IPv4-only, so rpwrap's AF_INET socket takes
// its place. ok is false when the bind is unrelated to m (another protocol
// on another address), not worth a log line.
func relate(m *managed, sa sockaddr, t *target) (x match, ok bool) {
	x.m = m
	addr, family := sa.addr.Addr(), sa.family
	want := sockKind{m.family, m.typ, m.proto}
	if family == unix.AF_INET6 && addr.Is4In6() && m.family == unix.AF_INET {
		x.mapped, addr, family, want.family = true, addr.Unmap(), unix.AF_INET, unix.AF_INET6
	}
	same := family == m.family && addr == m.Addr.Addr().WithZone("")
	bound := netip.AddrPortFrom(addr.Unmap(), sa.addr.Port()) // an IPv4-mapped bind matches the IPv4 --listen
	x.use = "--listen " + scheme(t) + bound.String()
	switch {
	case t.kind == sockKind{}:
		x.reason, x.use = fmt.Sprintf("the server binds it with a %s socket, which rpwrap does not manage", t.proto), ""
		return x, same
	case t.kind.typ != m.typ || t.kind.proto != m.proto:
		x.reason = fmt.Sprintf("the server binds it with a %s socket, rpwrap's is %s", t.proto, m.Network)
		return x, same
	case same && t.kind.family != want.family:
		x.reason, x.use = "the address is not of the socket's family: the kernel refuses the bind", ""
	case same && x.mapped:
		if on, known := t.v6only(); known && on {
			x.reason, x.use = "an IPv4-mapped address on an IPV6_V6ONLY socket: the kernel refuses the bind", ""
		}
	case same:
		x.note = v6onlyNote(m, t)
	default:
		x.reason, x.use = mismatch(m, sa, t, bound), mismatchUse(m, sa, t, x.use)
	}
	return x, true
}

// mismatch says why a bind of the managed port on another address than
// m's does not get m.
func mismatch(m *managed, sa sockaddr, t *target, bound netip.AddrPort) string {
	switch {
	case dualStackWildcard(sa, t) && m.Addr.Addr() == netip.IPv4Unspecified():
		return fmt.Sprintf("a dual-stack %s socket (IPv4 and IPv6 on one socket, the default of the JVM and of Node) is not rpwrap's IPv4-only %s", bound, m.Addr)
	case bound.Addr().IsUnspecified() && m.Addr.Addr().IsUnspecified():
		return fmt.Sprintf("the server binds the wildcard %s of one family (IPV6_V6ONLY for IPv6), rpwrap manages the wildcard %s of the other", bound, m.Addr)
	case bound.Addr().IsUnspecified():
		return fmt.Sprintf("the server binds the wildcard %s, rpwrap manages the one address %s", bound, m.Addr)
	case m.Addr.Addr().IsUnspecified():
		return fmt.Sprintf("the server binds the one address %s, rpwrap manages the wildcard %s", bound, m.Addr)
	}
	return fmt.Sprintf("the server binds %s, rpwrap manages %s", bound, m.Addr)
}

func mismatchUse(m *managed, sa sockaddr, t *target, use string) string {
	if dualStackWildcard(sa, t) && m.Addr.Addr() == netip.IPv4Unspecified() {
		return use + " instead of " + m.Addr.String() + " (one dual-stack socket for IPv4 and IPv6), " +
			"or make the server bind " + m.Addr.String() + " (JVM: -Djava.net.preferIPv4Stack=true)"
	}
	return use + " if the server should get rpwrap's socket for this address"
}

// dualStackWildcard: [::]:P on a socket that is, or may be, not IPV6_V6ONLY.
func dualStackWildcard(sa sockaddr, t *target) bool {
	on, _ := t.v6only()
	return sa.family == unix.AF_INET6 && sa.addr.Addr() == netip.IPv6Unspecified() && !on
}

// v6onlyNote names an IPV6_V6ONLY difference between the server's socket
// and rpwrap's, both IPv6: the server gets rpwrap's socket either way.
func v6onlyNote(m *managed, t *target) string {
	on, known := t.v6only()
	if m.family != unix.AF_INET6 || !known || on == m.v6only {
		return ""
	}
	if on {
		return fmt.Sprintf("the server asked for IPV6_V6ONLY; rpwrap's %s is dual-stack and also takes the IPv4 connections no socket on 0.0.0.0:%d takes", m.Addr, m.Addr.Port())
	}
	return fmt.Sprintf("the server asked for a dual-stack socket; rpwrap's %s is IPv6-only (net.ipv6.bindv6only=1): IPv4 clients need --listen 0.0.0.0:%d bound by the server too", m.Addr, m.Addr.Port())
}

func scheme(t *target) string {
	if t.kind.typ == unix.SOCK_DGRAM {
		return "udp://"
	}
	return ""
}
