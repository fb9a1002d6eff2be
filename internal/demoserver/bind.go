//go:build linux

package demoserver

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// bindListener binds addr itself, as a server without socket activation
// does (-bind): plain TCP, or UDP for udp://ADDR; SO_REUSEPORT only when
// reusePort.
func bindListener(addr string, reusePort bool) (sockets, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if reusePort {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	if udp, ok := strings.CutPrefix(addr, "udp://"); ok {
		pc, err := lc.ListenPacket(context.Background(), "udp", udp)
		if err != nil {
			return sockets{}, fmt.Errorf("bind %s: %w", addr, err)
		}
		return sockets{pcs: []net.PacketConn{pc}}, nil
	}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", strings.TrimPrefix(addr, "tcp://"))
	if err != nil {
		return sockets{}, fmt.Errorf("bind %s: %w", addr, err)
	}
	return sockets{lns: []net.Listener{ln}}, nil
}
