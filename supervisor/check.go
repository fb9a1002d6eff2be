//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/procfs"
)

// check runs the configured readiness check against g until it passes or
// ctx ends.
func (s *Supervisor) check(ctx context.Context, g *generation) error {
	switch s.cfg.Ready.Kind {
	case ReadyNone:
		return nil
	case ReadyDelay:
		t := time.NewTimer(s.cfg.Ready.Delay)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case ReadyNotify:
		_, err := g.notify.Ready(ctx)
		return err
	case ReadyAccept, ReadyHTTP:
		return s.retry(ctx, 20*time.Millisecond, func() error { return s.probe(ctx, g, s.cfg.Ready) })
	case ReadyExec:
		return s.retry(ctx, 200*time.Millisecond, func() error { return s.execCheck(ctx, g, s.cfg.Ready) })
	}
	return fmt.Errorf("unknown readiness check %q", s.cfg.Ready.Kind)
}

// retry runs fn until it succeeds or ctx ends, pausing interval between
// attempts, and returns the last error.
func (s *Supervisor) retry(ctx context.Context, interval time.Duration, fn func() error) error {
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(interval):
		}
	}
}

// probe connects to each of g's TCP sockets from a source port the
// selector routes to g's slot, whatever the active slot is, and checks that
// g accepts the connection (accept) or answers GET PATH with a 2xx (http).
func (s *Supervisor) probe(ctx context.Context, g *generation, r Ready) error {
	for i, grp := range s.groups {
		if grp.spec.Network != "tcp" {
			continue
		}
		if err := s.probeOne(ctx, g, i, r); err != nil {
			return err
		}
	}
	return nil
}

func (s *Supervisor) probeOne(ctx context.Context, g *generation, i int, r Ready) (err error) {
	grp, l := s.groups[i], g.listeners[i]
	target := probeTarget(grp.spec.Addr, s.foreignAddrs(i))
	ps, err := newProbeSocket(target)
	if err != nil {
		return err
	}
	port := ps.port()
	if err := grp.sel.SetProbe(port, g.slots[i]); err != nil {
		ps.close()
		return fmt.Errorf("route probe to %s: %w", g, err)
	}
	defer func() {
		// A route left behind would fill the selector's probe map, and
		// every later readiness check would fail.
		if cerr := grp.sel.ClearProbe(port); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clear probe route of port %d: %w", port, cerr))
		}
	}()
	timeout := time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	c, err := ps.connect(target, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := s.acceptedBy(ctx, g, i, l, target, ps.local); err != nil {
		return err
	}
	if r.Kind == ReadyHTTP {
		return httpProbe(ctx, c, target.String(), r.Arg)
	}
	return nil
}

// acceptedBy waits until a process of g has accepted the probe connection
// from local to target, from g's own socket l (of group i). The handshake
// completes in the kernel, whoever listens: only a connection that rpwrap
// has seen in l's accept queue (which only probes reach before the flip),
// or whose accepted socket a process of g holds, counts. A probe answered
// by another socket (one listening on a more specific address of the port)
// fails.
func (s *Supervisor) acceptedBy(ctx context.Context, g *generation, i int, l *fdpass.Listener, target, local netip.AddrPort) error {
	sawQueued := false
	for {
		if q, _, err := fdpass.QueueDepth(l); err == nil && q > 0 {
			sawQueued = true
		}
		c, err := fdpass.LookupConn(target, local)
		closed := errors.Is(err, syscall.ENOENT) || err == nil && c.Inode == 0 && c.State != fdpass.TCPEstablished && c.State != fdpass.TCPSynRecv
		switch {
		case closed && (sawQueued || !slices.Contains(s.foreignAddrs(i), target)):
			return nil // accepted and closed already: from l, the only socket that can have it
		case closed:
			return fmt.Errorf("probe connection to %s was closed before rpwrap saw it reach %s", target, g)
		case err != nil:
			return err
		case c.Inode != 0:
			if procfs.SocketInodes(procfs.Tree(g.pid))[c.Inode] || sawQueued {
				return nil // held by g, or taken from l by a process that left g's tree
			}
			return fmt.Errorf("probe connection to %s was accepted by a process outside %s: a socket of another program listens on %s, "+
				"more specific than %s, and takes the clients that connect to that address whatever rpwrap does", target, g, target, l.Spec().Addr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("probe connection to %s not accepted by %s", target, g)
		case <-time.After(2 * time.Millisecond): // no event exists for "accepted"
		}
	}
}

// foreignAddrs lists the addresses on group i's port of TCP listeners
// rpwrap did not create.
func (s *Supervisor) foreignAddrs(i int) []netip.AddrPort {
	socks, err := fdpass.Listening(s.groups[i].spec.Addr.Port())
	if err != nil {
		return nil
	}
	ours := s.ourInodes()
	var out []netip.AddrPort
	for _, so := range socks {
		if !ours[so.Inode] {
			out = append(out, so.Addr)
		}
	}
	return out
}

// execCheck runs the --ready exec: command once through /bin/sh and
// returns nil when it exits 0.
func (s *Supervisor) execCheck(ctx context.Context, g *generation, r Ready) error {
	env := append(append([]string(nil), s.cfg.Env...),
		"RPWRAP_GENERATION="+strconv.Itoa(g.n), "RPWRAP_PID="+strconv.Itoa(g.pid))
	p := procSpec{exe: "/bin/sh", argv: []string{"sh", "-c", r.Arg}, env: env,
		files: []*os.File{s.cfg.Stdin, s.cfg.Stderr, s.cfg.Stderr}}
	proc, exit, err := s.reaper.start(p.fork)
	if err != nil {
		return err
	}
	defer proc.release()
	select {
	case e := <-exit:
		if e.Status.Exited() && e.Status.ExitStatus() == 0 {
			return nil
		}
		return fmt.Errorf("readiness command %q: %s", r.Arg, e)
	case <-ctx.Done():
		if err := proc.killGroup(); err != nil {
			return err // it may run on: waiting for it could take forever
		}
		<-exit
		return ctx.Err()
	}
}
