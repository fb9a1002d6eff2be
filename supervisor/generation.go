//go:build linux

package supervisor

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/systemd"
)

// State is where a generation is in its life.
type State string

// The states of a generation, in order.
const (
	StateStarting State = "starting" // started, not ready yet
	StateReady    State = "ready"    // ready, not receiving connections yet
	StateActive   State = "active"   // the selector sends it every new connection
	StateDraining State = "draining" // replaced, finishing its work
	StateStopped  State = "stopped"
)

// group is one --listen address: a reuseport group and its selector.
type group struct {
	spec fdpass.Spec // the port resolved
	sel  bpf.Selector
}

// generation is one instance of the server and the sockets it was given.
type generation struct {
	n         int
	pid       int
	listeners []*fdpass.Listener // one per group, same order
	slots     []bpf.Slot
	notify    *systemd.NotifySocket
	started   time.Time
	readyAt   time.Time // when it passed the readiness check
	state     State     // guarded by Supervisor.mu
	done      chan struct{}
	exit      Exit // valid once done is closed
	log       *slog.Logger

	interceptDone chan struct{} // Bind route: closed when no process of g is left to intercept
}

func (g *generation) String() string {
	if g.pid == 0 {
		return "generation " + strconv.Itoa(g.n)
	}
	return "generation " + strconv.Itoa(g.n) + " (pid " + strconv.Itoa(g.pid) + ")"
}

// exited reports whether the generation's main process has ended.
func (g *generation) exited() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// newListeners opens one socket per group for a new generation and adds it
// to the group's selector, without activating it. On error nothing is left
// open or in a map.
func (s *Supervisor) newListeners(g *generation) (err error) {
	defer func() {
		if err != nil {
			s.releaseListeners(g)
		}
	}()
	for _, grp := range s.groups {
		l, err := fdpass.Listen(grp.spec, s.cfg.Backlog)
		if err != nil {
			return fmt.Errorf("open socket for %s: %w", g, err)
		}
		g.listeners = append(g.listeners, l)
		slot, err := grp.sel.Add(l)
		if err != nil {
			return fmt.Errorf("add %s to the selector of %s: %w", grp.spec, g, err)
		}
		g.slots = append(g.slots, slot)
	}
	return nil
}

// releaseListeners closes rpwrap's copies of g's sockets and frees their
// slots. Anything still queued on them migrates to the active socket when
// the selector is eBPF.
func (s *Supervisor) releaseListeners(g *generation) {
	if g.interceptDone != nil && g.exited() {
		select { // its last process is going: no bind can need these sockets
		case <-g.interceptDone:
		case <-time.After(2 * time.Second): // a descendant outside its process group lives on
		}
	}
	for i, l := range g.listeners {
		inode := l.Inode()
		l.Close()
		if i < len(g.slots) {
			sel := s.groups[i].sel
			if sel.Flavour() == bpf.CBPF {
				// The kernel renumbers the group only once the socket's
				// last holder is gone, and a killed worker may still be
				// exiting: re-attaching the program with the new numbers
				// before that would send connections to the closing socket.
				waitLeftGroup(l.Spec(), inode)
			}
			sel.Remove(g.slots[i])
		}
	}
	g.listeners, g.slots = nil, nil
}

// waitLeftGroup waits, up to 2 s, until no TCP socket with inode listens on
// spec's port any more.
func waitLeftGroup(spec fdpass.Spec, inode uint64) {
	if spec.Network != "tcp" || inode == 0 {
		return
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		inodes, err := fdpass.ListeningInodes(spec.Addr.Port())
		if err != nil || !slices.Contains(inodes, inode) {
			return
		}
		time.Sleep(time.Millisecond) // the kernel gives no event for a socket's last close
	}
}

// spawn starts g's server through the exec shim on g's sockets.
func (s *Supervisor) spawn(g *generation) error {
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
		ours, theirs, err := socketPair()
		if err != nil {
			return fmt.Errorf("start generation %d: %w", g.n, err)
		}
		defer theirs.Close() // also closed right after the fork, below
		bindConn = ours
		files = append(files, theirs) // fd 3: fdpass.BindSocketFd
	}
	env := append(append([]string(nil), s.cfg.Env...), "RPWRAP_GENERATION="+strconv.Itoa(g.n))
	if s.cfg.Ready.Kind == ReadyNotify {
		ns, err := systemd.ListenNotify(s.cfg.RuntimeDir)
		if err != nil {
			return fmt.Errorf("create notify socket for generation %d: %w", g.n, err)
		}
		g.notify = ns
		env = append(env, "NOTIFY_SOCKET="+ns.Path())
	}
	exe, argv, env := fdpass.ShimCommand(s.cfg.Path, s.cfg.Argv, env, names, s.cfg.Route)
	p := procSpec{exe: exe, argv: argv, env: env, files: files}
	pid, exit, err := s.reaper.start(p.fork)
	if err != nil {
		if g.notify != nil {
			g.notify.Close()
		}
		if bindConn != nil {
			bindConn.Close()
		}
		return err
	}
	g.pid, g.started, g.done = pid, time.Now(), make(chan struct{})
	g.log = s.cfg.Log.With("generation", g.n, "pid", pid)
	if g.notify != nil {
		g.notify.SetPID(pid)
	}
	if bindConn != nil {
		files[len(files)-1].Close() // the shim's end: only the shim may hold it now
		// Returns once the shim has sent its listener, or with an error
		// when it exited without: the exit then fails the readiness check.
		if err := s.intercept(g, bindConn); err != nil {
			g.log.Error("bind interception not set up", "err", err)
		}
	}
	go func() {
		g.exit = <-exit
		close(g.done)
		select {
		case s.exits <- g:
		case <-s.quit:
		}
	}()
	return nil
}

// stop ends g: the stop signal, up to timeout for it to exit, then SIGKILL
// to its whole process group, so that no worker keeps a socket. It returns
// once g's main process is reaped.
func (s *Supervisor) stop(g *generation, timeout time.Duration) {
	if g.pid == 0 { // never started: nothing to stop
		s.setState(g, StateStopped)
		return
	}
	if !g.exited() {
		g.log.Info("stopping", "signal", sigName(s.cfg.StopSignal), "timeout", timeout)
		signalProcess(g.pid, s.cfg.StopSignal)
		t := time.NewTimer(timeout)
		select {
		case <-g.done:
		case <-t.C:
			g.log.Warn("did not stop in time: sending SIGKILL to its process group", "timeout", timeout)
			killGroup(g.pid)
			<-g.done
		}
		t.Stop()
	}
	killGroup(g.pid) // workers that outlived their master
	if g.notify != nil {
		g.notify.Close()
	}
	s.setState(g, StateStopped)
	g.log.Info("stopped", "exit", g.exit.String())
}

func sigName(sig syscall.Signal) string {
	for name, v := range signalNames {
		if v == sig {
			return name
		}
	}
	return sig.String()
}
