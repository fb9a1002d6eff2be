//go:build linux

package supervisor

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
)

// The health server answers load balancers and Kubernetes probes on a TCP
// socket of rpwrap's own (Config.HealthAddr), never passed to a server:
//
//	GET /livez   200 while rpwrap and an active generation live, else 503
//	GET /readyz  200 while a generation serves and rpwrap is not stopping;
//	             503 during the stop delay, the shutdown, and while no
//	             generation is active (before the first is ready, between
//	             a crash and the respawned generation)
//
// Each answer is one line of text that says why.

// healthServer is the HTTP server of /livez and /readyz (see ownServer).
type healthServer = ownServer

// CheckHealthAddr checks a health server address: [IP]:PORT, with an IP
// literal or nothing (every address), and not one that a listen address
// also covers (same port, same or a wildcard address). The error says what
// to write instead.
func CheckHealthAddr(addr string, listen []fdpass.Spec) error {
	return checkOwnAddr("--health", addr, listen)
}

// checkOwnAddr is CheckHealthAddr for the server of flag.
func checkOwnAddr(flag, addr string, listen []fdpass.Spec) error {
	ap, err := parseOwnAddr(flag, addr)
	if err != nil {
		return err
	}
	for _, spec := range listen {
		if spec.Network == "tcp" && ap.Port() != 0 && spec.Addr.Port() == ap.Port() && overlaps(spec.Addr.Addr(), ap.Addr()) {
			other := int(ap.Port()) + 1
			if other > 65535 {
				other = int(ap.Port()) - 1
			}
			return fmt.Errorf("%s %s: that is also a --listen address (%s): it needs a port of its own, which rpwrap never passes to a server, e.g. %s :%d",
				flag, addr, spec, flag, other)
		}
	}
	return nil
}

func parseOwnAddr(flag, addr string) (netip.AddrPort, error) {
	bad := fmt.Errorf("%s %q: want [ADDRESS]:PORT with an IP address or none, e.g. :8081, 127.0.0.1:8081 or [::1]:8081", flag, addr)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, bad
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, bad
	}
	ip := netip.IPv6Unspecified()
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil || ip.Zone() != "" {
			return netip.AddrPort{}, bad
		}
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

// overlaps reports whether sockets bound to a and b on one port collide.
func overlaps(a, b netip.Addr) bool {
	return a.Unmap() == b.Unmap() || a.IsUnspecified() || b.IsUnspecified()
}

// listenHealth opens the health server's socket; nil, nil when addr is "".
func listenHealth(addr string) (*healthServer, error) {
	return listenOwn("health server", "--health", addr)
}

// startHealth serves /livez and /readyz for s until close.
func (s *Supervisor) startHealth() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { answerHealth(w, s.healthNow(false)) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { answerHealth(w, s.healthNow(true)) })
	s.health.start(s, mux, "/livez and /readyz no longer answer")
}

type healthAnswer struct {
	ok   bool
	line string
}

func answerHealth(w http.ResponseWriter, a healthAnswer) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !a.ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, a.line)
}

// healthNow answers /readyz (ready) or /livez from one snapshot under mu.
func (s *Supervisor) healthNow(ready bool) healthAnswer {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.active
	switch {
	case a == nil && s.stopping:
		return healthAnswer{false, "not serving: stopping before the first generation was ready"}
	case a == nil:
		return healthAnswer{false, "not serving yet: the first generation is starting"}
	case a.state.final() || a.exited():
		return healthAnswer{false, fmt.Sprintf("not serving: %s exited; no generation serves until a new one is ready", a)}
	}
	serving := fmt.Sprintf("%s serving", a)
	switch {
	case !ready:
		return healthAnswer{true, "live: " + serving}
	case s.stopping && time.Now().Before(s.stopDelay):
		left := time.Until(s.stopDelay).Round(100 * time.Millisecond)
		return healthAnswer{false, fmt.Sprintf("not ready: stopping; %s for %s more (--stop-delay), then stops", serving, left)}
	case s.stopping:
		return healthAnswer{false, "not ready: stopping: " + a.String() + " is being stopped"}
	}
	return healthAnswer{true, "ready: " + serving}
}

// HealthAddr is the health server's address, port 0 resolved, or "" when
// there is none.
func (s *Supervisor) HealthAddr() string {
	if s.health == nil {
		return ""
	}
	return s.health.Addr()
}

// markStopping records that rpwrap is stopping, serving on until end (the
// stop delay) or not (end zero): /readyz reports not ready from now on.
func (s *Supervisor) markStopping(end time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	s.stopDelay = end
}

// beginStopDelay starts the stop delay after the first SIGTERM or SIGINT
// (or the end of Run's context): rpwrap serves on as before while /readyz
// reports not ready, so that load balancers stop sending before the server
// stops. Restarts queued are refused, and so is every trigger until the
// end. It returns the channel that fires when the delay is over, or nil
// when there is none (Config.StopDelay zero, or no generation serves yet,
// so no load balancer sends it anything): the shutdown is to begin now.
func (s *Supervisor) beginStopDelay(sig os.Signal, pending []restartRequest) <-chan time.Time {
	if s.cfg.StopDelay <= 0 || s.current() == nil {
		return nil
	}
	s.markStopping(time.Now().Add(s.cfg.StopDelay))
	s.cfg.Log.Info("stopping after --stop-delay: serving on, /readyz reports not ready; a second SIGTERM stops at once",
		"signal", sig, "stop_delay", s.cfg.StopDelay)
	for _, p := range pending {
		s.refuseRestart(p)
	}
	return time.After(s.cfg.StopDelay)
}

// refuseRestart answers a restart trigger that comes while rpwrap stops.
func (s *Supervisor) refuseRestart(r restartRequest) {
	if r.reply == nil {
		s.cfg.Log.Warn("restart not done: rpwrap is stopping (--stop-delay)")
		return
	}
	r.reply <- RestartResult{Error: "rpwrap is stopping (--stop-delay): restart not done"}
}
