//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/testutil"
)

func main() {
	fdpass.RunShim() // in the exec shim this execs the demo server and never returns
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the bench's flags.
type options struct {
	quick    bool
	soak     bool
	wrk      bool
	out      string
	rpwrap   string
	only     string
	restarts int
	requests int64
	headline bool
	storm    bool
	servers  bool
	udp      bool
}

const usageText = `Usage: go run ./bench [-quick | -soak | -servers [-quick]] [-out DIR] [-rpwrap PATH] [-wrk=false] [-only STRATEGY]
                    [-headline] [-storm] [-udp] [-restarts N] [-requests N]

Restarts the demo server under load with each strategy (stop-start,
reuseport-overlap, shared-socket, rpwrap-cbpf, rpwrap-ebpf) in each
scenario (healthy, stuck, slow-start, crash-after-accept, bad-config,
long-lived) and load shape (closed, open, keepalive), then on a UDP
socket under a datagram echo load (udp-echo; healthy, crash-after-accept,
bad-config), and prints a table; writes results.json and one SVG timeline
per strategy into DIR (TCP rows). Needs root. -quick: a smoke run in
under a minute. -udp: the UDP rows only (-restarts per row, default 5;
with -quick, healthy only). -storm: rpwrap (eBPF, cBPF)
restarted every 300 ms under load, -restarts times (default 1000).
-soak: 1,000 restarts of rpwrap under load, its fd count, RSS and BPF
objects at start and end.
-servers: Debian's Apache, nginx and HAProxy, each restarted by its own
mechanisms and by rpwrap (eBPF, cBPF), healthy, with the old generation
frozen right after the handover, and with a refused configuration; needs
apache2, nginx, haproxy (and wrk); -servers -quick is a smoke run.

Flags:
`

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText); fs.PrintDefaults() }
	fs.BoolVar(&o.quick, "quick", false, "a short run: few restarts, fewer rows")
	fs.BoolVar(&o.soak, "soak", false, "the soak test: 1,000 rpwrap restarts under load")
	fs.BoolVar(&o.wrk, "wrk", true, "also run wrk (if installed) as a second client against the same restarts (full run only)")
	fs.StringVar(&o.out, "out", "bench/results", "write results.json and the SVGs into `DIR`")
	fs.StringVar(&o.rpwrap, "rpwrap", "", "the rpwrap binary to use (`PATH`); empty: go build ./cmd/rpwrap into a temporary directory")
	fs.IntVar(&o.restarts, "restarts", 50, "restarts in each headline row (rpwrap, healthy and stuck, closed loop) of the full run; the headline is 100")
	fs.Int64Var(&o.requests, "requests", 0, "stretch each headline row of the full run to at least `N` requests, its restarts spread over them (the headline: 1000000)")
	fs.BoolVar(&o.headline, "headline", false, "run the headline rows only (rpwrap, healthy and stuck, closed loop)")
	fs.BoolVar(&o.storm, "storm", false, "the storm rows only: rpwrap (eBPF, cBPF), healthy, closed loop, a restart every 300 ms, -restarts times (default 1000)")
	fs.BoolVar(&o.servers, "servers", false, "restart Debian's Apache, nginx and HAProxy with their own mechanisms and with rpwrap; writes into DIR/servers (-restarts per row, default 20)")
	fs.BoolVar(&o.udp, "udp", false, "the UDP rows only: every strategy on a UDP socket under the datagram echo load, healthy, crash-after-accept and bad-config (-restarts per row, default 5)")
	fs.StringVar(&o.only, "only", "", "run only the strategy `NAME`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "bench: needs root (the eBPF selector needs CAP_BPF); run it with sudo")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin, cleanup, err := rpwrapBinary(ctx, o.rpwrap)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	defer cleanup()
	m := describeMachine(args)
	if o.soak {
		return runSoak(ctx, bin, m, o, stdout, stderr)
	}
	if o.storm && !restartsSet(fs) {
		o.restarts = 1000
	}
	if o.udp && !restartsSet(fs) {
		o.restarts = 5
	}
	if o.servers {
		if !restartsSet(fs) {
			o.restarts = 20
		}
		return runServers(ctx, bin, m, o, stdout, stderr)
	}
	return runMatrix(ctx, bin, m, o, stdout, stderr)
}

// rpwrapBinary returns path, or builds ./cmd/rpwrap when path is empty.
func rpwrapBinary(ctx context.Context, path string) (string, func(), error) {
	if path != "" {
		abs, err := filepath.Abs(path)
		return abs, func() {}, err
	}
	dir, err := os.MkdirTemp("", "rpb-bin-")
	if err != nil {
		return "", nil, fmt.Errorf("create build directory: %w", err)
	}
	bin := filepath.Join(dir, "rpwrap")
	start := time.Now()
	if err := testutil.GoBuild(bin, modulePath+"/cmd/rpwrap"); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build rpwrap (go build github.com/rpwrap/rpwrap/cmd/rpwrap, run inside the repository, or pass -rpwrap PATH): %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench: built rpwrap in %s\n", time.Since(start).Round(time.Millisecond))
	return bin, func() { os.RemoveAll(dir) }, nil
}

// restartsSet tells whether -restarts was given.
func restartsSet(fs *flag.FlagSet) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "restarts" })
	return set
}
