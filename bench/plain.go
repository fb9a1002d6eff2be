//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
)

// plain is a restart without rpwrap: the bench starts the demo server on
// a SO_REUSEPORT socket of its own and restarts it by stopping and
// starting processes. overlap false is stop-start (the old process exits,
// its socket with it, before the new one binds); overlap true is the
// seed's reuseport-overlap (the new process binds its own socket in the
// same group and is ready before the old one gets SIGTERM; no selector).
type plain struct {
	bin     string // the rpwrap binary, for serve-demo
	overlap bool
}

func (p plain) Name() string {
	if p.overlap {
		return "reuseport-overlap"
	}
	return "stop-start"
}

type plainInstance struct {
	p    plain
	sc   scenario
	spec fdpass.Spec
	dir  string
	cur  *server
}

const backlog = 4096 // rpwrap's default, so that every strategy has the same queue

func (p plain) Start(ctx context.Context, sc scenario) (instance, error) {
	spec, err := fdpass.ParseSpec("http=127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l, err := fdpass.Listen(spec, backlog)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "rpb-")
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("create bench directory: %w", err)
	}
	in := &plainInstance{p: p, sc: sc, spec: l.Spec(), dir: dir}
	if in.cur, err = startServer(ctx, p.bin, sc.serverArgs(), l, dir, 30*time.Second); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return in, nil
}

func (in *plainInstance) Addr() string    { return in.spec.Addr.String() }
func (in *plainInstance) ServingPid() int { return in.cur.pid() }
func (in *plainInstance) WrapperPid() int { return 0 }

func (in *plainInstance) Restart(ctx context.Context) (timings, error) {
	start := time.Now()
	old := in.cur
	if !in.p.overlap {
		old.stop(in.sc.grace())
	}
	l, err := fdpass.Listen(in.spec, backlog)
	if err != nil {
		return timings{}, fmt.Errorf("restart %s: %w", in.p.Name(), err)
	}
	next, err := startServer(ctx, in.p.bin, in.sc.serverArgs(), l, in.dir, 30*time.Second)
	if err != nil {
		return timings{}, fmt.Errorf("restart %s: %w", in.p.Name(), err)
	}
	ready := time.Since(start)
	in.cur = next
	if in.p.overlap {
		old.stop(in.sc.grace())
	}
	return timings{Cycle: time.Since(start), Ready: ready}, nil
}

func (in *plainInstance) Close() {
	if in.cur != nil {
		in.cur.stop(5 * time.Second)
	}
	os.RemoveAll(in.dir)
}
