//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/supervisor"
	"github.com/rpwrap/rpwrap/systemd"
)

// runWrap is `rpwrap [FLAGS] -- COMMAND [ARGS...]`.
func runWrap(e env, args []string) int {
	st, err := supervisor.ReadState() // set when an in-place upgrade executed this binary
	if err != nil {
		printError(e.stderr, "rpwrap", "in-place upgrade: "+err.Error())
		return 1
	}
	o, cmd, err := parseOptions(e, args)
	if err != nil && st != nil {
		err = fmt.Errorf("%w; %v", err, supervisor.FallBack(st, fmt.Errorf("rpwrap's flags: %w", err), nil))
	}
	if err != nil {
		printError(e.stderr, "rpwrap", err.Error()+"\nTry 'rpwrap --help'.")
		return 2
	}
	switch {
	case o.help:
		fmt.Fprint(e.stdout, usage)
		return 0
	case o.version:
		fmt.Fprintln(e.stdout, "rpwrap", version)
		return 0
	}
	log, err := newLogger(e, o)
	if err != nil {
		printError(e.stderr, "rpwrap", err.Error())
		return 2
	}
	cfg, code := wrapConfig(e, o, cmd, log, st)
	if code != 0 {
		if st != nil {
			printError(e.stderr, "rpwrap", supervisor.FallBack(st, fmt.Errorf("rpwrap's configuration refused (exit %d)", code), nil).Error())
		}
		return code
	}
	s, err := newSupervisor(cfg, st)
	if err != nil {
		printError(e.stderr, "rpwrap", err.Error())
		return 1
	}
	if s.Flavour() == bpf.CBPF && bpf.Flavour(o.selector) == bpf.Auto {
		log.Warn("eBPF selector not available, using classic BPF: a hung old generation's queued connections are relayed by rpwrap, not migrated by the kernel, and a foreign member of the group takes a share", "reason", bpf.Supported())
	}
	log.Info("listening", "addresses", s.Listeners(), "selector", s.Flavour(), "control", cfg.ControlPath)
	warnFlows(log, s, cfg)
	if h := s.HealthAddr(); h != "" {
		log.Info("health server listening: GET /livez, /readyz", "address", h, "stop_delay", cfg.StopDelay)
	}
	if m := s.MetricsAddr(); m != "" {
		log.Info("metrics endpoint listening: GET /metrics (no authentication)", "address", m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.Notifier != nil {
		go cfg.Notifier.Watchdog(ctx)
	}
	return s.Run(ctx)
}

// wrapConfig turns options into a supervisor configuration. A non-zero
// code means an error was printed and rpwrap must exit with it.
func wrapConfig(e env, o *options, cmd []string, log *slog.Logger, st *supervisor.UpgradeState) (supervisor.Config, int) {
	fail := func(code int, format string, args ...any) (supervisor.Config, int) {
		printError(e.stderr, "rpwrap", fmt.Sprintf(format, args...))
		return supervisor.Config{}, code
	}
	if len(cmd) == 0 {
		return fail(2, "no command to run: rpwrap [FLAGS] -- COMMAND [ARGS...]\nTry 'rpwrap --help'.")
	}
	cfg := supervisor.Config{
		Argv: cmd, Backlog: o.backlog, ReadyTimeout: o.readyTimeout, StopTimeout: o.stopTimeout,
		DrainTimeout: o.drainTimeout, DrainStall: o.drainStall, ShutdownAtFlip: o.shutdownAtFlip,
		RestartOnFailure: o.restartOnFailure, Log: log, Version: version,
		MaxDraining: o.maxDraining, DrainDelay: o.drainDelay,
		StopDelay: o.stopDelay, HealthAddr: o.health, MetricsAddr: o.metrics, Watch: o.watch,
	}
	if err := checkBacklog(o.backlog, log); err != nil {
		return fail(2, "%v", err)
	}
	if o.maxDraining < 1 {
		return fail(2, "--max-draining %d: want 1 or more replaced generations that may drain at once (default 4)", o.maxDraining)
	}
	var err error
	if cfg.Ready, err = supervisor.ParseReady(o.ready); err != nil {
		return fail(2, "%v", err)
	}
	if cfg.WatchCheck, err = supervisor.ParseWatchCheck(o.watchCheck); err != nil {
		return fail(2, "%v", err)
	}
	if cfg.Canary, err = supervisor.ParseCanary(o.canary); err != nil {
		return fail(2, "%v", err)
	}
	sig, ok := supervisor.ParseSignal(o.stopSignal)
	if !ok {
		return fail(2, "--stop-signal %q: not a signal name such as TERM, WINCH or QUIT", o.stopSignal)
	}
	cfg.StopSignal = sig
	switch r := fdpass.Route(o.pass); r {
	case fdpass.ListenFDs, fdpass.Nginx, fdpass.Bind:
		cfg.Route = r
	default:
		return fail(2, "--pass %q: want listen-fds, nginx or bind", o.pass)
	}
	switch f := bpf.Flavour(o.selector); f {
	case bpf.Auto, bpf.EBPF, bpf.CBPF:
		cfg.Selector = f
	default:
		return fail(2, "--selector %q: want auto, ebpf or cbpf", o.selector)
	}
	if cfg.UDPFlows, err = bpf.ParseFlowMode(o.udpFlows); err != nil {
		return fail(2, "--udp-flows: %v", err)
	}
	if o.udpFlowIdle <= 0 {
		return fail(2, "--udp-flow-idle %s: want a positive duration such as 2s", o.udpFlowIdle)
	}
	cfg.UDPFlowIdle = o.udpFlowIdle
	if cfg.Listen, err = fdpass.ParseSpecs(o.listen); err != nil {
		return fail(2, "--listen: %v", err)
	}
	if cfg.Path, err = fdpass.LookPath(cmd[0]); err != nil {
		code := 1
		var ce *fdpass.CommandError
		if errors.As(err, &ce) {
			code = ce.ExitCode()
		}
		return fail(code, "%v", err)
	}
	if st != nil { // the sockets are the state document's
		cfg.Listen = nil
		for _, g := range st.Groups {
			cfg.Listen = append(cfg.Listen, g.Spec)
		}
	} else if cfg.Adopted, err = fdpass.FromSystemd(); err != nil {
		return fail(1, "%v", err)
	}
	if len(cfg.Adopted) > 0 && len(cfg.Listen) > 0 {
		closeAll(cfg.Adopted)
		return fail(2, "sockets came both from systemd (LISTEN_FDS) and from --listen: use one or the other")
	}
	if len(cfg.Adopted) == 0 && len(cfg.Listen) == 0 {
		return fail(2, "nothing to listen on: give --listen ADDR (or run from a systemd .socket unit)")
	}
	if err := cfg.CheckHealth(); err != nil {
		closeAll(cfg.Adopted)
		return fail(2, "%v", err)
	}
	if err := cfg.CheckMetrics(); err != nil {
		closeAll(cfg.Adopted)
		return fail(2, "%v", err)
	}
	cfg.Notifier = systemd.NewNotifier() // unsets NOTIFY_SOCKET: children get their own
	cfg.Env = os.Environ()
	cfg.RuntimeDir = runtimeDir(e)
	if err := supervisor.CheckPrivateDir(cfg.RuntimeDir); err != nil {
		closeAll(cfg.Adopted)
		return fail(1, "runtime directory (control and notify sockets): %v", err)
	}
	cfg.ControlPath = o.control
	if cfg.ControlPath == "" {
		cfg.ControlPath = filepath.Join(cfg.RuntimeDir, "rpwrap.sock")
	}
	return cfg, 0
}

func closeAll(ls []*fdpass.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// somaxconnPath caps every listen(2) backlog in this network namespace.
var somaxconnPath = "/proc/sys/net/core/somaxconn"

// checkBacklog refuses a --backlog listen(2) cannot take, and warns when
// the kernel caps it at net.core.somaxconn.
func checkBacklog(n int, log *slog.Logger) error {
	if n < 1 || n > math.MaxInt32 {
		return fmt.Errorf("--backlog %d: want a number of pending connections from 1 to %d (default 4096)", n, math.MaxInt32)
	}
	b, err := os.ReadFile(somaxconnPath)
	if err != nil {
		return nil // not known here; the kernel caps it all the same
	}
	if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > max {
		log.Warn("--backlog is above net.core.somaxconn, which caps it: raise that with sysctl -w net.core.somaxconn=N for a longer queue",
			"backlog", n, "somaxconn", max)
	}
	return nil
}

// runtimeDir is where rpwrap keeps its control and notify sockets:
// systemd's RuntimeDirectory=, /run/rpwrap as root, the user's runtime
// directory, else $TMPDIR/rpwrap-UID (/tmp/rpwrap-UID). Whichever it is,
// supervisor.CheckPrivateDir must accept it before rpwrap uses it.
func runtimeDir(e env) string {
	if d := e.getenv("RUNTIME_DIRECTORY"); d != "" {
		return filepath.SplitList(d)[0]
	}
	if os.Geteuid() == 0 {
		return "/run/rpwrap"
	}
	if d := e.getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "rpwrap")
	}
	tmp := e.getenv("TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	return filepath.Join(tmp, "rpwrap-"+strconv.Itoa(os.Geteuid()))
}

// newLogger builds the slog logger --log-format and --log-level ask for.
func newLogger(e env, o *options) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)).With("prog", "rpwrap"), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)).With("prog", "rpwrap"), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
}

// warnFlows says that UDP flows are not kept when the classic selector
// serves a UDP listener and --udp-flows asks for them.
func warnFlows(log *slog.Logger, s *supervisor.Supervisor, cfg supervisor.Config) {
	if s.Flavour() != bpf.CBPF || cfg.UDPFlows == bpf.FlowsOff {
		return
	}
	for _, l := range s.Listeners() {
		if l.Network == "udp" {
			log.Warn("the classic BPF selector keeps no UDP flows: at each flip every datagram goes to the new generation, as with --udp-flows off", "udp_flows", cfg.UDPFlows)
			return
		}
	}
}
