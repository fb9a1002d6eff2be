//go:build linux

package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setState moves g to st, as the transitions table allows. A transition
// the table does not have is refused and logged: it is a bug in rpwrap.
func (s *Supervisor) setState(g *generation, st State) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setStateLocked(g, st)
}

func (s *Supervisor) setStateLocked(g *generation, st State) bool {
	if err := checkTransition(g.state, st); err != nil {
		s.cfg.Log.Error("rpwrap bug: refused a state change", "generation", g.n, "err", err)
		return false
	}
	g.state = st
	return true
}

// retire is the one way out of a generation, whatever ended it: drained,
// rolled back, crashed, failed to respawn, or rpwrap stopping. It kills
// what is left of its process group and waits for the main process, ends
// its interception, closes its notify socket and its pidfd, closes
// rpwrap's copies of its sockets and frees their selector slots (unless a
// successor inherited them), and removes it from the live generations with
// its final state st. It is idempotent: a second call does nothing.
func (s *Supervisor) retire(g *generation, st State) {
	s.mu.Lock()
	if g.state.final() {
		s.mu.Unlock()
		return
	}
	if !s.setStateLocked(g, st) {
		g.state = st // refused and logged; the generation must still end
	}
	s.removeLocked(g) // s.active may still name it: its exit status is rpwrap's until a successor serves
	s.up.retiring++   // no upgrade until it is over
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.up.retiring--
		s.mu.Unlock()
	}()

	if g.proc != nil {
		if err := g.proc.killGroup(); err != nil {
			g.log.Warn("kill process group", "err", err)
		}
		<-g.done
		if !g.proc.waitGroupGone(2 * time.Second) {
			g.log.Warn("processes of its group are still exiting after SIGKILL")
		}
		g.proc.release()
	}
	if g.cancel != nil {
		g.cancel() // ends bind interception
	}
	g.helpers.Wait()
	if g.notify != nil {
		if err := g.notify.Close(); err != nil {
			s.cfg.Log.Warn("close notify socket", "generation", g.n, "err", err)
		}
	}
	if !g.inherited {
		if err := s.releaseListeners(g); err != nil {
			s.cfg.Log.Error("release sockets", "generation", g.n, "err", err)
		}
	}
	close(g.retired)
	if g.log != nil {
		g.log.Info(string(st), "exit", g.exitString())
	}
}

// exitString describes how g's process ended, "" while it runs.
func (g *generation) exitString() string {
	if !g.exited() {
		return ""
	}
	return g.exit.String()
}

func (s *Supervisor) removeLocked(g *generation) {
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i:i], s.gens[i+1:]...)
			return
		}
	}
}

func sigName(sig syscall.Signal) string {
	for name, v := range signalNames {
		if v == sig {
			return name
		}
	}
	return sig.String()
}

// removeStaleNotifySockets removes the notify sockets an rpwrap that is
// gone left in dir (killed before it could clean up). A socket that another
// running rpwrap still receives on is left alone: connecting to it works.
func removeStaleNotifySockets(dir string) {
	paths, _ := filepath.Glob(filepath.Join(dir, "notify-*.sock"))
	for _, p := range paths {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return
		}
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: p})
		unix.Close(fd)
		if errors.Is(err, unix.ECONNREFUSED) {
			os.Remove(p)
		}
	}
}

// warnForeign logs a warning for each socket of another program that
// listens on a more specific address of a wildcard rpwrap serves: the
// kernel gives it the clients of that address, whatever rpwrap does.
func (s *Supervisor) warnForeign() {
	for i, grp := range s.groups {
		if grp.spec.Network != "tcp" || !grp.spec.Addr.Addr().IsUnspecified() {
			continue
		}
		for _, a := range s.foreignAddrs(i) {
			if a.Addr().IsUnspecified() {
				continue
			}
			if a.Addr().Unmap().Is4() == grp.spec.Addr.Addr().Is4() || grp.spec.Addr.Addr().Is6() {
				s.cfg.Log.Warn("another socket listens on a more specific address of this port: the clients that connect to that address reach it, not this server, whatever rpwrap does",
					"address", grp.spec.Addr, "other", a)
			}
		}
	}
}
