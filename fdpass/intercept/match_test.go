//go:build linux

package intercept

import (
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestBindsOfAManagedPortMatchOrSayWhichListenFits(t *testing.T) {
	tcp4 := sockKind{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP}
	tcp6 := sockKind{unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_TCP}
	udp4 := sockKind{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP}
	for _, c := range []struct {
		name     string
		managed  string // tcp unless udp://
		bind     string
		kind     sockKind
		v6only   int // -1: unknown (no copy of the server's socket)
		related  bool
		mapped   bool
		reason   string // "" for a match; else a substring
		use      string // substring of use
		noteHave string
	}{
		{"exact IPv4", "127.0.0.1:80", "127.0.0.1:80", tcp4, -1, true, false, "", "", ""},
		{"IPv4-mapped on a dual-stack socket", "127.0.0.1:80", "[::ffff:127.0.0.1]:80", tcp6, 0, true, true, "", "", ""},
		{"IPv4-mapped, V6ONLY unknown", "127.0.0.1:80", "[::ffff:127.0.0.1]:80", tcp6, -1, true, true, "", "", ""},
		{"IPv4-mapped wildcard", "0.0.0.0:80", "[::ffff:0.0.0.0]:80", tcp6, 0, true, true, "", "", ""},
		{"IPv4-mapped on an IPV6_V6ONLY socket", "127.0.0.1:80", "[::ffff:127.0.0.1]:80", tcp6, 1, true, true, "IPV6_V6ONLY", "", ""},
		{"exact IPv4-mapped managed", "[::ffff:127.0.0.1]:80", "[::ffff:127.0.0.1]:80", tcp6, 0, true, false, "", "", ""},
		{"dual-stack wildcard, IPv4 wildcard managed", "0.0.0.0:80", "[::]:80", tcp6, 0, true, false, "dual-stack", "--listen [::]:80 instead of 0.0.0.0:80", ""},
		{"IPv6-only wildcard, IPv4 wildcard managed", "0.0.0.0:80", "[::]:80", tcp6, 1, true, false, "wildcard [::]:80 of one family (IPV6_V6ONLY for IPv6), rpwrap manages the wildcard 0.0.0.0:80 of the other", "--listen [::]:80 if", ""},
		{"IPv4 wildcard, IPv6 wildcard managed", "[::]:80", "0.0.0.0:80", tcp4, -1, true, false, "wildcard 0.0.0.0:80 of one family", "--listen 0.0.0.0:80 if", ""},
		{"IPv4 wildcard, one address managed", "127.0.0.1:80", "0.0.0.0:80", tcp4, -1, true, false, "rpwrap manages the one address 127.0.0.1:80", "--listen 0.0.0.0:80", ""},
		{"IPv4-mapped address inside a managed wildcard", "0.0.0.0:80", "[::ffff:127.0.0.1]:80", tcp6, 0, true, true, "binds the one address 127.0.0.1:80", "--listen 127.0.0.1:80 ", ""},
		{"other family", "127.0.0.1:80", "[::1]:80", tcp6, 0, true, false, "the server binds [::1]:80, rpwrap manages 127.0.0.1:80", "--listen [::1]:80", ""},
		{"UDP on a managed TCP address", "127.0.0.1:53", "127.0.0.1:53", udp4, -1, true, false, "UDP socket, rpwrap's is tcp", "--listen udp://127.0.0.1:53", ""},
		{"UDP on another address", "127.0.0.1:53", "127.0.0.2:53", udp4, -1, false, false, "UDP socket", "", ""},
		{"MPTCP", "127.0.0.1:80", "127.0.0.1:80", sockKind{}, -1, true, false, "MPTCP socket, which rpwrap does not manage", "", ""},
		{"IPV6_V6ONLY asked, dual-stack managed", "[::]:80", "[::]:80", tcp6, 1, true, false, "", "", "also takes the IPv4 connections"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := &managed{Managed: Managed{Network: "tcp", Addr: netip.MustParseAddrPort(strings.TrimPrefix(c.managed, "udp://"))}}
			m.family, m.typ, m.proto = familyOf(m.Addr.Addr()), unix.SOCK_STREAM, unix.IPPROTO_TCP
			bind := netip.MustParseAddrPort(c.bind)
			sa := sockaddr{familyOf(bind.Addr()), bind}
			tg := fakeTarget(t, c.kind, c.v6only)
			x, related := relate(m, sa, tg)
			if related != c.related || x.mapped != c.mapped {
				t.Errorf("related %v mapped %v, want %v %v", related, x.mapped, c.related, c.mapped)
			}
			if (c.reason == "") != (x.reason == "") || !strings.Contains(x.reason, c.reason) {
				t.Errorf("reason %q, want one holding %q", x.reason, c.reason)
			}
			if !strings.Contains(x.use, c.use) {
				t.Errorf("use %q, want one holding %q", x.use, c.use)
			}
			if !strings.Contains(x.note, c.noteHave) || (c.noteHave == "" && x.note != "") {
				t.Errorf("note %q, want one holding %q", x.note, c.noteHave)
			}
		})
	}
}

// fakeTarget is a server's socket of kind; with v6only 0 or 1, a real
// AF_INET6 socket with that IPV6_V6ONLY stands in as the pidfd_getfd copy.
func fakeTarget(t *testing.T, kind sockKind, v6only int) *target {
	names := map[sockKind]string{}
	for n, k := range protoKinds {
		names[k] = n
	}
	tg := &target{kind: kind, proto: names[kind], dup: -1}
	if kind == (sockKind{}) {
		tg.proto = "MPTCP"
	}
	if v6only >= 0 {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		must(t, err)
		must(t, unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only))
		tg.dup = fd
		t.Cleanup(tg.close)
	}
	return tg
}
