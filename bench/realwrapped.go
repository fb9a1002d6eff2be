//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rpwrap/rpwrap/supervisor"
)

// rpwrapReal is rpwrap around a real server, with that server's route
// (Apache: --pass bind, nginx: --pass nginx, HAProxy: bind fd@3 with
// --pass listen-fds), its graceful stop signal and --ready accept.
type rpwrapReal struct {
	bin      string
	srv      realServer
	selector string
}

func (r rpwrapReal) Name() string { return r.srv.Name + " rpwrap-" + r.selector }

// rpwrapRealInstance is one running rpwrap with its server.
type rpwrapRealInstance struct {
	*wrappedInstance
	srv  realServer
	s    *site
	port uint16
	stop func()
}

func (r rpwrapReal) Start(ctx context.Context, sc scenario) (instance, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	s, stop, err := prepareSite(r.srv, addr)
	if err != nil {
		return nil, err
	}
	if r.srv.Name == "haproxy" {
		s.listen = "fd@3"
	}
	if err := s.writeConfig(0, false); err != nil {
		stop()
		return nil, err
	}
	args := []string{"--listen", addr, "--pass", r.srv.Pass, "--stop-signal", r.srv.StopSignal, "--ready", "accept",
		"--selector", r.selector, "--drain-timeout", sc.grace().String(), "--drain-stall", "200ms",
		"--log-level", "error", "--"}
	switch r.srv.Name {
	case "apache":
		args = append(args, s.bin, "-DFOREGROUND", "-f", s.conf)
	case "nginx":
		args = append(args, s.bin, "-e", filepath.Join(s.dir, "error.log"), "-c", s.conf)
	default:
		args = append(args, s.bin, "-db", "-f", s.conf)
	}
	// rpwrap's own directory (control socket) lives inside the site's.
	rdir := filepath.Join(s.dir, "rpwrap")
	if err := os.Mkdir(rdir, 0o700); err != nil {
		stop()
		return nil, fmt.Errorf("create rpwrap directory: %w", err)
	}
	w, err := startRpwrap(ctx, r.bin, rdir, args, apacheEnv())
	if err != nil {
		killComm(r.srv.Comm)
		stop()
		return nil, err
	}
	return &rpwrapRealInstance{wrappedInstance: w, srv: r.srv, s: s, port: portOf(addr), stop: stop}, nil
}

func (in *rpwrapRealInstance) Site() *site { return in.s }

// RestartHooked gives hook the serving generation's whole process tree
// (rpwrap gives each generation a process group), then restarts through
// the control socket. The hang comes before the flip, not after it:
// after the flip rpwrap sends the stop signal at once and the old server
// is usually gone before a poll of the control socket sees the flip.
func (in *rpwrapRealInstance) RestartHooked(ctx context.Context, hook func([]int)) (timings, error) {
	st, err := in.status(ctx)
	if err != nil {
		return timings{}, err
	}
	_, oldPid := activeGeneration(st)
	hook(subtree(oldPid, descendants()))
	return in.Restart(ctx)
}

func activeGeneration(st *supervisor.Status) (gen, pid int) {
	for _, g := range st.Generations {
		if g.State == supervisor.StateActive {
			return g.Generation, g.Pid
		}
	}
	return 0, 0
}

// Serving tells whether rpwrap and a server still run.
func (in *rpwrapRealInstance) Serving() bool {
	select {
	case <-in.done:
		return false
	default:
	}
	return len(serverProcs(in.srv.Comm)) > 0
}

// Recover cannot bring back a dead rpwrap: the row fails.
func (in *rpwrapRealInstance) Recover(context.Context) error {
	return errors.New("rpwrap or its server exited; its log is above")
}

func (in *rpwrapRealInstance) Close() {
	in.wrappedInstance.Close()
	killComm(in.srv.Comm)
	in.stop()
}
