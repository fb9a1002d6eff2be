//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
)

// Supervisor runs one server, generation after generation, on sockets it
// owns.
//
// Ownership: the event loop (loop) decides what runs: it starts restarts,
// respawns and the shutdown, one at a time. A restart runs on a goroutine
// of its own and every draining generation on another; the state they
// share (the live generations, their states, the counters) is guarded by
// mu, and a generation is published in gens only once it is complete (see
// generation). Status is built from one snapshot taken under mu.
type Supervisor struct {
	cfg        Config
	groups     []*group // fixed by New
	reaper     *reaper
	control    *controlServer
	health     *healthServer // nil without Config.HealthAddr
	metricsSrv *ownServer    // nil without Config.MetricsAddr
	metrics    *metrics      // nil without Config.MetricsAddr
	sys        system        // nil: the real operating system (see system)

	exits    chan *generation // a generation's main process ended
	triggers chan restartRequest
	quit     chan struct{} // closed when Run returns
	ready    chan struct{} // closed when the first generation is serving

	drains sync.WaitGroup // draining generations
	checks sync.WaitGroup // readiness checks
	relays relays         // connections rpwrap relays (cBPF)
	events eventBus       // the clients of ctl events (events.go)

	mu         sync.Mutex
	gens       []*generation // live generations, oldest first
	active     *generation
	nextGen    int
	restarts   int
	rolledBack int
	respawns   int
	last       *RestartResult
	lastFailed *RestartResult // the last rollback, even when a success came after it
	history    []*RestartResult
	roll       rollouts          // the canary and watch in progress
	finished   []*finishedCounts // the selector's counts of generations that let go of a socket (counters.go)
	stopping   bool              // SIGTERM came: /readyz reports not ready
	stopDelay  time.Time         // end of the stop delay, when there is one

	up upgrader // in-place upgrades of rpwrap itself (upgrade.go)
}

// restartRequest is one restart trigger: reply gets the result, at the
// flip or, with wait, once the predecessor is drained. reply is nil for a
// trigger nobody waits for (SIGHUP).
type restartRequest struct {
	reply chan<- RestartResult
	wait  bool
	opts  *RestartOptions // nil: the Config's watch and canary
	conn  *net.UnixConn   // the control client waiting for reply, carried across an upgrade; nil for none
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
	if err := CheckPrivateDir(cfg.RuntimeDir); err != nil {
		return nil, err
	}
	s := &Supervisor{
		cfg:      cfg,
		exits:    make(chan *generation),
		triggers: make(chan restartRequest),
		quit:     make(chan struct{}),
		ready:    make(chan struct{}),
		nextGen:  1,
		roll:     rollouts{cmds: make(chan rolloutCmd)},
	}
	s.up.init()
	// The control socket comes first: a second rpwrap started by mistake
	// for the same service stops here, before it touches the sockets.
	if cfg.ControlPath != "" {
		if s.control, err = listenControl(cfg.ControlPath, s); err != nil {
			return nil, explainFDLimit(err)
		}
	}
	if s.health, err = listenHealth(cfg.HealthAddr); err != nil {
		if s.control != nil {
			s.control.close()
		}
		return nil, explainFDLimit(err)
	}
	if err := s.listenMetrics(); err != nil {
		if s.control != nil {
			s.control.close()
		}
		s.health.close()
		return nil, explainFDLimit(err)
	}
	removeStaleNotifySockets(cfg.RuntimeDir)
	first := newGeneration(1)
	defer func() {
		if err != nil {
			s.closeGroups(first)
			if s.control != nil {
				s.control.close()
			}
			s.health.close()
			s.metricsSrv.close()
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
		sel, err := bpf.NewWithFlows(l, cfg.Selector, cfg.UDPFlows)
		if err != nil {
			return nil, fmt.Errorf("attach selector to %s: %w", l.Spec(), err)
		}
		s.groups = append(s.groups, &group{spec: l.Spec(), sel: sel})
		if sel.Flavour() == bpf.CBPF && len(cfg.Adopted) > 0 {
			return nil, fmt.Errorf("%s: the classic-BPF selector cannot steer a group with a socket from systemd: "+
				"systemd keeps its copy, so that socket stays in the group after its generation is gone, and the classic "+
				"program, which numbers the group's members, would send new connections to it; give rpwrap CAP_BPF "+
				"(AmbientCapabilities=CAP_BPF, or run it as root) for the eBPF selector, or let rpwrap create the "+
				"sockets (--listen) instead of a .socket unit", l.Spec())
		}
		if sel.Flavour() == bpf.CBPF && cfg.ShutdownAtFlip {
			return nil, fmt.Errorf("%s: --shutdown-at-flip needs the eBPF selector: with the classic-BPF selector "+
				"the kernel resets, instead of migrating, the connections still being set up on a socket shut down at the flip; "+
				"give rpwrap CAP_BPF, or leave the flag out (the old sockets then leave their groups after the drain, "+
				"their queues relayed)", l.Spec())
		}
		first.slots = append(first.slots, sel.Active())
		if err := routeQUIC(s.groups[len(s.groups)-1], first.n, sel.Active()); err != nil {
			return nil, fmt.Errorf("route the QUIC connection IDs of %s: %w", first, err)
		}
	}
	s.gens = []*generation{first}
	s.warnForeign()
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
// once; it releases every process, socket, selector, relay, the control
// socket and the health server before it returns. SIGTERM, SIGINT and the
// end of ctx stop it, after Config.StopDelay if set. A panic inside rpwrap
// is logged with its stack, kills every generation's process group, and
// Run returns 70 (EX_SOFTWARE).
func (s *Supervisor) Run(ctx context.Context) (code int) {
	defer s.health.close() // last: it answers 503 until the end
	defer s.metricsSrv.close()
	var err error
	if s.reaper, err = newReaper(s.up.adopting()); err != nil {
		s.cfg.Log.Error("cannot supervise children", "err", err)
		s.closeGroups(s.gens[0])
		return 1
	}
	sigs := signalChannel()
	signal.Notify(sigs, forwardedSignals()...)
	defer signal.Stop(sigs)
	defer s.reaper.close()
	if s.control != nil {
		defer s.control.wait() // after quit: restarts still asked are answered
	}
	defer close(s.quit)
	if s.control != nil {
		s.control.start()
		defer s.control.close()
	}
	s.startHealth()
	s.startMetrics()
	defer s.release()
	defer s.recoverPanic(&code)

	if s.up.resume != nil { // an in-place upgrade: the generations run already
		s.adoptGenerations()
		return s.loop(ctx, sigs, nil)
	}
	first := s.gens[0]
	s.mu.Lock()
	s.nextGen = 2
	s.gens = nil // published again once spawned
	s.mu.Unlock()
	if err := s.spawn(first); err != nil {
		s.cfg.Log.Error("cannot start the server", "err", explainFDLimit(err))
		s.retire(first, StateAbandoned)
		return exitCodeFor(err)
	}
	s.publish(first)
	first.log.Info("started", "command", s.cfg.Argv)
	return s.loop(ctx, sigs, first)
}

// publish makes g, complete, visible to Status and the other goroutines.
func (s *Supervisor) publish(g *generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gens = append(s.gens, g)
}

// release retires every generation still alive, ends every relay, and
// frees the selectors. Nothing rpwrap started outlives it.
func (s *Supervisor) release() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	for _, g := range s.liveGenerations() {
		g.endDrain()
		s.retire(g, finalOnRelease(s.stateOf(g)))
	}
	s.drains.Wait()
	s.checks.Wait()
	s.relays.closeAll()
	for _, grp := range s.groups {
		if err := grp.sel.Close(); err != nil {
			s.cfg.Log.Warn("free selector", "address", grp.spec, "err", err)
		}
	}
}

// finalOnRelease is the final state of a generation that is still alive
// when rpwrap exits.
func finalOnRelease(st State) State {
	if st == StateStarting || st == StateReady {
		return StateAbandoned
	}
	return StateStopped
}

// recoverPanic turns a panic on Run's goroutine into exit status 70; see
// goSafe for the other goroutines.
func (s *Supervisor) recoverPanic(code *int) {
	if r := recover(); r != nil {
		s.cfg.Log.Error("rpwrap bug: panic; stopping every server", "panic", r, "stack", string(debug.Stack()))
		*code = exitPanic
	}
}

// exitPanic is Run's status after a panic inside rpwrap (EX_SOFTWARE).
const exitPanic = 70

// goSafe runs fn on a goroutine of its own. A panic there is a bug in
// rpwrap: it is logged with its stack, every generation's process group is
// killed so that no server outlives rpwrap, and the process exits with
// status 70.
func (s *Supervisor) goSafe(fn func()) {
	go func() {
		defer func() {
			if r := recover(); r != nil {
				s.cfg.Log.Error("rpwrap bug: panic; stopping every server", "panic", r, "stack", string(debug.Stack()))
				s.mu.Lock()
				gens := append([]*generation(nil), s.gens...)
				s.mu.Unlock()
				for _, g := range gens {
					g.proc.killGroup()
				}
				os.Exit(exitPanic)
			}
		}()
		fn()
	}()
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
// result, which comes at the flip: the predecessor then drains in the
// background (RestartAndDrain waits for that too). A request during a
// restart is queued; all requests queued during one restart are served by
// the single restart that follows it. The error is the result's Error, or
// why no restart ran (rpwrap stopping, ctx done).
func (s *Supervisor) Restart(ctx context.Context) (RestartResult, error) {
	return s.request(ctx, restartRequest{})
}

// RestartAndDrain is Restart that returns once the predecessor has also
// been drained and retired, with Drained, Drain and Migrated set.
func (s *Supervisor) RestartAndDrain(ctx context.Context) (RestartResult, error) {
	return s.request(ctx, restartRequest{wait: true})
}

func (s *Supervisor) request(ctx context.Context, r restartRequest) (RestartResult, error) {
	return s.requestFrom(ctx, r, nil)
}

// requestFrom is request for r, from the control client r.conn; handed,
// if not nil, is called once the trigger has reached the event loop.
func (s *Supervisor) requestFrom(ctx context.Context, r restartRequest, handed func()) (RestartResult, error) {
	reply := make(chan RestartResult, 1)
	r.reply = reply
	select {
	case s.triggers <- r:
		if handed != nil {
			handed()
		}
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

// signalTarget is the process forwarded signals go to: the active
// generation's, or, before the first one is ready, the first generation's.
func (s *Supervisor) signalTarget() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.active != nil && !s.active.state.final():
		return s.active.proc
	case s.active == nil && len(s.gens) > 0:
		return s.gens[0].proc
	}
	return nil // the serving generation died: nobody to forward to
}

func (s *Supervisor) current() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// activate makes g, ready, the active generation; the one it replaces is
// draining from now on.
func (s *Supervisor) activate(g *generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.active; a != nil && a != g && a.state == StateActive && a.standby {
		s.setStateLocked(a, StateStandby) // the watch decides what comes next
	} else if a != nil && a != g && a.state == StateActive {
		s.setStateLocked(a, StateDraining)
		a.deadline = time.Now().Add(s.cfg.DrainTimeout) // in the same snapshot; startDrain sets it from the flip's start
	}
	s.setStateLocked(g, StateActive)
	g.flipped = time.Now()
	s.active = g
}

func (s *Supervisor) stateOf(g *generation) State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return g.state
}

func (s *Supervisor) liveGenerations() []*generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*generation(nil), s.gens...)
}

// notify sends one message to rpwrap's service manager, and logs a
// failure: systemd then believes a state that is not rpwrap's.
func (s *Supervisor) notify(what string, send func() error) {
	if !s.cfg.Notifier.Enabled() {
		return
	}
	if err := send(); err != nil {
		s.cfg.Log.Warn("cannot tell the service manager", "message", what, "err", err)
	}
}

func (s *Supervisor) notifyReady() {
	s.notify("READY=1", s.cfg.Notifier.Ready)
	if a := s.current(); a != nil {
		s.mu.Lock()
		restarts, rolledBack := s.restarts, s.rolledBack
		s.mu.Unlock()
		s.notify("STATUS", func() error {
			return s.cfg.Notifier.Status("serving: generation %d (pid %d), %d restarts, %d rolled back", a.n, a.pid, restarts, rolledBack)
		})
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
