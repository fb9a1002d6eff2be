//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/fdpass/intercept"
	"github.com/rpwrap/rpwrap/systemd"
)

// failAfterExec, set at build time (-ldflags -X
// github.com/rpwrap/rpwrap/supervisor.failAfterExec=REASON), makes Resume
// fail with REASON: the tests' stand-in for a new binary that passes its
// check and cannot take over.
var failAfterExec string

// ReadState reads the state document whose descriptor is in
// $RPWRAP_UPGRADE_STATE, and unsets the variable. It returns nil, nil when
// the variable is not set: rpwrap was not started by an upgrade.
func ReadState() (*UpgradeState, error) {
	v, ok := os.LookupEnv(envState)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(envState)
	fd, err := atoiStrict(v)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: not a descriptor number", envState, v)
	}
	b, err := readState(fd)
	if err != nil {
		return nil, err
	}
	return ParseState(b)
}

func atoiStrict(s string) (int, error) {
	n := 0
	if s == "" {
		return 0, errors.New("empty")
	}
	for _, c := range s {
		if c < '0' || c > '9' || n > 1<<20 {
			return 0, errors.New("not a number")
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// dupFd duplicates fd, close-on-exec: the passed descriptor stays intact
// for a fallback onto the previous binary until the take-over is done.
func dupFd(fd int) (int, error) {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return -1, fmt.Errorf("take over descriptor %d: %w", fd, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err))
	}
	return n, nil
}

func dupFile(fd int, name string) (*os.File, error) {
	n, err := dupFd(fd)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(n), name), nil
}

// Resume makes the Supervisor that takes over from the rpwrap that wrote
// st, after an in-place upgrade: cfg is this binary's configuration from
// rpwrap's own flags. It takes over duplicates of the descriptors st
// names; the originals stay open until Run serves, so that when Resume
// fails the previous binary can be run again with the same document
// (FallBack). It starts and reaps nothing: Run adopts the servers.
func Resume(cfg Config, st *UpgradeState) (_ *Supervisor, err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if failAfterExec != "" && st.Failed == "" {
		return nil, errors.New(failAfterExec)
	}
	s := &Supervisor{cfg: cfg, exits: make(chan *generation), triggers: make(chan restartRequest),
		quit: make(chan struct{}), ready: make(chan struct{}), nextGen: st.NextGen,
		restarts: st.Restarts, rolledBack: st.RolledBack, respawns: st.Respawns,
		roll: rollouts{cmds: make(chan rolloutCmd)}} // as New makes them
	s.up.self, s.up.binary, s.up.started, s.up.since, s.up.history = st.Self, st.Binary, st.Started, time.Now(), st.Upgrades
	s.up.init()
	processStarted = st.Started
	defer func() {
		if err != nil {
			s.closeResumed()
		}
	}()
	if err := s.resumeSockets(st); err != nil {
		return nil, err
	}
	for _, gs := range st.Generations {
		g, err := s.resumeGeneration(st, gs)
		if g != nil {
			s.gens = append(s.gens, g)
		}
		if err != nil {
			return nil, err
		}
		if g.n == st.Active {
			s.active = g
		}
	}
	if s.active == nil {
		return nil, fmt.Errorf("take over: the active generation %d is not in the state document", st.Active)
	}
	if err := s.resumeSelectors(st); err != nil {
		return nil, err
	}
	for i := range st.History {
		h := st.History[i]
		s.history = append(s.history, &h)
	}
	if st.LastIsHistory && len(s.history) > 0 {
		s.last = s.history[len(s.history)-1]
	} else if st.Last != nil {
		last := *st.Last
		s.last = &last
	}
	if st.LastFailed != nil {
		failed := *st.LastFailed
		s.lastFailed = &failed
	}
	s.up.resume = st
	close(s.ready)
	return s, nil
}

// resumeSockets takes over the control socket and the health server's.
func (s *Supervisor) resumeSockets(st *UpgradeState) error {
	if st.Control >= 0 {
		f, err := dupFile(st.Control, "control")
		if err != nil {
			return err
		}
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("take over the control socket %s: %w", st.ControlPath, err)
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			l.Close()
			return fmt.Errorf("take over the control socket %s: not a unix socket", st.ControlPath)
		}
		ul.SetUnlinkOnClose(true)
		s.control = &controlServer{l: ul, path: st.ControlPath, s: s}
	}
	if st.Health >= 0 {
		f, err := dupFile(st.Health, "health")
		if err != nil {
			return err
		}
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("take over the health server's socket: %w", err)
		}
		s.health = &healthServer{what: "health server", ln: l}
	}
	if st.Metrics != nil && *st.Metrics >= 0 {
		f, err := dupFile(*st.Metrics, "metrics")
		if err != nil {
			return err
		}
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("take over the metrics endpoint's socket: %w", err)
		}
		s.metricsSrv = &ownServer{what: "metrics endpoint", ln: l}
		s.metrics = newMetrics(s)
	} else if err := s.listenMetrics(); err != nil { // a previous rpwrap without a metrics endpoint
		return err
	}
	return nil
}

// resumeGeneration rebuilds one generation, its process still to adopt.
func (s *Supervisor) resumeGeneration(st *UpgradeState, gs GenerationState) (*generation, error) {
	g := newGeneration(gs.N)
	g.pid, g.started, g.binary, g.inherited, g.slots = gs.Pid, gs.Started, gs.Binary, gs.Inherited, gs.Slots
	g.state, g.deadline, g.flipped, g.signalled = gs.State, gs.Deadline, gs.Flipped, gs.Signalled
	g.log = s.cfg.Log.With("generation", g.n, "pid", g.pid)
	for j, ls := range gs.Listeners {
		spec := st.Groups[j].Spec
		l, err := inheritListener(ls, spec)
		if err != nil {
			if g.state == StateActive {
				return g, err
			}
			g.log.Warn("upgrade: its socket did not cross; it drains without it", "address", spec, "err", err)
			l = fdpass.Released(spec)
		}
		g.listeners = append(g.listeners, l)
	}
	if n := gs.Notify; n != nil {
		fd, err := dupFd(n.FD)
		if err != nil {
			return g, err
		}
		if g.notify, err = systemd.InheritNotify(fd, n.Path, g.pid); err != nil {
			return g, err
		}
	}
	if gs.Seccomp >= 0 {
		f, err := dupFile(gs.Seccomp, "seccomp")
		if err != nil {
			return g, err
		}
		managed := make([]intercept.Managed, len(g.listeners))
		for i, l := range g.listeners {
			managed[i] = intercept.Managed{Network: l.Spec().Network, Addr: l.Spec().Addr, File: l.File()}
		}
		g.seccomp = f
		g.ic = intercept.New(f, managed, func(msg string, args ...any) { g.log.Info(msg, args...) })
		g.ic.Claim(gs.Claimed)
	}
	g.done = make(chan struct{})
	if gs.Exited != nil {
		g.exit = Exit{Pid: g.pid, Status: unix.WaitStatus(gs.Exited.Status)}
		close(g.done)
	}
	return g, nil
}

func inheritListener(ls ListenerState, spec fdpass.Spec) (*fdpass.Listener, error) {
	if ls.FD < 0 {
		return fdpass.Released(spec), nil
	}
	fd, err := dupFd(ls.FD)
	if err != nil {
		return nil, err
	}
	l, err := fdpass.Inherit(fd, spec, ls.Inode)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return l, nil
}

// resumeSelectors takes over each group's selector on the generations'
// sockets. After a fallback the previous binary loads a program of its
// own: the one that failed may have replaced the program already.
func (s *Supervisor) resumeSelectors(st *UpgradeState) error {
	for j, gs := range st.Groups {
		conns := map[bpf.Slot]syscall.Conn{}
		for _, g := range s.gens {
			if g.listeners[j].Inode() != 0 {
				conns[g.slots[j]] = g.listeners[j]
			}
		}
		h := gs.Selector
		h.Objects = nil
		for _, o := range gs.Selector.Objects {
			fd, err := dupFd(o.FD)
			if err != nil {
				return err
			}
			h.Objects = append(h.Objects, bpf.Object{Name: o.Name, FD: fd})
		}
		if st.Failed != "" {
			h.Layout = ""
		}
		sel, reloaded, err := bpf.Adopt(h, conns)
		if err != nil {
			return fmt.Errorf("take over the selector of %s: %w", gs.Spec, err)
		}
		if reloaded {
			s.cfg.Log.Info("upgrade: this binary's selector program differs: loaded it, filled its maps and attached it in place of the old one", "address", gs.Spec)
		}
		s.groups = append(s.groups, &group{spec: gs.Spec, sel: sel})
	}
	return nil
}

// closeResumed frees what a failed Resume took over (the duplicates).
func (s *Supervisor) closeResumed() {
	for _, g := range s.gens {
		for _, l := range g.listeners {
			l.Close()
		}
		if g.notify != nil {
			g.notify.CloseKeepFile()
		}
		if g.seccomp != nil {
			g.seccomp.Close()
		}
	}
	for _, grp := range s.groups {
		bpf.Forget(grp.sel)
	}
	if s.control != nil {
		s.control.l.SetUnlinkOnClose(false)
		s.control.l.Close()
	}
	if s.health != nil {
		s.health.ln.Close()
	}
}

// adopting lists the pids the reaper must wait for from its start.
func (u *upgrader) adopting() []int {
	if u.resume == nil {
		return nil
	}
	var pids []int
	for _, g := range u.resume.Generations {
		if g.Exited == nil {
			pids = append(pids, g.Pid)
		}
	}
	return pids
}

// adoptGenerations, in Run after an upgrade, adopts the servers, restarts
// bind interception and the drains, answers the clients carried over, and
// closes the passed descriptors, now duplicated.
func (s *Supervisor) adoptGenerations() {
	st := s.up.resume
	for _, g := range s.gens {
		if g.exited() {
			g.proc = &process{pid: g.pid, pidfd: -1, released: true}
			s.goSafe(func() {
				select {
				case s.exits <- g:
				case <-s.quit:
				}
			})
		} else {
			g.proc = openProcess(g.pid)
			s.watchExit(g, s.reaper.adopted[g.pid])
		}
		ctx, cancel := context.WithCancel(context.Background())
		g.cancel = cancel
		if g.ic != nil {
			s.serveIntercept(ctx, g)
		}
		if g.state == StateDraining {
			s.drains.Add(1)
			s.goSafe(func() { defer s.drains.Done(); s.resumeDrain(g) })
		}
	}
	s.answerCarried(st)
	var reply *os.File
	if st.Reply >= 0 {
		reply, _ = dupFile(st.Reply, "ctl upgrade")
	}
	closePassed(st)
	res := st.Current
	res.To, res.Took = s.cfg.Version, time.Since(st.Trigger)
	if st.Failed != "" {
		res.To, res.Fallback = st.From, true
		res.Error = fmt.Sprintf("rpwrap %s (%s) could not take over after the exec: %s; the previous binary runs again and serves on", st.Current.To, st.Binary, st.Failed)
		s.cfg.Log.Error("upgrade failed after the exec: back on the previous binary", "binary", st.Binary, "err", st.Failed, "version", s.cfg.Version)
		s.up.binary = st.Current.Binary
	} else {
		s.cfg.Log.Info("upgraded in place", "from", res.From, "to", res.To, "binary", st.Binary, "pid", os.Getpid(), "took", res.Took.Round(time.Microsecond))
	}
	s.up.mu.Lock()
	s.up.history = append(s.up.history, res)
	if len(s.up.history) > upgradeHistory {
		s.up.history = s.up.history[len(s.up.history)-upgradeHistory:]
	}
	s.up.mu.Unlock()
	if reply != nil {
		replyOn(reply, Response{OK: res.Error == "", Error: res.Error, Upgrade: &res})
	}
	s.notifyReady()
	for _, sig := range st.Signals {
		unix.Kill(os.Getpid(), syscall.Signal(sig))
	}
	s.up.resume = nil
}

// watchExit hands g's exit, from the reaper, to the event loop.
func (s *Supervisor) watchExit(g *generation, exit <-chan Exit) {
	s.goSafe(func() {
		g.exit = <-exit
		close(g.done)
		select {
		case s.exits <- g:
		case <-s.quit:
		}
	})
}

// takeCarried returns the restart triggers queued before an upgrade, each
// answered to its client, if it has one, by a goroutine of its own.
func (s *Supervisor) takeCarried() []restartRequest {
	var pending []restartRequest
	for _, p := range s.up.carried {
		pending = append(pending, p)
	}
	s.up.carried = nil
	return pending
}

// answerCarried prepares the queued triggers and the drain waiters.
func (s *Supervisor) answerCarried(st *UpgradeState) {
	for _, p := range st.Pending {
		r := restartRequest{wait: p.Wait, opts: p.Options}
		if p.FD >= 0 {
			f, err := dupFile(p.FD, "ctl restart")
			if err != nil {
				continue
			}
			reply := make(chan RestartResult, 1)
			r.reply = reply
			s.goSafe(func() {
				select {
				case res := <-reply:
					replyOn(f, Response{OK: res.Error == "", Error: res.Error, Restart: &res})
				case <-s.quit:
					replyOn(f, Response{Error: "rpwrap stopped before the restart ran"})
				}
			})
		}
		s.up.carried = append(s.up.carried, r)
	}
	for _, w := range st.Waiters {
		f, err := dupFile(w.FD, "ctl restart --wait")
		if err != nil {
			continue
		}
		var retired chan struct{}
		for _, g := range s.gens {
			if g.n == w.Drains {
				retired = g.retired
			}
		}
		s.goSafe(func() {
			if retired != nil {
				select {
				case <-retired:
				case <-s.quit:
				}
			}
			r := w.Restart
			s.mu.Lock()
			for _, h := range s.history {
				if h.Generation == r.Generation {
					r = *h
				}
			}
			s.mu.Unlock()
			replyOn(f, Response{OK: r.Error == "", Error: r.Error, Restart: &r})
		})
	}
}

// closePassed closes the descriptors the previous rpwrap passed, once
// their duplicates have taken over.
func closePassed(st *UpgradeState) {
	fds := []int{st.Control, st.Health, st.Reply, st.Fallback, st.Document}
	if st.Metrics != nil {
		fds = append(fds, *st.Metrics)
	}
	for _, g := range st.Groups {
		for _, o := range g.Selector.Objects {
			fds = append(fds, o.FD)
		}
	}
	for _, g := range st.Generations {
		for _, l := range g.Listeners {
			fds = append(fds, l.FD)
		}
		if g.Notify != nil {
			fds = append(fds, g.Notify.FD)
		}
		fds = append(fds, g.Seccomp)
	}
	for _, p := range st.Pending {
		fds = append(fds, p.FD)
	}
	for _, w := range st.Waiters {
		fds = append(fds, w.FD)
	}
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// resumeDrain goes on with the drain of g, which was draining when rpwrap
// upgraded itself: by the same steps and deadline as drain, skipping the
// stop signal when it was sent already.
func (s *Supervisor) resumeDrain(g *generation) {
	s.mu.Lock()
	deadline, tf, signalled := g.deadline, g.flipped, g.signalled
	rec := &RestartResult{}
	for _, h := range s.history {
		if h.Predecessor == g.n {
			rec = h
		}
	}
	s.mu.Unlock()
	handed := false
	if !signalled {
		if s.pause(g, time.Until(tf.Add(s.cfg.DrainDelay))) && !s.waitQueuesEmpty(g, deadline) {
			handed = true
			s.handOver(g, "not accepting")
		}
		s.stopSignal(g)
	}
	if s.watch(g, deadline) {
		handed = true
	}
	if s.Flavour() == bpf.CBPF {
		s.relayLingering(g, deadline)
	}
	s.mu.Lock()
	rec.Drained, rec.Drain, rec.Migrated = true, time.Since(tf), rec.Migrated || handed
	s.mu.Unlock()
	s.retire(g, StateStopped)
}

// FallBack executes the previous binary again, from the descriptor kept in
// st, with the same document marked with why the new one could not take
// over; the previous binary then serves on. It returns only when that is
// impossible: no previous binary (st was written by a fallback already),
// or the exec failed. notifier is rpwrap's own, nil if not read yet.
func FallBack(st *UpgradeState, why error, notifier *systemd.Notifier) error {
	if st.Failed != "" || st.Fallback < 0 || st.Document < 0 {
		return fmt.Errorf("no previous binary to fall back on (%s)", st.Failed)
	}
	st.Failed = why.Error()
	if err := writeState(st.Document, st); err != nil {
		return err
	}
	env := (&Supervisor{cfg: Config{Notifier: notifier}}).upgradeEnv(st.Document)
	exe := "/proc/self/fd/" + itoa(st.Fallback)
	run := onMainThread
	if run == nil {
		run = func(f func()) { f() }
	}
	var err error
	run(func() { err = syscall.Exec(exe, st.Argv, env) })
	return fmt.Errorf("execute the previous binary (%s): %w", exe, os.NewSyscallError("execve", err))
}

// earlySignals catches, in a binary started by an in-place upgrade, the
// signals from the moment the package is initialised: before Run, the Go
// runtime's default would end rpwrap (and its servers) on SIGHUP or
// SIGTERM. Run takes them over.
var earlySignals = func() chan os.Signal {
	if _, ok := os.LookupEnv(envState); !ok {
		return nil
	}
	c := make(chan os.Signal, 16)
	signal.Notify(c, forwardedSignals()...)
	return c
}()

// signalChannel is the channel Run receives rpwrap's signals on.
func signalChannel() chan os.Signal {
	if earlySignals != nil {
		return earlySignals
	}
	return make(chan os.Signal, 16)
}
