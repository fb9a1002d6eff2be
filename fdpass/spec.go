package fdpass

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// maxNameLen is the longest LISTEN_FDNAMES entry sd_listen_fds_with_names(3)
// accepts (FDNAME_MAX in systemd).
const maxNameLen = 255

// resolveTimeout bounds the one host name lookup ParseSpec makes.
const resolveTimeout = 10 * time.Second

// Spec is one parsed --listen entry.
//
// The default Name is the network and the port joined by a dash: "tcp-8080",
// "udp-53", "tcp-0" for port 0 (the name is fixed when parsed; resolving port 0
// in Listen does not rename it). ParseSpec alone gives two specs on the same
// port and network but different addresses ("127.0.0.1:8080" and
// "[::1]:8080") the same default name; ParseSpecs gives them distinct ones.
type Spec struct {
	Name    string         // LISTEN_FDNAMES entry
	Network string         // "tcp" or "udp"
	Addr    netip.AddrPort // ":80" means 0.0.0.0:80; "[::]:80" the IPv6 wildcard
}

// ParseSpec parses "[NAME=][tcp://|udp://]HOST:PORT". HOST may be empty
// (":80", the IPv4 wildcard), an IPv4 address, a bracketed IPv6 address
// ("[::]:80", "[::1]:8080") or a host name, which is resolved once, here: the
// first IPv4 address it resolves to, else the first IPv6 one. The scheme
// defaults to tcp://.
//
// It fails, naming the input, on a malformed address, a port that is not a
// number from 0 to 65535, a host name that does not resolve, an IPv6 zone
// ("%eth0", not supported), and a NAME that LISTEN_FDNAMES cannot carry: empty,
// holding ':' or a non-printable or non-ASCII character, or longer than 255
// bytes.
func ParseSpec(s string) (Spec, error) {
	return parseSpec(s, lookupHost)
}

// resolver maps a host name to its addresses.
type resolver func(host string) ([]netip.Addr, error)

func lookupHost(host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

func parseSpec(s string, resolve resolver) (Spec, error) {
	spec, hostport, err := splitSpec(s)
	if err != nil {
		return Spec{}, fmt.Errorf("parse listen address %q: %w", s, err)
	}
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return Spec{}, fmt.Errorf("parse listen address %q: %w", s, err)
	}
	addr, err := parseHost(host, resolve)
	if err != nil {
		return Spec{}, fmt.Errorf("parse listen address %q: %w", s, err)
	}
	spec.Addr = netip.AddrPortFrom(addr, port)
	if spec.Name == "" {
		spec.Name = defaultName(spec.Network, port)
	}
	return spec, nil
}

// splitSpec takes NAME= and the scheme off s.
func splitSpec(s string) (Spec, string, error) {
	var spec Spec
	if i := strings.LastIndexByte(s, '='); i >= 0 {
		spec.Name, s = s[:i], s[i+1:]
		if err := checkName(spec.Name); err != nil {
			return Spec{}, "", err
		}
	}
	spec.Network = "tcp"
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		if scheme != "tcp" && scheme != "udp" {
			return Spec{}, "", fmt.Errorf("unknown scheme %q: use tcp:// or udp://", scheme+"://")
		}
		spec.Network, s = scheme, rest
	}
	return spec, s, nil
}

// checkName enforces what sd_listen_fds_with_names(3) can carry.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name before '=': drop the '=' or write NAME=ADDR")
	case len(name) > maxNameLen:
		return fmt.Errorf("name is %d bytes long, LISTEN_FDNAMES allows at most %d", len(name), maxNameLen)
	case strings.ContainsRune(name, ':'):
		return fmt.Errorf("name %q holds ':', which separates LISTEN_FDNAMES entries", name)
	}
	for _, c := range []byte(name) {
		if c < 0x20 || c > 0x7e {
			return fmt.Errorf("name %q holds byte %#x: LISTEN_FDNAMES allows printable ASCII only", name, c)
		}
	}
	return nil
}

func splitHostPort(hostport string) (string, uint16, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("want HOST:PORT, e.g. :8080, 127.0.0.1:8080 or [::1]:8080: %w", err)
	}
	if portStr == "" || strings.TrimLeft(portStr, "0123456789") != "" {
		return "", 0, fmt.Errorf("port %q is not a number from 0 to 65535", portStr)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %s is out of range 0-65535", portStr)
	}
	return host, uint16(port), nil
}

func parseHost(host string, resolve resolver) (netip.Addr, error) {
	if host == "" {
		return netip.IPv4Unspecified(), nil
	}
	if strings.ContainsRune(host, '%') {
		return netip.Addr{}, fmt.Errorf("IPv6 zone in %q is not supported: use an address without %%ZONE", host)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		return addr, nil
	}
	if strings.ContainsRune(host, ':') {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv6 address", host)
	}
	addrs, err := resolve(host)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve host %q: %w (check the name, /etc/hosts and DNS)", host, errOr(err, "no addresses"))
	}
	return pickAddr(addrs), nil
}

// pickAddr takes the first IPv4 address, else the first one.
func pickAddr(addrs []netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap()
		}
	}
	return addrs[0]
}

func errOr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}

func defaultName(network string, port uint16) string {
	return network + "-" + strconv.Itoa(int(port))
}

// ParseSpecs parses every entry with ParseSpec, gives distinct default
// names to entries without NAME= that would share one, and checks the
// result with CheckDuplicates. The names, stable for a given list:
//
//   - one address on a network and port: NETWORK-PORT ("tcp-80"), whatever
//     its family;
//   - IPv4 and IPv6 addresses on the same network and port: the IPv4 one
//     keeps NETWORK-PORT, the IPv6 one is NETWORK6-PORT ("tcp-80" for
//     0.0.0.0:80, "tcp6-80" for [::]:80);
//   - several addresses of one family on the same network and port: each
//     of them is named with its address, IPv6 colons written as '_', since
//     LISTEN_FDNAMES cannot carry ':' ("tcp-127.0.0.1-80",
//     "tcp-127.0.0.2-80"; "tcp6-__1-80" for [::1]:80).
//
// An explicit NAME= is never changed. It fails as ParseSpec and
// CheckDuplicates do, with the first bad entry.
func ParseSpecs(entries []string) ([]Spec, error) {
	specs := make([]Spec, 0, len(entries))
	var defaulted []int
	for _, e := range entries {
		spec, err := ParseSpec(e)
		if err != nil {
			return nil, err
		}
		if !strings.ContainsRune(e, '=') {
			defaulted = append(defaulted, len(specs))
		}
		specs = append(specs, spec)
	}
	rename(specs, defaulted, func(s Spec) string { return familyName(s, false) })
	rename(specs, defaulted, func(s Spec) string { return familyName(s, true) })
	return specs, CheckDuplicates(specs)
}

// rename gives each spec of idx whose name it shares with another one of
// idx on a different address the name newName returns.
func rename(specs []Spec, idx []int, newName func(Spec) string) {
	addrs := map[string]map[netip.AddrPort]bool{}
	for _, i := range idx {
		n := specs[i].Name
		if addrs[n] == nil {
			addrs[n] = map[netip.AddrPort]bool{}
		}
		addrs[n][specs[i].Addr] = true
	}
	for _, i := range idx {
		if len(addrs[specs[i].Name]) > 1 {
			specs[i].Name = newName(specs[i])
		}
	}
}

// familyName is NETWORK-PORT for IPv4 and NETWORK6-PORT for IPv6, with the
// address between network and port if withAddr.
func familyName(s Spec, withAddr bool) string {
	network := s.Network
	if !s.Addr.Addr().Is4() {
		network += "6"
	}
	if !withAddr {
		return defaultName(network, s.Addr.Port())
	}
	addr := strings.ReplaceAll(s.Addr.Addr().String(), ":", "_")
	return network + "-" + addr + "-" + strconv.Itoa(int(s.Addr.Port()))
}

// String formats s as "[NAME=]SCHEME://HOST:PORT", leaving the name out when
// it is the default one; ParseSpec(s.String()) returns s again.
func (s Spec) String() string {
	addr := s.Network + "://" + s.Addr.String()
	if s.Name == defaultName(s.Network, s.Addr.Port()) {
		return addr
	}
	return s.Name + "=" + addr
}

// CheckDuplicates returns an error naming the first spec that repeats the
// network and address, or the name, of an earlier one, or nil if none does.
// Two specs that differ only by address family or by host ("0.0.0.0:80" and
// "127.0.0.1:80") are not duplicates here; the kernel decides about those
// when Listen binds them.
func CheckDuplicates(specs []Spec) error {
	byAddr := map[string]Spec{}
	byName := map[string]Spec{}
	for _, s := range specs {
		key := s.Network + "://" + s.Addr.String()
		if prev, ok := byAddr[key]; ok {
			return fmt.Errorf("listen address %s given twice (%s and %s): give each address once", key, prev, s)
		}
		if prev, ok := byName[s.Name]; ok {
			return fmt.Errorf("listener name %q given twice (%s and %s): give one of them its own name, e.g. --listen other=%s",
				s.Name, prev, s, key)
		}
		byAddr[key], byName[s.Name] = s, s
	}
	return nil
}
