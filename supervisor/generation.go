//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/fdpass/intercept"
	"github.com/rpwrap/rpwrap/systemd"
)

// group is one --listen address: a reuseport group and its selector.
type group struct {
	spec fdpass.Spec // the port resolved
	sel  bpf.Selector
}

// generation is one instance of the server and the sockets it was given.
//
// Ownership: the fields above the line are written only before the
// generation is published in Supervisor.gens (by newListeners and spawn),
// and only read afterwards; those below it are guarded by Supervisor.mu.
// exit is written once, before done is closed.
type generation struct {
	n         int
	pid       int
	proc      *process
	listeners []*fdpass.Listener // one per group, same order
	slots     []bpf.Slot
	notify    *systemd.NotifySocket
	started   time.Time
	binary    Binary        // the server's executable when it was spawned
	done      chan struct{} // closed when the main process has been reaped
	exit      Exit          // valid once done is closed
	log       *slog.Logger
	retired   chan struct{} // closed when retire has freed everything
	stopNow   chan struct{} // closed to end a drain early (cap, shutdown)
	stopOnce  sync.Once
	cancel    context.CancelFunc     // ends the generation's own goroutines (interception)
	helpers   sync.WaitGroup         // those goroutines
	inherited bool                   // its sockets are a dead generation's (respawn)
	ic        *intercept.Interceptor // bind interception, nil without --pass bind
	seccomp   *os.File               // the seccomp listener ic serves; closed when it ends
	signalled bool                   // draining: the stop signal was sent (guarded by Supervisor.mu)
	countBase []bpf.Counts           // per listener, what its slots had counted before it (respawn)

	// guarded by Supervisor.mu
	state    State
	deadline time.Time // draining: when it is killed
	flipped  time.Time // active or draining: when it became active
	standby  bool      // when replaced, stand by for a watch instead of draining
}

func newGeneration(n int) *generation {
	return &generation{n: n, state: StateStarting, retired: make(chan struct{}), stopNow: make(chan struct{})}
}

func (g *generation) String() string {
	if g.pid == 0 {
		return "generation " + strconv.Itoa(g.n)
	}
	return "generation " + strconv.Itoa(g.n) + " (pid " + strconv.Itoa(g.pid) + ")"
}

// exited reports whether the generation's main process has ended.
func (g *generation) exited() bool {
	if g.done == nil {
		return false
	}
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// endDrain asks a draining generation to stop now instead of at its
// deadline.
func (g *generation) endDrain() { g.stopOnce.Do(func() { close(g.stopNow) }) }

// newListeners opens one socket per group for a new generation and adds it
// to the group's selector, without activating it. On error nothing is left
// open or in a map.
func (s *Supervisor) newListeners(g *generation) (err error) {
	defer func() {
		if err != nil {
			if rerr := s.releaseListeners(g); rerr != nil {
				err = fmt.Errorf("%w; %v", err, rerr)
			}
		}
	}()
	for _, grp := range s.groups {
		var l *fdpass.Listener
		slot, err := grp.sel.Join(func() (bpf.Member, error) {
			var err error
			l, err = fdpass.Listen(grp.spec, s.cfg.Backlog)
			if err != nil {
				return nil, fmt.Errorf("open socket for %s: %w", g, err)
			}
			return l, nil
		})
		if err != nil {
			if l == nil {
				return err
			}
			return fmt.Errorf("add %s to the selector of %s: %w", grp.spec, g, err) // Join closed it
		}
		g.listeners = append(g.listeners, l)
		g.slots = append(g.slots, slot)
		if err := routeQUIC(grp, g.n, slot); err != nil {
			return fmt.Errorf("route the QUIC connection IDs of %s: %w", g, err)
		}
	}
	return nil
}

// spawn starts g's server through the exec shim on g's sockets. On error
// it has started nothing and left nothing open but g's sockets.
func (s *Supervisor) spawn(g *generation) (err error) {
	names := make([]string, len(s.groups))
	files := []*os.File{s.cfg.Stdin, s.cfg.Stdout, s.cfg.Stderr}
	for i, grp := range s.groups {
		names[i] = grp.spec.Name
		if s.cfg.Route != fdpass.Bind {
			files = append(files, g.listeners[i].File())
		}
	}
	var bindConn *os.File // our end of the pair the shim sends its seccomp listener over
	if s.cfg.Route == fdpass.Bind {
		ours, theirs, perr := socketPair()
		if perr != nil {
			return fmt.Errorf("start generation %d: %w", g.n, perr)
		}
		defer theirs.Close() // only the shim may hold it once it runs
		defer func() {
			if err != nil {
				ours.Close()
			}
		}()
		bindConn = ours
		files = append(files, theirs) // fd 3: fdpass.BindSocketFd
	}
	env := append(append([]string(nil), s.cfg.Env...), "RPWRAP_GENERATION="+strconv.Itoa(g.n))
	env = append(env, s.quicEnv(g.n)...)
	if s.cfg.Ready.Kind == ReadyNotify {
		ns, nerr := systemd.ListenNotify(s.cfg.RuntimeDir)
		if nerr != nil {
			return fmt.Errorf("create notify socket for generation %d: %w", g.n, nerr)
		}
		defer func() {
			if err != nil {
				ns.Close()
			}
		}()
		g.notify = ns
		env = append(env, "NOTIFY_SOCKET="+ns.Path())
	}
	exe, argv, env := fdpass.ShimCommand(s.cfg.Path, s.cfg.Argv, env, names, s.cfg.Route)
	p := procSpec{exe: exe, argv: argv, env: env, files: files}
	g.binary = binaryOf(s.cfg.Path)
	proc, exit, err := s.system().start(g, p)
	if err != nil {
		g.notify = nil
		return err
	}
	g.proc, g.pid, g.started, g.done = proc, proc.pid, time.Now(), make(chan struct{})
	g.log = s.cfg.Log.With("generation", g.n, "pid", g.pid)
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	if g.notify != nil {
		g.notify.SetPID(g.pid)
	}
	s.goSafe(func() {
		g.exit = <-exit
		close(g.done)
		select {
		case s.exits <- g:
		case <-s.quit:
		}
	})
	if bindConn != nil {
		theirs := files[len(files)-1]
		theirs.Close() // the shim's end: only the shim may hold it now
		// Returns once the shim has sent its listener, or with an error
		// when it exited without: the exit then fails the readiness check.
		if err := s.intercept(ctx, g, bindConn); err != nil {
			g.log.Error("bind interception not set up: the server's bind(2) of the managed addresses will fail", "err", err)
		}
	}
	return nil
}

// releaseListeners takes g's sockets out of their groups, closes rpwrap's
// copies and frees their slots. Anything still queued on them migrates to
// the active socket when the selector is eBPF. It returns the first error
// met: a slot whose socket may not have left its group stays taken.
func (s *Supervisor) releaseListeners(g *generation) error {
	var first error
	for i, l := range g.listeners {
		if l.Inode() == 0 {
			continue // closed already
		}
		var err error
		if i < len(g.slots) {
			err = s.groups[i].sel.Leave(g.slots[i], func() error { return s.leaveGroup(g, i, l) })
		} else {
			err = l.Close()
		}
		if err != nil && first == nil {
			first = fmt.Errorf("release socket of %s for %s: %w", g, l.Spec(), err)
		}
	}
	return first
}

// leaveGroup takes l, g's socket of group i, out of the group, inside the
// selector's Leave. With the classic selector a TCP socket leaves by
// shutdown(2), at once, whoever else still holds it, so that the kernel
// renumbers the group inside Leave and never later at some holder's close;
// what landed on it since the drain's last relay (a connection the kernel
// hashed there while another socket was leaving) is relayed first, unless
// it is the active socket (rpwrap stopping), since shutdown(2) resets what
// is queued. Every other socket leaves when rpwrap's copy, the last one once
// g's processes are gone, closes. rpwrap's copy is closed in every case; an
// error means the socket may still be in the group, and its slot stays.
func (s *Supervisor) leaveGroup(g *generation, i int, l *fdpass.Listener) error {
	var err error
	if sel := s.groups[i].sel; sel.Flavour() == bpf.CBPF && l.Spec().Network == "tcp" {
		if i >= len(g.slots) || g.slots[i] != sel.Active() {
			s.rescueListener(g, i, l)
		}
		err = l.Shutdown()
		if errors.Is(err, unix.ENOTCONN) { // no longer listening: it left the group before
			s.genLog(g).Warn("its socket had left its group already, before rpwrap took it out", "listener", l.Spec())
			err = nil
		}
	}
	if cerr := l.Close(); cerr != nil {
		s.genLog(g).Warn("close socket", "listener", l.Spec(), "err", cerr) // the descriptor is gone all the same
	}
	s.keepCounts(g, i) // closed: its slot counts nothing more
	return err
}

// genLog is g's logger; a generation whose server never started has none
// of its own yet.
func (s *Supervisor) genLog(g *generation) *slog.Logger {
	if g.log != nil {
		return g.log
	}
	return s.cfg.Log.With("generation", g.n)
}
