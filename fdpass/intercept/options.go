//go:build linux

package intercept

import "golang.org/x/sys/unix"

// sockOpt is an option a server may set before bind(2) that still matters
// on a listening socket: accepted sockets inherit it, or it shapes accept.
// SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY and IP_FREEBIND only shape the
// bind that rpwrap already did, and the backlog comes with the server's own
// listen(2), so none of those is copied.
type sockOpt struct {
	name       string
	level, opt int
	streamOnly bool
	doubled    bool // the kernel reports twice what was set (socket(7))
}

var copiedOptions = []sockOpt{
	{name: "SO_KEEPALIVE", level: unix.SOL_SOCKET, opt: unix.SO_KEEPALIVE},
	{name: "SO_RCVBUF", level: unix.SOL_SOCKET, opt: unix.SO_RCVBUF, doubled: true},
	{name: "SO_SNDBUF", level: unix.SOL_SOCKET, opt: unix.SO_SNDBUF, doubled: true},
	{name: "TCP_NODELAY", level: unix.IPPROTO_TCP, opt: unix.TCP_NODELAY, streamOnly: true},
	{name: "TCP_DEFER_ACCEPT", level: unix.IPPROTO_TCP, opt: unix.TCP_DEFER_ACCEPT, streamOnly: true},
	{name: "TCP_FASTOPEN", level: unix.IPPROTO_TCP, opt: unix.TCP_FASTOPEN, streamOnly: true},
}

// copyOptions sets on mfd each option of copiedOptions whose value differs
// on srv, and returns the names it set. An option it cannot read or set is
// left as it is.
func copyOptions(srv, mfd, typ int) []string {
	var copied []string
	for _, o := range copiedOptions {
		if o.streamOnly && typ != unix.SOCK_STREAM {
			continue
		}
		sv, err1 := unix.GetsockoptInt(srv, o.level, o.opt)
		mv, err2 := unix.GetsockoptInt(mfd, o.level, o.opt)
		if err1 != nil || err2 != nil || sv == mv {
			continue
		}
		set := sv
		if o.doubled {
			set = sv / 2
		}
		if unix.SetsockoptInt(mfd, o.level, o.opt, set) == nil {
			copied = append(copied, o.name)
		}
	}
	return copied
}

// optionNames lists the options copyOptions copies for sockets of type typ.
func optionNames(typ int) []string {
	var names []string
	for _, o := range copiedOptions {
		if !o.streamOnly || typ == unix.SOCK_STREAM {
			names = append(names, o.name)
		}
	}
	return names
}
