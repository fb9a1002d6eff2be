//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// rpwrap upgrades itself in place: `rpwrap ctl upgrade` or UpgradeSignal
// makes it execve(2) itself onto a new binary, so its pid (systemd's
// MAINPID) stays, the servers stay its children and keep running
// untouched, and everything it holds crosses the exec in a state document
// (upgradestate.go): the listening sockets, the selectors' programs and
// maps, the control socket (clients that connect meanwhile wait in its
// queue), the health server's socket, the notify sockets, bind
// interception's seccomp listeners, the generations with their states and
// drain deadlines, the queued restart triggers and their clients, the
// counters and the restart history.
//
//  1. The binary is checked before anything is given up: it must exist, be
//     an executable file, and, run as `BINARY __upgrade-check ARGS…` with
//     the state document, answer that it is an rpwrap that reads this
//     document and accepts these flags. Otherwise the upgrade is refused
//     and this rpwrap serves on as before.
//  2. The control socket stops accepting; restart requests already read
//     are queued. With the supervisor's and the reaper's locks held (no
//     restart runs, no generation is being retired, no exit status is in
//     flight), the document is written to a memfd, FD_CLOEXEC is cleared
//     on exactly the descriptors it names, and the thread that forked the
//     servers calls execve (PR_SET_PDEATHSIG fires when that thread ends:
//     only an exec from it keeps the servers alive).
//  3. The new binary reads the document, takes every descriptor over
//     (duplicates: the passed ones stay intact until it serves), reaps
//     what exited meanwhile, answers the `ctl upgrade` client and goes on.
//     When it cannot take over, it executes the previous binary again
//     (kept open as a descriptor) with the same document, which then
//     serves on and answers the client with the reason.

// UpgradeSignal asks rpwrap to upgrade itself onto the binary it was
// started from: signal 36, SIGRTMIN+2 as glibc numbers it (`kill -s
// RTMIN+2 PID` with procps or bash; `kill -36 PID` anywhere). No server is
// sent it.
const UpgradeSignal = syscall.Signal(36)

// envState names the descriptor of the state document in the environment
// of the binary that takes over (and of the check).
const envState = "RPWRAP_UPGRADE_STATE"

// upgradeHistory is how many upgrades Status reports.
const upgradeHistory = 10

// UpgradeResult is what one in-place upgrade did.
type UpgradeResult struct {
	From     string        `json:"from"`               // the version before
	To       string        `json:"to"`                 // the version after (the check's answer)
	Binary   string        `json:"binary"`             // the file executed
	Pid      int           `json:"pid"`                // rpwrap's pid, before and after
	At       time.Time     `json:"at"`                 // when it was asked for
	Took     time.Duration `json:"took_ns,omitempty"`  // asked for to the new rpwrap serving
	Check    time.Duration `json:"check_ns,omitempty"` // of which the check of the new binary
	Error    string        `json:"error,omitempty"`    // why it was refused or failed; "" on success
	Fallback bool          `json:"fallback,omitempty"` // the new binary could not take over: the previous one serves again
}

// upgradeRequest is one upgrade trigger. conn is the `ctl upgrade` client
// (nil for the signal): the new rpwrap answers it.
type upgradeRequest struct {
	binary string
	at     time.Time
	conn   *net.UnixConn
	reply  chan<- UpgradeResult
}

func (u upgradeRequest) answer(r UpgradeResult) {
	if u.reply != nil {
		u.reply <- r
	}
}

// upgrader is the supervisor's self-upgrade state.
type upgrader struct {
	once     sync.Once
	requests chan upgradeRequest

	mu      sync.Mutex
	self    string          // the path rpwrap was started from
	binary  string          // the file this binary runs from
	started time.Time       // when rpwrap first started
	since   time.Time       // when this binary took over
	history []UpgradeResult // earlier upgrades, oldest first
	late    map[*restartRequest]lateWaiter

	resume   *UpgradeState    // a resumed supervisor's document, until Run has taken it over
	carried  []restartRequest // the restart triggers queued before the upgrade
	retiring int              // generations inside retire; guarded by Supervisor.mu
}

// lateWaiter is a client answered once generation drains is retired.
type lateWaiter struct {
	drains int
	result RestartResult
}

func (u *upgrader) init() {
	u.once.Do(func() {
		u.requests = make(chan upgradeRequest)
		u.late = map[*restartRequest]lateWaiter{}
		if u.self == "" {
			u.self, u.binary, u.started, u.since = startPath(), startPath(), processStarted, processStarted
		}
	})
}

// startPath is the absolute path rpwrap was started from: argv[0] as the
// shell found it, else /proc/self/exe.
func startPath() string {
	if a := os.Args[0]; filepath.IsAbs(a) {
		return a
	} else if filepath.Base(a) != a {
		if abs, err := filepath.Abs(a); err == nil {
			return abs
		}
	} else if p, err := lookPathEnv(a); err == nil {
		return p
	}
	exe, _ := os.Executable()
	return exe
}

func lookPathEnv(name string) (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		if unix.Access(p, unix.X_OK) == nil && filepath.IsAbs(p) {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

// Upgrade asks the running supervisor to upgrade itself onto binary ("":
// the path rpwrap was started from, as it is now). It returns when the
// upgrade was refused (the error says why; this rpwrap serves on as
// before) or, on success, never: the new rpwrap answers conn. handed is
// called once the request has reached the event loop.
func (s *Supervisor) Upgrade(ctx context.Context, binary string, conn *net.UnixConn, handed func()) (UpgradeResult, error) {
	s.up.init()
	reply := make(chan UpgradeResult, 1)
	select {
	case s.up.requests <- upgradeRequest{binary: binary, at: time.Now(), conn: conn, reply: reply}:
	case <-s.quit:
		return UpgradeResult{}, errors.New("upgrade: rpwrap is stopping")
	case <-ctx.Done():
		return UpgradeResult{}, ctx.Err()
	}
	if handed != nil {
		handed()
	}
	select {
	case r := <-reply:
		if r.Error != "" {
			return r, errors.New(r.Error)
		}
		return r, nil
	case <-s.quit:
		return UpgradeResult{}, errors.New("upgrade: rpwrap stopped before the upgrade ran")
	case <-ctx.Done():
		return UpgradeResult{}, ctx.Err()
	}
}

// upgrade carries out u from the event loop, with no restart running. It
// returns only when the upgrade did not happen, with the restart triggers
// to run next (pending, and those that came meanwhile).
func (s *Supervisor) upgrade(u upgradeRequest, pending []restartRequest, sigs chan os.Signal) []restartRequest {
	res := UpgradeResult{From: s.cfg.Version, At: u.at, Pid: os.Getpid()}
	fail := func(err error) []restartRequest {
		res.Error = err.Error()
		s.cfg.Log.Error("upgrade not done: this rpwrap serves on unchanged", "binary", res.Binary, "err", err)
		u.answer(res)
		return pending
	}
	bin, err := s.upgradeBinary(u.binary)
	res.Binary = bin
	if err != nil {
		return fail(err)
	}
	if err := s.upgradable(); err != nil {
		return fail(err)
	}
	t0 := time.Now()
	if res.To, err = s.checkBinary(bin); err != nil {
		return fail(err)
	}
	res.Check = time.Since(t0)
	s.cfg.Log.Info("upgrading rpwrap in place", "from", res.From, "to", res.To, "binary", bin)
	s.notify("RELOADING=1", s.cfg.Notifier.Reloading)
	var signals []syscall.Signal
	pending, signals = s.freeze(pending, sigs)
	err = s.execUpgrade(bin, u, res, pending, signals)
	s.thaw()
	for _, sig := range signals {
		unix.Kill(os.Getpid(), sig) // the loop sees them again
	}
	s.notifyReady()
	return fail(err)
}

// upgradeBinary resolves and checks the file to upgrade onto.
func (s *Supervisor) upgradeBinary(bin string) (string, error) {
	if bin == "" {
		s.up.mu.Lock()
		bin = s.up.self
		s.up.mu.Unlock()
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return bin, fmt.Errorf("binary %s: %w", bin, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case err != nil:
		return abs, fmt.Errorf("binary %s: %w", abs, err)
	case !fi.Mode().IsRegular():
		return abs, fmt.Errorf("binary %s is not a regular file (%v)", abs, fi.Mode().Type())
	}
	if err := unix.Access(abs, unix.X_OK); err != nil {
		return abs, fmt.Errorf("binary %s is not executable (mode %v): chmod +x it", abs, fi.Mode().Perm())
	}
	return abs, nil
}

// upgradable says why rpwrap cannot upgrade now, or nil.
func (s *Supervisor) upgradable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopping:
		return errors.New("rpwrap is stopping")
	case s.active == nil || s.active.state != StateActive:
		return errors.New("no generation is serving (the server is being respawned): try again once one serves")
	case s.roll.cur != nil:
		return fmt.Errorf("a %s of generation %d is in progress: end it with ctl promote or ctl abort, then upgrade", s.roll.cur.Phase, s.roll.cur.Generation)
	case s.relays.count() > 0:
		return fmt.Errorf("rpwrap relays %d connections of a draining generation (cBPF): try again once that drain is over", s.relays.count())
	}
	for _, g := range s.gens {
		if g.state == StateStarting || g.state == StateReady {
			return fmt.Errorf("%s is starting: try again once the restart is over", g)
		}
	}
	return nil
}

// freeze stops the control socket accepting, collects the restart
// triggers already read from it, and takes the signals waiting in sigs:
// SIGHUP becomes a queued restart, the others are returned to be raised
// again after the exec.
func (s *Supervisor) freeze(pending []restartRequest, sigs chan os.Signal) ([]restartRequest, []syscall.Signal) {
	if s.control != nil {
		settled := s.control.pause()
		for waiting := true; waiting; {
			select {
			case r := <-s.triggers:
				pending = append(pending, r)
			case u := <-s.up.requests:
				u.answer(UpgradeResult{Error: "another upgrade is under way"})
			case <-settled:
				waiting = false
			case <-time.After(5 * time.Second):
				s.cfg.Log.Warn("upgrade: a control client is still being read after 5s; upgrading regardless")
				waiting = false
			}
		}
	}
	var signals []syscall.Signal
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				pending = append(pending, restartRequest{})
			} else if sig != UpgradeSignal {
				signals = append(signals, sig.(syscall.Signal))
			}
		default:
			return pending, signals
		}
	}
}

// thaw undoes freeze after an upgrade that did not happen.
func (s *Supervisor) thaw() {
	if s.control != nil {
		s.control.resume()
	}
}

// execUpgrade writes the state document and executes bin. It returns only
// on failure; nothing has been given up then.
func (s *Supervisor) execUpgrade(bin string, u upgradeRequest, res UpgradeResult, pending []restartRequest, signals []syscall.Signal) error {
	fallback, err := unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open this binary to fall back on: %w", os.NewSyscallError("open /proc/self/exe", err))
	}
	defer unix.Close(fallback)
	memfd, err := unix.MemfdCreate("rpwrap-state", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("create the state document: %w", os.NewSyscallError("memfd_create", err))
	}
	defer unix.Close(memfd)
	if err := s.lockSettled(); err != nil {
		return err
	}
	defer s.reaper.mu.Unlock()
	defer s.mu.Unlock()
	st, fds := s.stateLocked(bin, u, res, pending, signals)
	st.Document, st.Fallback = memfd, fallback
	fds = append(fds, memfd, fallback)
	if err := writeState(memfd, st); err != nil {
		return err
	}
	env := s.upgradeEnv(memfd)
	argv := append([]string(nil), os.Args...)
	return s.reaper.onThread(func() error {
		if err := setCloexec(fds, false); err != nil {
			setCloexec(fds, true)
			return err
		}
		err := syscall.Exec(bin, argv, env)
		setCloexec(fds, true)
		return fmt.Errorf("execute %s: %w", bin, os.NewSyscallError("execve", err))
	})
}

// lockSettled takes the supervisor's and the reaper's locks once no
// generation is being retired and no exit status reaped is on its way to
// its generation; it gives up after 5 s.
func (s *Supervisor) lockSettled() error {
	for deadline := time.Now().Add(5 * time.Second); ; {
		s.mu.Lock()
		s.reaper.mu.Lock()
		busy := s.up.retiring > 0
		for _, g := range s.gens {
			if g.proc != nil && !g.exited() && !s.reaper.waitingLocked(g.pid) {
				busy = true // reaped, its status not yet in g.exit
			}
		}
		if !busy {
			return nil
		}
		s.reaper.mu.Unlock()
		s.mu.Unlock()
		if time.Now().After(deadline) {
			return errors.New("a generation is being retired: try again in a few seconds")
		}
		time.Sleep(20 * time.Millisecond) // no event tells that a retire ended
	}
}

// upgradeEnv is rpwrap's environment for the binary that takes over:
// rpwrap's own, with what NewNotifier and the socket activation took out
// of it put back, and the state document's descriptor.
func (s *Supervisor) upgradeEnv(memfd int) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch name, _, _ := cut(kv); name {
		case envState, "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_PIDFDID", "LISTEN_FDS", "LISTEN_FDNAMES":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, envState+"="+itoa(memfd))
	if sock := s.cfg.Notifier.Socket(); sock != "" {
		env = append(env, "NOTIFY_SOCKET="+sock)
		env = append(env, s.cfg.Notifier.WatchdogEnv()...)
	}
	return env
}

func cut(kv string) (string, string, bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}

// setCloexec sets or clears FD_CLOEXEC on fds.
func setCloexec(fds []int, on bool) error {
	for _, fd := range fds {
		flag := 0
		if on {
			flag = unix.FD_CLOEXEC
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flag); err != nil {
			return fmt.Errorf("pass descriptor %d: %w", fd, os.NewSyscallError("fcntl F_SETFD", err))
		}
	}
	return nil
}

// count is the number of connections in the set.
func (cs *connSet) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.conns)
}
