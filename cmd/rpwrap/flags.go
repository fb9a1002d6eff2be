//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// options are the wrapper's flags, each also read from RPWRAP_<NAME>
// (upper case, dashes as underscores); a flag on the command line wins.
type options struct {
	listen           listFlag
	pass             string
	selector         string
	udpFlows         string
	udpFlowIdle      time.Duration
	ready            string
	readyTimeout     time.Duration
	stopSignal       string
	stopTimeout      time.Duration
	stopDelay        time.Duration
	health           string
	metrics          string
	drainTimeout     time.Duration
	drainStall       time.Duration
	drainDelay       time.Duration
	maxDraining      int
	watch            time.Duration
	watchCheck       string
	canary           string
	shutdownAtFlip   bool
	restartOnFailure bool
	backlog          int
	control          string
	logFormat        string
	logLevel         string
	version          bool
	help             bool
}

// listFlag is a repeatable flag; from the environment it takes a
// comma-separated list.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("rpwrap", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Var(&o.listen, "listen", "")
	fs.Var(&o.listen, "l", "")
	fs.StringVar(&o.pass, "pass", "listen-fds", "")
	fs.StringVar(&o.selector, "selector", "auto", "")
	fs.StringVar(&o.udpFlows, "udp-flows", "tuple", "")
	durationVar(fs, &o.udpFlowIdle, "udp-flow-idle", 2*time.Second)
	fs.StringVar(&o.ready, "ready", "", "")
	durationVar(fs, &o.readyTimeout, "ready-timeout", 60*time.Second)
	fs.StringVar(&o.stopSignal, "stop-signal", "TERM", "")
	fs.StringVar(&o.stopSignal, "s", "TERM", "")
	durationVar(fs, &o.stopTimeout, "stop-timeout", 30*time.Second)
	durationVar(fs, &o.stopDelay, "stop-delay", 0)
	fs.StringVar(&o.health, "health", "", "")
	fs.StringVar(&o.metrics, "metrics", "", "")
	durationVar(fs, &o.drainTimeout, "drain-timeout", 30*time.Second)
	durationVar(fs, &o.drainStall, "drain-stall", 500*time.Millisecond)
	durationVar(fs, &o.drainDelay, "drain-delay", 0)
	fs.IntVar(&o.maxDraining, "max-draining", 4, "")
	durationVar(fs, &o.watch, "watch", 0)
	fs.StringVar(&o.watchCheck, "watch-check", "", "")
	fs.StringVar(&o.canary, "canary", "", "")
	fs.BoolVar(&o.shutdownAtFlip, "shutdown-at-flip", false, "")
	fs.BoolVar(&o.restartOnFailure, "restart-on-failure", false, "")
	fs.IntVar(&o.backlog, "backlog", 4096, "")
	fs.StringVar(&o.control, "control", "", "")
	fs.StringVar(&o.logFormat, "log-format", "text", "")
	fs.StringVar(&o.logLevel, "log-level", "info", "")
	fs.BoolVar(&o.version, "version", false, "")
	fs.BoolVar(&o.help, "help", false, "")
	fs.BoolVar(&o.help, "h", false, "")
	fs.Usage = func() {}
	return fs
}

// durationValue is a duration flag that refuses negative durations and,
// unlike flag.Duration, says how to write one: "5" gets "want 5s or 5ms".
type durationValue time.Duration

func durationVar(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration) {
	*p = def
	fs.Var((*durationValue)(p), name, "")
}

func (d *durationValue) String() string { return time.Duration(*d).String() }

func (d *durationValue) Set(s string) error {
	v, err := parseDuration(s)
	if err == nil {
		*d = durationValue(v)
	}
	return err
}

// parseDuration is time.ParseDuration with errors that show the forms.
func parseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return 0, fmt.Errorf("a duration needs a unit: %ss for seconds, %sms for milliseconds", s, s)
		}
		return 0, errors.New("not a duration: write a number with a unit, e.g. 5s, 500ms, 2m or 1m30s")
	}
	if v < 0 {
		return 0, errors.New("a duration must not be negative")
	}
	return v, nil
}

// envName is the environment variable that sets flag name.
func envName(name string) string {
	return "RPWRAP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseOptions reads the environment, then args, and returns the command
// that follows the flags (after an optional "--").
func parseOptions(e env, args []string) (*options, []string, error) {
	o := &options{}
	fs := newFlagSet(o, io.Discard)
	var fromEnv error
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) == 1 || f.Name == "help" || f.Name == "version" {
			return
		}
		v := e.getenv(envName(f.Name))
		if v == "" || fromEnv != nil {
			return
		}
		vals := []string{v}
		if f.Name == "listen" {
			vals = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
		}
		for _, val := range vals {
			if err := fs.Set(f.Name, val); err != nil {
				fromEnv = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	if fromEnv != nil {
		return nil, nil, fromEnv
	}
	if e.getenv("RPWRAP_LISTEN") != "" && hasFlag(args, "listen", "l") {
		o.listen = nil // the command line replaces the environment's list
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, flagErrorIn(fs, err)
	}
	return o, fs.Args(), nil
}

var flagErrorForms = []struct {
	re  *regexp.Regexp
	out string
}{
	{regexp.MustCompile(`^invalid value ("(?:[^"\\]|\\.)*") for flag -([^:]+): `), "--$2 $1: "},
	{regexp.MustCompile(`^invalid boolean value ("(?:[^"\\]|\\.)*") for -([^:]+): `), "--$2 $1: "},
	{regexp.MustCompile(`^flag provided but not defined: -+(.*)$`), "unknown flag --$1"},
	{regexp.MustCompile(`^flag needs an argument: -+(.*)$`), "--$1 needs a value"},
}

// flagError rewrites the flag package's messages in the GNU form the help
// text uses: `--ready-timeout "5": ...` instead of `invalid value "5" for
// flag -ready-timeout: ...`.
func flagError(err error) error {
	msg := err.Error()
	for i, f := range flagErrorForms {
		if !f.re.MatchString(msg) {
			continue
		}
		msg = f.re.ReplaceAllString(msg, f.out)
		if rest, ok := strings.CutSuffix(msg, ": parse error"); ok {
			msg = rest + ": want a whole number"
			if i == 1 {
				msg = rest + ": want true or false"
			}
		}
		return errors.New(msg)
	}
	return err
}

// hasFlag reports whether args, up to "--", set one of the named flags.
func hasFlag(args []string, names ...string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		for _, n := range names {
			if a == "-"+n || a == "--"+n || strings.HasPrefix(a, "-"+n+"=") || strings.HasPrefix(a, "--"+n+"=") {
				return true
			}
		}
	}
	return false
}

const usage = `rpwrap — zero-downtime restarts for any Linux network server

Usage:
  rpwrap [FLAGS] -- COMMAND [ARGS...]    run COMMAND on sockets rpwrap owns
  rpwrap ctl COMMAND [--json]            control a running rpwrap (rpwrap ctl --help)
  rpwrap demo [FLAGS]                    restarts under load, on a built-in server
  rpwrap --version

rpwrap opens the listening sockets itself (SO_REUSEPORT), passes them to
COMMAND with systemd socket activation (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID;
fds 3, 4, ... in --listen order) and stays its parent. On SIGHUP or
'rpwrap ctl restart' it starts a new COMMAND on new sockets in the same
reuseport groups, waits until it is ready, flips an eBPF selector so that every
new connection goes to it, then drains and stops the old one. Connections
still queued on the old socket are migrated by the kernel, not reset. A restart
that fails (the new process exits or is not ready in time) is rolled back: the
old process keeps serving.

Run it from a shell:
  rpwrap --listen :8080 -- ./myserver
  rpwrap ctl restart                 # from another shell, as the same user

Run it from systemd (rpwrap stays MAINPID; 'systemctl reload' restarts the
server and fails when the restart was rolled back):
  [Service]
  Type=notify
  RuntimeDirectory=rpwrap
  ExecStart=/usr/local/bin/rpwrap --listen :80 --pass bind --stop-signal WINCH -- /usr/sbin/apache2 -DFOREGROUND
  ExecReload=/usr/local/bin/rpwrap ctl restart
  KillMode=mixed
Or Type=notify-reload without ExecReload= (systemd >= 253 sends SIGHUP and
waits for rpwrap's RELOADING=1 ... READY=1); not both, or a reload restarts twice.

Run it as a container's ENTRYPOINT (it does PID 1's duties: reaps zombies,
forwards signals, exits with the server's status):
  ENTRYPOINT ["/usr/local/bin/rpwrap", "--listen", ":80", "--"]
  CMD ["/usr/sbin/nginx", "-g", "daemon off;"]
  ENV RPWRAP_PASS=nginx RPWRAP_STOP_SIGNAL=QUIT

Flags (each also from the environment variable in brackets):
  -l, --listen [NAME=][tcp://|udp://]ADDR   [RPWRAP_LISTEN, comma-separated]
        address to listen on, repeatable: :80, 127.0.0.1:8080, [::]:443,
        udp://:53. NAME is its LISTEN_FDNAMES entry; default NETWORK-PORT
        (tcp-8080). When IPv4 and IPv6 addresses share a port, the IPv6 one
        is NETWORK6-PORT (tcp6-8080); several addresses of one family on a
        port are named with the address (tcp-127.0.0.1-8080, tcp6-__1-8080).
        Port 0 picks a free port once, kept for every generation.
  --pass ROUTE           how the server receives its sockets (default listen-fds)  [RPWRAP_PASS]
        listen-fds  LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID, fds from 3 (sd_listen_fds(3))
        nginx       also NGINX="3;4;..." (nginx's inherited sockets)
        bind        intercept the server's own bind(2) of a managed address and
                    put rpwrap's socket in its place (Apache, any server)
  --selector KIND        auto, ebpf or cbpf (default auto: eBPF when permitted)  [RPWRAP_SELECTOR]
  --udp-flows MODE       how the eBPF selector keeps UDP flows across a restart (default tuple)  [RPWRAP_UDP_FLOWS]
        tuple   a flow (source and destination address and port) stays with the
                generation that received its first datagram; new flows go to the
                new generation. The old one keeps its flows until they are idle
                for --udp-flow-idle (at most half of --drain-timeout), then they
                move to the new one, and it gets its stop signal once its receive
                queue is empty. Up to 65536 flows per listener; past that the least
                recently used is forgotten (its next datagram goes to the newest)
        quic    tuple, and QUIC packets whose destination connection ID carries a
                generation's server id (byte 1, 1..255, given to the server in
                $RPWRAP_QUIC_SERVER_ID) reach that generation from any address
        off     every datagram goes to the newest generation from the flip on
        The cBPF selector keeps no state: it behaves as off.
  --udp-flow-idle DURATION   how long the old generation's UDP flows must be silent before they
                             move to the new one (default 2s)  [RPWRAP_UDP_FLOW_IDLE]
  --ready CHECK          when a new generation counts as ready (default accept, or none when
                         every address is UDP)  [RPWRAP_READY]
        none            at once (with --pass bind: once the server has bound every address)
        notify          READY=1 on its NOTIFY_SOCKET (sd_notify(3))
        accept          a probe connection that only the new socket receives is accepted
        http:PATH       that probe gets a 2xx answer to GET PATH
        exec:CMD        sh -c CMD exits 0 (retried every 200ms; $RPWRAP_PID is set)
        delay:DURATION  DURATION has passed
  --ready-timeout DURATION   roll back a generation not ready by then (default 60s)  [RPWRAP_READY_TIMEOUT]
                             (every DURATION takes a unit: 500ms, 5s, 2m, 1m30s)
  -s, --stop-signal SIGNAL   graceful stop signal (default TERM; WINCH for Apache, QUIT for nginx)  [RPWRAP_STOP_SIGNAL]
  --stop-timeout DURATION    on SIGTERM/SIGINT to rpwrap: SIGKILL the server after (default 30s)  [RPWRAP_STOP_TIMEOUT]
  --stop-delay DURATION      on SIGTERM/SIGINT to rpwrap: serve on this long, as before, while
                             /readyz reports not ready, then stop (default 0); a second SIGTERM
                             stops at once; restarts asked meanwhile are refused. Replaces
                             Kubernetes' "preStop: sleep" (try 5s; terminationGracePeriodSeconds
                             must cover it plus --stop-timeout)  [RPWRAP_STOP_DELAY]
  --health ADDR              serve GET /livez and /readyz on [IP]:PORT (e.g. :8081), a socket of
                             rpwrap's own, never one of --listen and never passed to the server:
                             /livez 200 while a generation serves; /readyz 200 while one serves
                             and rpwrap is not stopping, 503 before the first is ready, between a
                             crash and the next, during --stop-delay and the stop  [RPWRAP_HEALTH]
  --metrics ADDR             serve Prometheus metrics, GET /metrics, on [IP]:PORT (e.g.
                             127.0.0.1:9090), a socket of rpwrap's own, never passed to the server:
                             restarts, rollbacks, restart and overhead histograms, generations by
                             state, accept queues, connections steered per generation (eBPF),
                             the kernel's migrations and listen drops. No authentication: bind
                             it to loopback or a private address  [RPWRAP_METRICS]
  --drain-timeout DURATION   on restart: SIGKILL the old generation after (default 30s)  [RPWRAP_DRAIN_TIMEOUT]
  --drain-stall DURATION     an old accept queue that does not shrink for this long means the old
                             generation hangs: its queue is handed to the new one (default 500ms)  [RPWRAP_DRAIN_STALL]
  --drain-delay DURATION     after the flip, wait this long before sending the old generation its
                             stop signal (default 0), for servers whose graceful stop drops a
                             request it reads at that moment: Go's net/http Shutdown, Python's
                             http.server (try 1s)  [RPWRAP_DRAIN_DELAY]
  --max-draining N           how many replaced generations may drain at once (default 4); a
                             restart that would exceed it stops the oldest draining one first  [RPWRAP_MAX_DRAINING]
  --watch DURATION           after the flip, keep the old generation running, deselected and not
                             told to stop, for DURATION (default 0: it drains at once); when the
                             new one exits or fails --watch-check meanwhile, rpwrap flips back to
                             the old one and retires the new one (ctl restart then fails with the
                             reason)  [RPWRAP_WATCH]
  --watch-check CHECK        repeated every second during --watch and --canary: accept, http:PATH
                             or exec:CMD (as --ready); a failure rolls back  [RPWRAP_WATCH_CHECK]
  --canary PCT:DURATION[,PCT:DURATION...]   before the flip, send about PCT% of new
                             connections (by a hash of the client's address and port) to the new
                             generation for DURATION, stage after stage (e.g. 5%:1m,50%:5m); then
                             the flip and --watch. An exit or a failed --watch-check aborts: every
                             new connection back to the old one. With --selector cbpf the split
                             is by a hash of the client's port alone, and is not counted  [RPWRAP_CANARY]
  --shutdown-at-flip         shutdown(2) the old sockets right at the flip instead of after the
                             drain, their queues migrated by the kernel; eBPF selector only
                             (default off: servers log errors when accept() fails)  [RPWRAP_SHUTDOWN_AT_FLIP]
  --restart-on-failure       when the serving generation dies, start a new one on the same
                             sockets with backoff, instead of exiting with its status  [RPWRAP_RESTART_ON_FAILURE]
  --backlog N                listen(2) backlog, the same for every generation (default 4096; the
                             kernel caps it at net.core.somaxconn)  [RPWRAP_BACKLOG]
  --control PATH             control socket (default $RUNTIME_DIRECTORY/rpwrap.sock, else
                             /run/rpwrap/rpwrap.sock as root, else $XDG_RUNTIME_DIR/rpwrap/rpwrap.sock,
                             else /tmp/rpwrap-UID/rpwrap.sock); its directory, and the runtime
                             directory, must belong to rpwrap's user (or root) and must not be
                             writable by group or others  [RPWRAP_CONTROL]
  --log-format text|json     (default text)  [RPWRAP_LOG_FORMAT]
  --log-level debug|info|warn|error   (default info)  [RPWRAP_LOG_LEVEL]
  --version                  print the version
  -h, --help                 this text

Signals: SIGHUP restarts. Signal 36 (RTMIN+2 as glibc's kill(1) names it)
upgrades rpwrap itself in place onto the file it was started from, as the
command 'rpwrap ctl upgrade' does (which also answers whether it worked);
the servers keep running. SIGTERM and SIGINT stop the server (after
--stop-delay, if set; then --stop-signal, then SIGKILL after --stop-timeout)
and rpwrap exits with its status. Every other signal is forwarded to the
serving generation. Restart triggers that arrive during a restart are queued
and coalesced: all of them are answered by the one restart that runs after
the current one.

Exit status: the server's exit code; 128+N when signal N killed it; 127 when
COMMAND is not found; 126 when it cannot be executed; 2 for bad flags; 1 when
rpwrap could not start (the message says why), and 1 when the first
generation never got ready (it exited, even with 0, failed --ready or ran out
of --ready-timeout; the log gives its own status). On SIGTERM or SIGINT it is the
status of the generation that receives new connections at that moment: during
a restart, before the flip the successor is killed and the old generation is
stopped and gives the status; after the flip the old one finishes draining,
then the new one is stopped and gives it. With --restart-on-failure, between
a crash and the next generation, it is the status of the server that died.
`
