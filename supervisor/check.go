//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
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
		return s.retry(ctx, 20*time.Millisecond, func() error { return s.probe(ctx, g) })
	case ReadyExec:
		return s.retry(ctx, 200*time.Millisecond, func() error { return s.execCheck(ctx, g) })
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
func (s *Supervisor) probe(ctx context.Context, g *generation) error {
	for i, grp := range s.groups {
		if grp.spec.Network != "tcp" {
			continue
		}
		if err := s.probeOne(ctx, g, i); err != nil {
			return err
		}
	}
	return nil
}

func (s *Supervisor) probeOne(ctx context.Context, g *generation, i int) error {
	grp, l := s.groups[i], g.listeners[i]
	target := probeTarget(grp.spec.Addr)
	ps, err := newProbeSocket(target)
	if err != nil {
		return err
	}
	if err := grp.sel.SetProbe(ps.port, g.slots[i]); err != nil {
		ps.close()
		return fmt.Errorf("route probe to %s: %w", g, err)
	}
	defer grp.sel.ClearProbe(ps.port)
	timeout := time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	c, err := ps.connect(target, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if s.cfg.Ready.Kind == ReadyHTTP {
		return httpProbe(ctx, c, target.String(), s.cfg.Ready.Arg)
	}
	// The handshake completes in the kernel; the server has accepted the
	// probe once the queue of its socket, which only probes reach, is empty.
	for {
		q, _, err := fdpass.QueueDepth(l)
		if err != nil {
			return err
		}
		if q == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("probe connection to %s not accepted (%d queued)", grp.spec.Addr, q)
		case <-time.After(5 * time.Millisecond): // no event exists for "accepted"
		}
	}
}

// execCheck runs the --ready exec: command once through /bin/sh and
// returns nil when it exits 0.
func (s *Supervisor) execCheck(ctx context.Context, g *generation) error {
	env := append(append([]string(nil), s.cfg.Env...),
		"RPWRAP_GENERATION="+strconv.Itoa(g.n), "RPWRAP_PID="+strconv.Itoa(g.pid))
	p := procSpec{exe: "/bin/sh", argv: []string{"sh", "-c", s.cfg.Ready.Arg}, env: env,
		files: []*os.File{s.cfg.Stdin, s.cfg.Stderr, s.cfg.Stderr}}
	pid, exit, err := s.reaper.start(p.fork)
	if err != nil {
		return err
	}
	select {
	case e := <-exit:
		if e.Status.Exited() && e.Status.ExitStatus() == 0 {
			return nil
		}
		return fmt.Errorf("readiness command %q: %s", s.cfg.Ready.Arg, e)
	case <-ctx.Done():
		killGroup(pid)
		<-exit
		return ctx.Err()
	}
}
