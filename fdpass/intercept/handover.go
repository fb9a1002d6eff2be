//go:build linux

package intercept

import (
	"net/netip"
	"slices"
)

// Claimed returns the managed addresses whose one bind of this generation
// has happened, so that an Interceptor made again for the same generation
// (rpwrap's in-place upgrade) goes on refusing a second bind of them. It
// is safe to call while Serve runs.
func (i *Interceptor) Claimed() []netip.AddrPort {
	var addrs []netip.AddrPort
	for _, m := range i.managed {
		if m.claimed.Load() {
			addrs = append(addrs, m.Addr)
		}
	}
	return addrs
}

// Claim marks the managed addresses in addrs as bound already (see
// Claimed). Call it before Serve.
func (i *Interceptor) Claim(addrs []netip.AddrPort) {
	for _, m := range i.managed {
		if slices.Contains(addrs, m.Addr) {
			m.claimed.Store(true)
		}
	}
}
