//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"os"

	"github.com/rpwrap/rpwrap/fdpass/intercept"
	"golang.org/x/sys/unix"
)

// socketPair returns the two ends of a unix stream socket pair, close-on-exec.
func socketPair() (ours, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return os.NewFile(uintptr(fds[0]), "bind-route"), os.NewFile(uintptr(fds[1]), "bind-route-shim"), nil
}

// intercept receives g's seccomp listener over conn and answers the binds
// of g's process tree until the last of its processes is gone or ctx ends
// (g is retired): the first bind of each managed address gets g's socket
// (see fdpass/intercept). conn is closed either way.
func (s *Supervisor) intercept(ctx context.Context, g *generation, conn *os.File) error {
	defer conn.Close()
	notifyFd, err := intercept.Receive(conn)
	if err != nil {
		return fmt.Errorf("receive the seccomp listener of %s: %w", g, err)
	}
	managed := make([]intercept.Managed, len(g.listeners))
	for i, l := range g.listeners {
		managed[i] = intercept.Managed{Network: l.Spec().Network, Addr: l.Spec().Addr, File: l.File()}
	}
	ic := intercept.New(notifyFd, managed, func(msg string, args ...any) { g.log.Info(msg, args...) })
	g.ic, g.seccomp = ic, notifyFd
	s.serveIntercept(ctx, g)
	return nil
}

// serveIntercept answers g's binds on a goroutine of its own until ctx
// ends or no process is left under g's filter; then it closes g's seccomp
// listener.
func (s *Supervisor) serveIntercept(ctx context.Context, g *generation) {
	ic, notifyFd := g.ic, g.seccomp
	g.helpers.Add(1)
	s.goSafe(func() {
		defer g.helpers.Done()
		defer notifyFd.Close()
		if err := ic.Serve(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("bind interception ended", "err", err)
		}
	})
}
