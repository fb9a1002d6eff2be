//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
)

// plain is a restart without rpwrap: the bench starts the demo server
// itself, through socket activation, and restarts it by starting and
// stopping processes as the method says.
type plain struct {
	bin    string // the rpwrap binary, for serve-demo
	method method
	udp    bool // a UDP socket (the demo server echoes on it) instead of a TCP listener
}

// method is how a plain restart replaces the server.
type method int

const (
	// stopThenStart: the old process exits, its socket with it, before the new
	// one binds a socket of its own.
	stopThenStart method = iota
	// reuseportOverlap: the new process binds its own SO_REUSEPORT socket
	// (-bind -reuseport) in the same group and is ready before the old one
	// gets SIGTERM; no selector, so the kernel hashes new connections over
	// both sockets. The first generation gets the bench's socket. On UDP
	// the successor binds its own SO_REUSEPORT UDP socket (-bind
	// udp://ADDR) and the kernel hashes each client's flow over both; what
	// is queued on the old socket when the old server closes it is lost.
	reuseportOverlap
	// sharedSocket: one listening socket, created once and kept by the
	// bench (as systemd keeps a socket unit's, einhorn or tableflip keep
	// theirs, HAProxy -x fetches it, nginx's binary upgrade inherits it),
	// is passed to every generation; the new one is started while the old
	// one still accepts from the same queue, and the old one gets SIGTERM
	// once the new one is ready. On UDP both read the one socket's queue
	// meanwhile.
	sharedSocket
)

func (p plain) Name() string {
	switch p.method {
	case reuseportOverlap:
		return "reuseport-overlap"
	case sharedSocket:
		return "shared-socket"
	}
	return "stop-start"
}

type plainInstance struct {
	p      plain
	sc     scenario
	spec   fdpass.Spec
	dir    string
	shared *fdpass.Listener // sharedSocket: the one socket, for the instance's life
	cur    *server
}

const backlog = 4096 // rpwrap's default, so that every strategy has the same queue

// readyTimeout bounds a demo server's start; a successor that fails exits
// well before it.
const readyTimeout = 30 * time.Second

// listenSpec is the socket a strategy serves on: TCP (HTTP) or UDP (echo).
func listenSpec(udp bool) string {
	if udp {
		return "udp://127.0.0.1:0"
	}
	return "http=127.0.0.1:0"
}

func (p plain) Start(ctx context.Context, sc scenario) (instance, error) {
	spec, err := fdpass.ParseSpec(listenSpec(p.udp))
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
	if p.method == sharedSocket {
		in.shared = l
		in.cur, err = startOn(ctx, p.bin, sc.firstArgs(), l, dir, readyTimeout)
	} else {
		in.cur, err = startServer(ctx, p.bin, sc.firstArgs(), l, dir, readyTimeout)
	}
	if err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

func (in *plainInstance) Addr() string { return in.spec.Addr.String() }
func (in *plainInstance) ServingPid() int {
	if in.cur == nil {
		return 0
	}
	return in.cur.pid()
}
func (in *plainInstance) WrapperPid() int { return 0 }

// start starts a server with args on the strategy's socket: the shared
// one, or a new one in the reuseport group.
func (in *plainInstance) start(ctx context.Context, args []string) (*server, error) {
	switch {
	case in.shared != nil:
		return startOn(ctx, in.p.bin, args, in.shared, in.dir, readyTimeout)
	case in.p.method == reuseportOverlap:
		// The successor binds its own socket, as a server without socket
		// activation does: one that fails before it binds leaves nothing
		// in the group.
		own := append(slices.Clone(args), "-bind", in.spec.Addr.String(), "-reuseport", "-listen-backlog", strconv.Itoa(backlog))
		if in.p.udp {
			own = append(slices.Clone(args), "-bind", "udp://"+in.spec.Addr.String(), "-reuseport")
		}
		return startOn(ctx, in.p.bin, own, nil, in.dir, readyTimeout)
	}
	l, err := fdpass.Listen(in.spec, backlog)
	if err != nil {
		return nil, err
	}
	return startServer(ctx, in.p.bin, args, l, in.dir, readyTimeout)
}

// Restart replaces the server by a successor started with the scenario's
// successor flags. When the successor fails, the overlapping methods keep
// the old server, which never stopped serving; stop-start has none left
// and starts the previous version again, as an operator rolling back by
// hand would, and the restart's window lasts until it serves.
func (in *plainInstance) Restart(ctx context.Context) (timings, error) {
	start := time.Now()
	old := in.cur
	if in.p.method == stopThenStart {
		old.stop(in.sc.grace())
	}
	next, err := in.start(ctx, in.sc.successorArgs())
	ready := time.Since(start)
	if err != nil {
		err = fmt.Errorf("restart %s: %w", in.p.Name(), err)
		if in.p.method == stopThenStart {
			in.cur = nil
			back, rerr := in.start(ctx, in.sc.firstArgs())
			if rerr != nil {
				return timings{Cycle: time.Since(start)}, errors.Join(err, fmt.Errorf("start the previous version again: %w", rerr))
			}
			in.cur = back
		}
		return timings{Cycle: time.Since(start)}, err
	}
	in.cur = next
	if in.p.method != stopThenStart {
		old.stop(in.sc.grace())
	}
	return timings{Cycle: time.Since(start), Ready: ready}, nil
}

func (in *plainInstance) Close() {
	if in.cur != nil {
		in.cur.stop(5 * time.Second)
	}
	if in.shared != nil {
		in.shared.Close()
	}
	os.RemoveAll(in.dir)
}
