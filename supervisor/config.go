//go:build linux

package supervisor

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/systemd"
)

// Config is what a Supervisor runs and how.
type Config struct {
	Path string   // the server's executable, resolved (fdpass.LookPath)
	Argv []string // its argv, argv[0] as the user gave it
	Env  []string // its base environment; rpwrap adds LISTEN_*, NOTIFY_SOCKET, RPWRAP_GENERATION

	Listen  []fdpass.Spec      // the addresses to serve, in LISTEN_FDS order
	Adopted []*fdpass.Listener // sockets systemd passed to rpwrap: used instead of creating the first generation's

	Route    fdpass.Route // how the server receives its sockets
	Selector bpf.Flavour  // auto, ebpf or cbpf
	Backlog  int          // listen(2) backlog, the same for every generation

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
	// MaxDraining is how many replaced generations may drain at once
	// (default 4); when a restart would exceed it, the oldest draining one
	// is stopped first.
	MaxDraining int
	// DrainDelay is how long after the flip rpwrap waits before it sends the
	// predecessor its stop signal (default 0), for servers whose graceful
	// stop drops a request read at the wrong moment (Go's net/http
	// Shutdown, Python's http.server).
	DrainDelay time.Duration

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
	return nil
}
