//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
)

// Supervisor runs one server, generation after generation, on sockets it
// owns.
type Supervisor struct {
	cfg     Config
	groups  []*group
	reaper  *reaper
	control *controlServer

	exits    chan *generation // a generation's main process ended
	triggers chan chan<- RestartResult
	quit     chan struct{} // closed when Run returns
	ready    chan struct{} // closed when the first generation is serving

	mu         sync.Mutex
	gens       []*generation // live generations, oldest first
	active     *generation
	nextGen    int
	restarts   int
	rolledBack int
	respawns   int
	last       *RestartResult
}

// New checks cfg, opens the first generation's sockets (or takes the ones
// systemd passed) and attaches a selector to each group. It starts no
// process. On error it leaves no socket and no BPF object behind; errors from
// opening sockets carry the kernel's errno (errors.Is(err,
// syscall.EADDRINUSE)) and a message for the operator.
func New(cfg Config) (_ *Supervisor, err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.RuntimeDir, 0o700); err != nil {
		return nil, fmt.Errorf("create runtime directory: %w", err)
	}
	s := &Supervisor{
		cfg:      cfg,
		exits:    make(chan *generation),
		triggers: make(chan chan<- RestartResult),
		quit:     make(chan struct{}),
		ready:    make(chan struct{}),
		nextGen:  1,
	}
	// The control socket comes first: a second rpwrap started by mistake
	// for the same service stops here, before it touches the sockets.
	if cfg.ControlPath != "" {
		if s.control, err = listenControl(cfg.ControlPath, s); err != nil {
			return nil, explainFDLimit(err)
		}
	}
	first := &generation{n: 1, state: StateStarting}
	defer func() {
		if err != nil {
			s.closeGroups(first)
			if s.control != nil {
				s.control.close()
			}
			err = explainFDLimit(err)
		}
	}()
	first.listeners = cfg.Adopted
	if len(first.listeners) == 0 {
		for _, spec := range cfg.Listen {
			l, err := fdpass.Listen(spec, cfg.Backlog)
			if err != nil {
				return nil, err
			}
			first.listeners = append(first.listeners, l)
		}
	}
	for _, l := range first.listeners {
		if err := l.CheckAlone(); err != nil {
			return nil, err
		}
		sel, err := bpf.New(l, cfg.Selector)
		if err != nil {
			return nil, fmt.Errorf("attach selector to %s: %w", l.Spec(), err)
		}
		s.groups = append(s.groups, &group{spec: l.Spec(), sel: sel})
		first.slots = append(first.slots, sel.Active())
	}
	s.gens = []*generation{first}
	return s, nil
}

// closeGroups frees every selector and closes g's sockets.
func (s *Supervisor) closeGroups(g *generation) {
	for _, l := range g.listeners {
		l.Close()
	}
	for _, grp := range s.groups {
		grp.sel.Close()
	}
}

// Flavour reports the selector flavour in use: ebpf or cbpf.
func (s *Supervisor) Flavour() bpf.Flavour {
	if len(s.groups) == 0 {
		return ""
	}
	return s.groups[0].sel.Flavour()
}

// Listeners reports the addresses served, with port 0 resolved.
func (s *Supervisor) Listeners() []fdpass.Spec {
	specs := make([]fdpass.Spec, len(s.groups))
	for i, g := range s.groups {
		specs[i] = g.spec
	}
	return specs
}

// Run starts the first generation, waits until it is ready, and then
// serves: it forwards signals, restarts on SIGHUP and on control requests,
// and returns the exit status rpwrap should exit with (see ExitStatus in
// the package documentation) once the server has stopped. Run may be called
// once; it releases every socket, selector and the control socket before it
// returns.
func (s *Supervisor) Run(ctx context.Context) int {
	var err error
	if s.reaper, err = newReaper(); err != nil {
		s.cfg.Log.Error("cannot supervise children", "err", err)
		s.closeGroups(s.gens[0])
		return 1
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals()...)
	defer signal.Stop(sigs)
	defer s.reaper.close()
	defer close(s.quit)
	if s.control != nil {
		go s.control.serve()
		defer s.control.close()
	}
	defer s.release()

	first := s.gens[0]
	s.nextGen = 2
	if err := s.spawn(first); err != nil {
		s.cfg.Log.Error("cannot start the server", "err", explainFDLimit(err))
		return exitCodeFor(err)
	}
	first.log.Info("started", "command", s.cfg.Argv)
	return s.loop(ctx, sigs, first)
}

// release closes every socket and selector rpwrap still holds.
func (s *Supervisor) release() {
	s.mu.Lock()
	gens := s.gens
	s.gens = nil
	s.mu.Unlock()
	for _, g := range gens {
		if g.pid != 0 && !g.exited() {
			killGroup(g.pid)
			<-g.done
		}
		for _, l := range g.listeners {
			l.Close()
		}
	}
	for _, grp := range s.groups {
		grp.sel.Close()
	}
}

// Ready returns a channel that is closed once the first generation is
// ready and receives every new connection. It is never closed when the first
// generation fails: wait for Run to return as well.
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// Done returns a channel that is closed when Run has returned.
func (s *Supervisor) Done() <-chan struct{} { return s.quit }

// Active returns the number and pid of the generation that receives new
// connections, or zeros before the first is ready.
func (s *Supervisor) Active() (generation, pid int) {
	if g := s.current(); g != nil {
		return g.n, g.pid
	}
	return 0, 0
}

// Restart asks the running supervisor for a restart and waits for its
// result. A request during a restart is queued; all requests queued during
// one restart are served by the single restart that follows it.
func (s *Supervisor) Restart(ctx context.Context) (RestartResult, error) {
	reply := make(chan RestartResult, 1)
	select {
	case s.triggers <- reply:
	case <-s.quit:
		return RestartResult{}, errors.New("restart: rpwrap is stopping")
	case <-ctx.Done():
		return RestartResult{}, ctx.Err()
	}
	select {
	case r := <-reply:
		if r.Error != "" {
			return r, errors.New(r.Error)
		}
		return r, nil
	case <-s.quit:
		return RestartResult{}, errors.New("restart: rpwrap stopped before the restart ran")
	case <-ctx.Done():
		return RestartResult{}, ctx.Err()
	}
}

// signalTarget is the pid forwarded signals go to: the active generation's,
// or, before the first one is ready, the first generation's.
func (s *Supervisor) signalTarget() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active != nil {
		return s.active.pid
	}
	if len(s.gens) > 0 {
		return s.gens[0].pid
	}
	return 0
}

func (s *Supervisor) current() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

func (s *Supervisor) activate(g *generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active != nil && s.active != g && s.active.state == StateActive {
		s.active.state = StateDraining
	}
	s.active = g
	g.state = StateActive
}

func (s *Supervisor) setState(g *generation, st State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g.state = st
	if st == StateStopped {
		s.removeLocked(g)
	}
}

func (s *Supervisor) stateOf(g *generation) State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return g.state
}

func (s *Supervisor) removeLocked(g *generation) {
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i:i], s.gens[i+1:]...)
			return
		}
	}
}

func (s *Supervisor) liveGenerations() []*generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*generation(nil), s.gens...)
}

func (s *Supervisor) notifyReady() {
	if s.cfg.Notifier == nil {
		return
	}
	s.cfg.Notifier.Ready()
	if a := s.current(); a != nil {
		s.cfg.Notifier.Status("serving: generation %d (pid %d), %d restarts, %d rolled back", a.n, a.pid, s.restarts, s.rolledBack)
	}
}

// exitCodeFor maps a start error to a shell-like exit status.
func exitCodeFor(err error) int {
	switch {
	case errors.Is(err, fdpass.ErrNotFound):
		return 127
	case errors.Is(err, fdpass.ErrNotExecutable):
		return 126
	}
	return 1
}
