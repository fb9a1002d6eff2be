package demoserver

import (
	"flag"
	"fmt"
	"io"
	"time"
)

// options are the command-line flags of the demo server.
type options struct {
	readyDelay      time.Duration
	exitAtStart     int
	neverReady      bool
	crashAfterReady time.Duration
	crashWarmUp     time.Duration
	ignoreTerm      bool
	graceful        bool
	shutdownTimeout time.Duration
	bind            string
	reusePort       bool
	listenBacklog   int
	udpReadDelay    time.Duration
	udpTag          bool
	udpLinger       time.Duration
}

const usageText = `Usage: rpwrap serve-demo [flags]

The demo HTTP server that rpwrap demo wraps. It serves on the sockets passed
with LISTEN_FDS/LISTEN_PID (fds from 3), sends READY=1 to NOTIFY_SOCKET once
serving, and exits 2 when no sockets were passed.

  /                         200 "gen=<RPWRAP_GENERATION> pid=<pid>"
  /slow?ms=N                waits N ms (at most 60000), then 200
  /download?bytes=N&rate=B  sends N bytes at B bytes/s (0: unpaced)

On UDP sockets it echoes every datagram back to its sender. A stop signal
closes them at once: datagrams still queued are lost.

SIGUSR2 makes it hang: it stops accepting, answers what it had accepted, then
stops itself with SIGSTOP, so new connections pile up in its accept queue.

Flags:
`

// parseFlags parses args; it fails on an unknown flag or a bad value, and
// returns flag.ErrHelp for -help, having written the usage to out.
func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("serve-demo", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usageText)
		fs.PrintDefaults()
	}
	fs.DurationVar(&o.readyDelay, "ready-delay", 0, "wait `DURATION` before accepting and before READY=1 (a slow start)")
	fs.IntVar(&o.exitAtStart, "exit-at-start", -1, "exit at once with `CODE`, before touching the sockets (a failed start); negative: off")
	fs.BoolVar(&o.neverReady, "never-ready", false, "serve, but never send READY=1")
	fs.DurationVar(&o.crashAfterReady, "crash-after-ready", 0, "exit 3 `DURATION` after READY=1 (a crash); 0: never")
	fs.DurationVar(&o.crashWarmUp, "crash-in-warm-up", 0, "accept at once but hold every request, never send READY=1, and exit 3 after `DURATION`\n(a server that accepts before it is ready, then crashes in its warm-up); 0: off")
	fs.BoolVar(&o.ignoreTerm, "ignore-term", false, "ignore SIGTERM (a hung stop); SIGINT, SIGQUIT and SIGWINCH still stop it")
	fs.BoolVar(&o.graceful, "graceful", true, "on SIGTERM, SIGINT, SIGQUIT or SIGWINCH stop accepting, finish requests in flight, exit 0;\nfalse: close every connection at once and exit 0")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 60*time.Second, "give requests in flight at most `DURATION` to finish on a graceful stop, then close them and exit 1")
	fs.StringVar(&o.bind, "bind", "", "bind `ADDR` (host:port, or udp://host:port) itself instead of taking sockets from LISTEN_FDS, as servers without socket activation do")
	fs.BoolVar(&o.reusePort, "reuseport", false, "with -bind: set SO_REUSEPORT, joining any reuseport group on ADDR")
	fs.IntVar(&o.listenBacklog, "listen-backlog", 0, "call listen(2) again on each TCP socket with backlog `N`, as a server with a backlog setting of its own does; 0: leave it")
	fs.DurationVar(&o.udpReadDelay, "udp-read-delay", 0, "wait `DURATION` before echoing each datagram (a server slow to read)")
	fs.BoolVar(&o.udpTag, "udp-tag", false, "append \" gen=<RPWRAP_GENERATION>\" to every echo, so the sender sees which generation answered")
	fs.DurationVar(&o.udpLinger, "udp-linger", 0, "on a stop signal, go on echoing for `DURATION` before closing the UDP sockets (a server that finishes its flows)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q: serve-demo takes flags only", fs.Arg(0))
	}
	return o, nil
}
