//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// own is one of a server's own restart mechanisms, run as an operator
// would: the bench plays the operator who sends the signals.
type own struct {
	srv   realServer
	name  string
	setup func(s *site)                                 // the configuration variant it needs
	start func(in *ownInstance) error                   // start the first server
	swap  func(in *ownInstance, hook func([]int)) error // one restart
}

func (o own) Name() string { return o.srv.Name + " " + o.name }

// ownInstance is a server restarted by its own mechanism.
type ownInstance struct {
	o      own
	sc     scenario
	s      *site
	port   uint16
	gen    int
	master int // the server's top process
	stderr *os.File
	stop   func()
}

// handoverTimeout bounds the wait for a new generation; a bad
// configuration never produces one, so that wait is short.
func (in *ownInstance) handoverTimeout() time.Duration {
	if in.sc.BadConfig {
		return 3 * time.Second
	}
	return 20 * time.Second
}

// launch starts the binary copy with args as generation in.gen+1.
func (in *ownInstance) launch(args ...string) (int, error) {
	in.gen++
	cmd := exec.Command(in.s.bin, args...)
	cmd.Env = append(append(os.Environ(), apacheEnv()...), "RPWRAP_GENERATION="+strconv.Itoa(in.gen))
	cmd.Stdout, cmd.Stderr = in.stderr, in.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", in.s.bin, err)
	}
	pid := cmd.Process.Pid
	tracked.Store(pid, struct{}{})
	go func() { cmd.Wait(); tracked.Delete(pid) }()
	return pid, nil
}

// children are master's live children named like the server.
func (in *ownInstance) children(master int) []int {
	var out []int
	for _, p := range serverProcs(in.o.srv.Comm) {
		if p.PPid == master {
			out = append(out, p.Pid)
		}
	}
	return out
}

// tree is pid and its server descendants.
func (in *ownInstance) tree(pid int) []int { return subtree(pid, serverProcs(in.o.srv.Comm)) }

// waitReady waits until master's tree holds a listening socket on the
// port (and, with workers, has a worker). It fails when master exits or
// after the handover timeout.
func (in *ownInstance) waitReady(master int, workers bool) error {
	ok := pollUntil(in.handoverTimeout(), func() bool {
		if !alive([]int{master}) {
			return true
		}
		if workers && len(in.children(master)) == 0 {
			return false
		}
		return holdsListener(in.tree(master), in.port)
	})
	if !ok || !alive([]int{master}) {
		return fmt.Errorf("%s pid %d not serving within %s (exited or no listener); see %s", in.o.Name(), master, in.handoverTimeout(), in.stderr.Name())
	}
	return nil
}

// waitNewChild waits for a child of master that is not in old: the new
// workers of an in-place reload.
func (in *ownInstance) waitNewChild(master int, old []int) error {
	ok := pollUntil(in.handoverTimeout(), func() bool {
		for _, c := range in.children(master) {
			if !contains(old, c) {
				return true
			}
		}
		return !alive([]int{master})
	})
	if !ok || !alive([]int{master}) {
		return fmt.Errorf("%s: no new workers within %s of the reload (master alive: %v)", in.o.Name(), in.handoverTimeout(), alive([]int{master}))
	}
	return nil
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// reloadInPlace is a reload by signal to the master that replaces its
// workers (Apache USR1/HUP, nginx HUP, HAProxy -W USR2).
func reloadInPlace(sig syscall.Signal) func(*ownInstance, func([]int)) error {
	return func(in *ownInstance, hook func([]int)) error {
		old := in.children(in.master)
		hook(old) // hung workers; the master still takes the signal
		if err := syscall.Kill(in.master, sig); err != nil {
			return fmt.Errorf("signal %s pid %d: %w", in.o.Name(), in.master, err)
		}
		err := in.waitNewChild(in.master, old)
		if err == nil || in.sc.HangAfter {
			waitGone(old, in.sc.grace()) // a refused reload keeps the old workers serving
		}
		return err
	}
}

// stopStart is the naive restart: graceful stop, wait, start.
func stopStart(sig syscall.Signal) func(*ownInstance, func([]int)) error {
	return func(in *ownInstance, hook func([]int)) error {
		old := in.tree(in.master)
		hook(old) // a hung server gets its stop signal and ignores it
		syscall.Kill(in.master, sig)
		waitGone(old, in.sc.grace())
		return in.o.start(in)
	}
}

// startForeground starts the server in the foreground with args.
func startForeground(workers bool, args ...string) func(*ownInstance) error {
	return func(in *ownInstance) error {
		pid, err := in.launch(args...)
		if err != nil {
			return err
		}
		in.master = pid
		return in.waitReady(pid, workers)
	}
}

func (o own) Start(ctx context.Context, sc scenario) (instance, error) {
	return startOwn(o, sc)
}

func startOwn(o own, sc scenario) (*ownInstance, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	in := &ownInstance{o: o, sc: sc}
	if in.s, in.stop, err = prepareSite(o.srv, addr); err != nil {
		return nil, err
	}
	in.port = portOf(addr)
	if o.setup != nil {
		o.setup(in.s)
	}
	if in.stderr, err = os.Create(filepath.Join(in.s.dir, "stderr.log")); err == nil {
		err = in.s.writeConfig(0, false)
	}
	if err == nil {
		err = o.start(in)
	}
	if err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

func portOf(addr string) uint16 {
	_, p, _ := strings.Cut(addr, ":")
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

func (in *ownInstance) Addr() string    { return in.s.addr }
func (in *ownInstance) ServingPid() int { return in.master }
func (in *ownInstance) WrapperPid() int { return 0 }
func (in *ownInstance) Site() *site     { return in.s }
func (in *ownInstance) Restart(ctx context.Context) (timings, error) {
	return in.RestartHooked(ctx, func([]int) {})
}

// RestartHooked runs the mechanism; hook gets the old generation's
// processes right after the handover.
func (in *ownInstance) RestartHooked(ctx context.Context, hook func([]int)) (timings, error) {
	start := time.Now()
	var ready time.Duration
	err := in.o.swap(in, func(old []int) { ready = time.Since(start); hook(old) })
	return timings{Cycle: time.Since(start), Ready: ready}, err
}

// Serving tells whether the server's master (the process the bench
// signals) still runs.
func (in *ownInstance) Serving() bool {
	return alive([]int{in.master}) && len(serverProcs(in.o.srv.Comm)) > 0
}

// Recover starts the server anew after a restart left none running.
func (in *ownInstance) Recover(ctx context.Context) error {
	killComm(in.o.srv.Comm)
	return in.o.start(in)
}

func (in *ownInstance) Close() {
	killComm(in.o.srv.Comm)
	if in.stderr != nil {
		in.stderr.Close()
	}
	if in.stop != nil {
		in.stop()
	}
}

// prepareSite makes a directory for srv on addr, with a backend for
// HAProxy; stop removes both.
func prepareSite(srv realServer, addr string) (*site, func(), error) {
	dir, err := os.MkdirTemp("", "rpb-")
	if err != nil {
		return nil, nil, fmt.Errorf("create bench directory: %w", err)
	}
	stop := func() { os.RemoveAll(dir) }
	backend := ""
	if srv.Name == "haproxy" {
		b, bstop, err := startBackend()
		if err != nil {
			stop()
			return nil, nil, err
		}
		backend, stop = b, func() { bstop(); os.RemoveAll(dir) }
	}
	s, err := newSite(srv, dir, addr, backend)
	if err != nil {
		stop()
		return nil, nil, err
	}
	return s, stop, nil
}

var errNoPidFile = errors.New("no pid file")

// readPid reads a pid file.
func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, errNoPidFile
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
