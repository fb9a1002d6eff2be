//go:build linux

package supervisor

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/systemd"
)

// Config is what a Supervisor runs and how.
type Config struct {
	Version string // rpwrap's own version, shown by `rpwrap ctl status`

	Path string   // the server's executable, resolved (fdpass.LookPath)
	Argv []string // its argv, argv[0] as the user gave it
	Env  []string // its base environment; rpwrap adds LISTEN_*, NOTIFY_SOCKET, RPWRAP_GENERATION

	Listen  []fdpass.Spec      // the addresses to serve, in LISTEN_FDS order
	Adopted []*fdpass.Listener // sockets systemd passed to rpwrap: used instead of creating the first generation's

	Route    fdpass.Route // how the server receives its sockets
	Selector bpf.Flavour  // auto, ebpf or cbpf
	UDPFlows bpf.FlowMode // UDP groups, eBPF: tuple (default), quic or off; see flows.go
	// UDPFlowIdle is how long the flows of a replaced generation must be
	// silent before they are moved to the active one (at most half its
	// drain timeout after the flip). Default 2s.
	UDPFlowIdle time.Duration
	Backlog     int // listen(2) backlog, the same for every generation

	Ready        Ready         // readiness check for every generation
	ReadyTimeout time.Duration // a generation not ready by then is rolled back

	StopSignal   syscall.Signal // graceful stop: TERM, or WINCH for Apache, QUIT for nginx
	StopTimeout  time.Duration  // on rpwrap's own stop: SIGKILL after this
	DrainTimeout time.Duration  // on restart: the predecessor is SIGKILLed after this
	// DrainStall is how long the predecessor's accept queue may stay
	// non-empty without shrinking before rpwrap treats it as hung and hands
	// the queue to the successor (eBPF: shutdown(2), the kernel migrates it).
	DrainStall time.Duration
	// ShutdownAtFlip shuts the predecessor's sockets down right after the
	// flip, so their queues migrate at once, instead of after the drain.
	ShutdownAtFlip bool
	// DrainDelay is how long after the flip the predecessor keeps
	// running untouched before the drain begins and it gets the stop
	// signal: for servers whose graceful stop drops a request read at the
	// wrong moment (Go's net/http Shutdown, Python's http.server).
	DrainDelay time.Duration
	// MaxDraining caps how many replaced generations drain at once: a
	// restart that would exceed it first stops the oldest draining one
	// (stop signal, then SIGKILL after StopTimeout at most). Default 4.
	MaxDraining int

	// StopDelay is how long rpwrap serves on after SIGTERM or SIGINT (or
	// the end of Run's context) while /readyz reports not ready, before it
	// stops the server: the time a load balancer needs to stop sending. A
	// second signal ends it at once. 0: stop at once.
	StopDelay time.Duration
	// HealthAddr is where the health server (/livez, /readyz) listens,
	// [IP]:PORT on a socket of rpwrap's own; "" for none.
	HealthAddr string
	// MetricsAddr is where the Prometheus endpoint (/metrics) listens,
	// [IP]:PORT on a socket of rpwrap's own; "" for none (metrics.go).
	MetricsAddr string

	// Watch is how long after the flip the predecessor stands by, still
	// running, while the successor is watched (canary.go): its exit or a
	// failed WatchCheck flips back. 0: the predecessor drains at the flip.
	Watch time.Duration
	// WatchCheck is repeated every second during a canary and a watch
	// (accept, http:PATH or exec:CMD); Kind "" for none.
	WatchCheck Ready
	// Canary is the stages in which the successor gets a share of new
	// connections before the flip (eBPF selector only); nil for none.
	Canary []CanaryStage

	RestartOnFailure bool // a generation that dies is replaced, with backoff, instead of rpwrap exiting

	RuntimeDir  string // where per-generation notify sockets live (created 0700)
	ControlPath string // the control socket; "" for none

	Notifier *systemd.Notifier // to rpwrap's own service manager; nil for none
	Log      *slog.Logger
	Stdin    *os.File // the server's stdio; nil means rpwrap's own
	Stdout   *os.File
	Stderr   *os.File
}

func (c *Config) setDefaults() {
	if c.UDPFlows == "" {
		c.UDPFlows = bpf.FlowsTuple
	}
	if c.UDPFlowIdle <= 0 {
		c.UDPFlowIdle = 2 * time.Second
	}
	if c.Backlog <= 0 {
		c.Backlog = 4096
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 60 * time.Second
	}
	if c.StopSignal == 0 {
		c.StopSignal = syscall.SIGTERM
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 30 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.DrainStall <= 0 {
		c.DrainStall = 500 * time.Millisecond
	}
	if c.MaxDraining <= 0 {
		c.MaxDraining = 4
	}
	if c.Selector == "" {
		c.Selector = bpf.Auto
	}
	if c.Route == "" {
		c.Route = fdpass.ListenFDs
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Stdin == nil {
		c.Stdin = os.Stdin
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
}

func (c *Config) validate() error {
	if c.Path == "" || len(c.Argv) == 0 {
		return fmt.Errorf("no command to run")
	}
	if len(c.Listen) == 0 && len(c.Adopted) == 0 {
		return fmt.Errorf("no address to listen on: give --listen, or run from a systemd .socket unit")
	}
	if c.RuntimeDir == "" {
		return fmt.Errorf("no runtime directory")
	}
	if err := c.CheckHealth(); err != nil {
		return err
	}
	if err := c.CheckMetrics(); err != nil {
		return err
	}
	return c.validateReady()
}

// CheckHealth refuses a HealthAddr that is malformed or that one of the
// addresses served (Listen, Adopted) covers; see CheckHealthAddr. New
// calls it; a caller may too, to tell a bad flag from a failed start.
func (c *Config) CheckHealth() error {
	if c.HealthAddr == "" {
		return nil
	}
	specs := slices.Clone(c.Listen)
	for _, l := range c.Adopted {
		specs = append(specs, l.Spec())
	}
	return CheckHealthAddr(c.HealthAddr, specs)
}

// hasTCP reports whether one of the addresses is TCP.
func (c *Config) hasTCP() bool {
	for _, spec := range c.Listen {
		if spec.Network == "tcp" {
			return true
		}
	}
	for _, l := range c.Adopted {
		if l.Spec().Network == "tcp" {
			return true
		}
	}
	return false
}

// validateReady refuses a readiness check that cannot work with the
// addresses given. An unset check is accept when there is a TCP address,
// and none (for the bind route: the server's bind of every address) for UDP
// alone.
func (c *Config) validateReady() error {
	switch c.Ready.Kind {
	case "":
		c.Ready = Ready{Kind: ReadyAccept}
		if !c.hasTCP() {
			c.Ready = Ready{Kind: ReadyNone}
		}
	case ReadyAccept, ReadyHTTP:
		if !c.hasTCP() {
			return fmt.Errorf("--ready %s probes a TCP address, and every address given is UDP: use --ready notify, exec:CMD or delay:DURATION, or none "+
				"(with --pass bind, none waits until the server has bound every address)", c.Ready)
		}
	}
	return nil
}
