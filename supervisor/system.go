//go:build linux

package supervisor

import (
	"context"
	"syscall"
)

// system is what the generation life cycle asks of the operating system
// about a generation's processes: start one, tell whether it is ready,
// whether it holds the sockets it was given, whether it still runs. The
// sockets and the selector stay real. realSystem is the one rpwrap runs
// with; the state machine's unit tests put a fake in Supervisor.sys.
type system interface {
	// start forks g's main process from p, as reaper.start does.
	start(g *generation, p procSpec) (*process, <-chan Exit, error)
	check(ctx context.Context, g *generation) error            // Supervisor.check
	recheck(ctx context.Context, g *generation, r Ready) error // Supervisor.checkOnce (--watch-check)
	guard(ctx context.Context, g *generation, wait bool) error // Supervisor.guard
	relisten(g *generation) error                              // Supervisor.relisten
	alive(g *generation) bool                                  // alive
	holdsSockets(g *generation) bool                           // Supervisor.holdsSockets
}

// processControl signals a process that is not a real child (a test's
// fake); see process.ctl.
type processControl interface {
	signal(sig syscall.Signal) error
	killGroup() error
}

// system returns the operating system the supervisor runs on: Supervisor.sys
// when set, the real one otherwise.
func (s *Supervisor) system() system {
	if s.sys != nil {
		return s.sys
	}
	return realSystem{s}
}

// realSystem is the real operating system: processes forked on the
// reaper's thread, readiness and sockets read from the kernel and /proc.
type realSystem struct{ s *Supervisor }

func (r realSystem) start(_ *generation, p procSpec) (*process, <-chan Exit, error) {
	return r.s.reaper.start(p.fork)
}

func (r realSystem) check(ctx context.Context, g *generation) error { return r.s.check(ctx, g) }

func (r realSystem) recheck(ctx context.Context, g *generation, c Ready) error {
	return r.s.checkOnce(ctx, g, c)
}

func (r realSystem) guard(ctx context.Context, g *generation, wait bool) error {
	return r.s.guard(ctx, g, wait)
}

func (r realSystem) relisten(g *generation) error    { return r.s.relisten(g) }
func (r realSystem) alive(g *generation) bool        { return alive(g) }
func (r realSystem) holdsSockets(g *generation) bool { return r.s.holdsSockets(g) }
