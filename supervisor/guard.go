//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/procfs"
)

// guard checks, before the flip, that g's server holds the sockets rpwrap
// gave it and listens on no socket of its own on their ports. A server that
// ignores LISTEN_FDS and binds a socket of its own would otherwise get no
// connection after the flip, and connections steered to rpwrap's socket
// would hang. With the bind route the server gets its sockets when it binds,
// which may come after the readiness check passed (--ready none, or a UDP
// server): guard then waits for that until ctx ends.
func (s *Supervisor) guard(ctx context.Context, g *generation, wait bool) error {
	if err := s.foreignSocket(g); err != nil {
		return err
	}
	for {
		missing := s.missingSocket(g)
		if missing < 0 {
			return nil
		}
		if !wait || s.cfg.Route != fdpass.Bind {
			return s.notHeld(g, missing)
		}
		select {
		case <-ctx.Done():
			return s.notHeld(g, missing)
		case <-g.done:
			return s.exitedUnready(g)
		case <-time.After(20 * time.Millisecond): // no event tells that a process received a socket
		}
	}
}

// missingSocket returns the index of the first of g's sockets that no
// process of g holds, or -1 when it holds them all.
func (s *Supervisor) missingSocket(g *generation) int {
	held := procfs.SocketInodes(procfs.Tree(g.pid))
	for i, l := range g.listeners {
		if !held[l.Inode()] {
			return i
		}
	}
	return -1
}

func (s *Supervisor) notHeld(g *generation, i int) error {
	spec, l := s.groups[i].spec, g.listeners[i]
	if s.cfg.Route == fdpass.Bind {
		return fmt.Errorf("the server did not bind %s, the address rpwrap manages (socket inode %d): "+
			"make its configuration listen on exactly %s, or give --listen the address it binds", spec, l.Inode(), spec.Addr)
	}
	return fmt.Errorf("the server does not hold the socket rpwrap passed for %s (inode %d): "+
		"it ignored it (route --pass %s); %s", spec, l.Inode(), s.cfg.Route, routeAdvice)
}

// foreignSocket fails when a process of g listens on the port of one of
// g's TCP sockets with a socket rpwrap did not create.
func (s *Supervisor) foreignSocket(g *generation) error {
	var held map[uint64]bool
	ours := s.ourInodes()
	for _, grp := range s.groups {
		if grp.spec.Network != "tcp" {
			continue
		}
		listening, err := fdpass.ListeningInodes(grp.spec.Addr.Port())
		if err != nil {
			return fmt.Errorf("check the sockets of %s: %w", g, err)
		}
		for _, inode := range listening {
			if ours[inode] {
				continue
			}
			if held == nil {
				held = procfs.SocketInodes(procfs.Tree(g.pid))
			}
			if held[inode] {
				return fmt.Errorf("the server listens on port %d with a socket of its own (inode %d) instead of the one rpwrap passed for %s: "+
					"it binds the port itself, so %s", grp.spec.Addr.Port(), inode, grp.spec, s.routeHint())
			}
		}
	}
	return nil
}

// routeHint says what to do about a server that binds its own socket.
func (s *Supervisor) routeHint() string {
	if s.cfg.Route == fdpass.Bind {
		return "check that it binds exactly the address given to --listen (rpwrap substitutes only that one)"
	}
	return "run it with --pass bind, or make it use the socket rpwrap passes (fd 3; --pass nginx for nginx, `bind fd@3` in HAProxy)"
}

// ourInodes are the inodes of every socket rpwrap created, in every live
// generation.
func (s *Supervisor) ourInodes() map[uint64]bool {
	ours := map[uint64]bool{}
	for _, gen := range s.liveGenerations() {
		for _, l := range gen.listeners {
			ours[l.Inode()] = true
		}
	}
	return ours
}

const routeAdvice = "use --pass bind for servers that bind their own port (Apache), --pass nginx for nginx, or `bind fd@3` in HAProxy's configuration"
