//go:build linux

package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ReadyKind is how rpwrap learns that a generation is ready to serve.
type ReadyKind string

// The readiness checks. See ParseReady.
const (
	ReadyNone   ReadyKind = "none"   // ready as soon as it started
	ReadyNotify ReadyKind = "notify" // READY=1 on its own NOTIFY_SOCKET
	ReadyAccept ReadyKind = "accept" // a probe connection to its socket is accepted
	ReadyHTTP   ReadyKind = "http"   // a probe GET of Arg answers 2xx
	ReadyExec   ReadyKind = "exec"   // the command Arg exits 0
	ReadyDelay  ReadyKind = "delay"  // Delay has passed
)

// Ready is a parsed --ready value.
type Ready struct {
	Kind  ReadyKind
	Arg   string        // path for http, command for exec
	Delay time.Duration // for delay
}

// String returns the --ready form of r.
func (r Ready) String() string {
	switch r.Kind {
	case ReadyHTTP, ReadyExec:
		return string(r.Kind) + ":" + r.Arg
	case ReadyDelay:
		return "delay:" + r.Delay.String()
	}
	return string(r.Kind)
}

// ParseReady parses `none`, `notify`, `accept`, `http:PATH`, `exec:CMD` or
// `delay:DURATION`; "" is the default (Ready{}: accept with a TCP address,
// none with UDP alone). It fails with a message that lists the valid forms.
func ParseReady(s string) (Ready, error) {
	if s == "" {
		return Ready{}, nil
	}
	kind, arg, hasArg := strings.Cut(s, ":")
	bad := func(why string) (Ready, error) {
		return Ready{}, fmt.Errorf("--ready %q: %s (want none, notify, accept, http:PATH, exec:CMD or delay:DURATION)", s, why)
	}
	switch k := ReadyKind(kind); k {
	case ReadyNone, ReadyNotify, ReadyAccept:
		if hasArg {
			return bad("takes no argument")
		}
		return Ready{Kind: k}, nil
	case ReadyHTTP:
		if !strings.HasPrefix(arg, "/") {
			return bad("the path must start with /")
		}
		if strings.ContainsAny(arg, " \r\n") {
			return bad("the path must not contain spaces or line breaks")
		}
		return Ready{Kind: k, Arg: arg}, nil
	case ReadyExec:
		if strings.TrimSpace(arg) == "" {
			return bad("the command is empty")
		}
		return Ready{Kind: k, Arg: arg}, nil
	case ReadyDelay:
		d, err := time.ParseDuration(arg)
		if err != nil || d < 0 {
			return bad("not a duration such as 2s or 500ms")
		}
		return Ready{Kind: k, Delay: d}, nil
	}
	return bad("unknown kind")
}

// probeTargets are the addresses a probe to a listener on addr may connect
// to, best first: addr itself, or for a wildcard the loopback addresses of
// its family (any of 127.0.0.0/8 reaches an IPv4 wildcard).
func probeTargets(addr netip.AddrPort) []netip.AddrPort {
	ip := addr.Addr()
	if !ip.IsUnspecified() {
		return []netip.AddrPort{addr}
	}
	if ip.Is6() {
		return []netip.AddrPort{netip.AddrPortFrom(netip.IPv6Loopback(), addr.Port())}
	}
	var out []netip.AddrPort
	for last := byte(1); last <= 8; last++ {
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, last}), addr.Port()))
	}
	return out
}

// probeTarget is the first of probeTargets on which no socket outside the
// group listens with exactly that address: such a socket, more specific
// than a wildcard, would receive the probe instead of the group.
func probeTarget(addr netip.AddrPort, foreign []netip.AddrPort) netip.AddrPort {
	targets := probeTargets(addr)
	for _, t := range targets {
		if !slices.Contains(foreign, t) {
			return t
		}
	}
	return targets[0]
}

// sockaddrOf is ap as a sockaddr of the family a socket for ap has: IPv6
// for IPv6 and IPv4-mapped addresses, IPv4 otherwise.
func sockaddrOf(ap netip.AddrPort) (family int, sa unix.Sockaddr) {
	if ap.Addr().Is6() {
		return unix.AF_INET6, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	}
	return unix.AF_INET, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
}

// probeSocket is an unconnected TCP socket bound to a source port that
// rpwrap knows before the connection is made, so the selector can route the
// probe to the successor's slot ahead of the flip.
type probeSocket struct {
	fd    int
	local netip.AddrPort
}

// newProbeSocket binds a socket of target's address family, on target's
// address, to an ephemeral port.
func newProbeSocket(target netip.AddrPort) (_ *probeSocket, err error) {
	family, sa := sockaddrOf(netip.AddrPortFrom(target.Addr(), 0))
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("bind probe socket: %w", os.NewSyscallError("bind", err))
	}
	local, err := unix.Getsockname(fd)
	if err != nil {
		return nil, os.NewSyscallError("getsockname", err)
	}
	p := &probeSocket{fd: fd}
	switch a := local.(type) {
	case *unix.SockaddrInet4:
		p.local = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		p.local = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	default:
		return nil, fmt.Errorf("bind probe socket: unexpected address %T", local)
	}
	return p, nil
}

// port is the probe's source port, by which the selector routes it.
func (p *probeSocket) port() uint16 { return p.local.Port() }

// connect connects the probe to target within timeout and returns it as a
// net.Conn; the probe socket is consumed either way.
func (p *probeSocket) connect(target netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		unix.Close(p.fd)
		return nil, os.NewSyscallError("setsockopt SO_SNDTIMEO", err)
	}
	_, sa := sockaddrOf(target)
	for {
		err := unix.Connect(p.fd, sa)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(p.fd)
			return nil, fmt.Errorf("probe %s from port %d: %w", target, p.port(), os.NewSyscallError("connect", err))
		}
		break
	}
	f := os.NewFile(uintptr(p.fd), "probe")
	c, err := net.FileConn(f) // a dup; f's own descriptor is closed below
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", target, err)
	}
	return c, nil
}

// httpProbe sends GET path on c and checks for a 2xx status.
func httpProbe(ctx context.Context, c net.Conn, host, path string) error {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) }) // the server exited, or time is up
	defer stop()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: rpwrap-probe\r\nConnection: close\r\n\r\n", path, host)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("probe GET %s: read status: %w", path, err)
	}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return fmt.Errorf("probe GET %s: not an HTTP response: %q", path, strings.TrimSpace(line))
	}
	if len(f[1]) != 3 || f[1][0] != '2' {
		return fmt.Errorf("probe GET %s: status %s", path, strings.Join(f[1:], " "))
	}
	return nil
}

var errNotReady = errors.New("not ready")

// close releases a probe socket that was never connected.
func (p *probeSocket) close() { unix.Close(p.fd) }
