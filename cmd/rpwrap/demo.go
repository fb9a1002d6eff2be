//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/procfs"
	"github.com/rpwrap/rpwrap/supervisor"
)

const demoUsage = `Usage: rpwrap demo [--restarts N] [--clients N] [--interval DURATION] [--stuck] [--selector KIND]

Runs rpwrap's main job on a built-in HTTP server, with nothing to install:
rpwrap wraps 'rpwrap serve-demo' on a free port on 127.0.0.1, bounded load runs
against it over loopback, and the server is restarted N times under that load.
At the end a table gives requests sent, succeeded and failed, and for each
restart the time to ready, to flip, and to drain the old generation; then
rpwrap's state as 'rpwrap ctl status' shows it (with eBPF, the line
"steered" gives how many connections the selector gave each generation:
one per request sent), and the listening
socket as 'rpwrap ctl sockets' shows it.

  --restarts N          restarts to perform (default 5)
  --clients N           concurrent clients, one new connection per request (default 4)
  --interval DURATION   time between restarts (default 1.5s)
  --stuck               before each restart, make the serving generation hang: it
                        stops accepting and stops itself (SIGSTOP) while new
                        connections pile up in its queue: the seed's failure case;
                        the eBPF selector hands that queue to the successor
  --selector KIND       auto, ebpf or cbpf (default auto)
  --verbose             rpwrap's own log on stderr

Example:
  $ go run ./cmd/rpwrap demo
  $ go run ./cmd/rpwrap demo --stuck
`

// runDemo is `rpwrap demo`.
func runDemo(e env, args []string) int {
	fs := flag.NewFlagSet("rpwrap demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	restarts := fs.Int("restarts", 5, "")
	clients := fs.Int("clients", 4, "")
	interval := fs.Duration("interval", 1500*time.Millisecond, "")
	stuck := fs.Bool("stuck", false, "")
	selector := fs.String("selector", "auto", "")
	verbose := fs.Bool("verbose", false, "")
	help := fs.Bool("help", false, "")
	fs.BoolVar(help, "h", false, "")
	if err := fs.Parse(args); err != nil {
		printError(e.stderr, "rpwrap demo", flagErrorIn(fs, err).Error()+"\nTry 'rpwrap demo --help'.")
		return 2
	}
	if *restarts < 1 || *clients < 1 || *interval <= 0 {
		fmt.Fprintf(e.stderr, "rpwrap demo: bad arguments\n%s", demoUsage)
		return 2
	}
	if *help {
		fmt.Fprint(e.stdout, demoUsage)
		return 0
	}
	d := &demo{e: e, restarts: *restarts, clients: *clients, interval: *interval, stuck: *stuck}
	return d.run(bpf.Flavour(*selector), *verbose)
}

type demo struct {
	e        env
	restarts int
	clients  int
	interval time.Duration
	stuck    bool
}

func (d *demo) run(flavour bpf.Flavour, verbose bool) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(d.e.stderr, "rpwrap demo: find own executable: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "rpwrap-demo-")
	if err != nil {
		fmt.Fprintf(d.e.stderr, "rpwrap demo: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	spec, _ := fdpass.ParseSpec("http=127.0.0.1:0")
	log := slog.New(slog.DiscardHandler)
	if verbose {
		log = slog.New(slog.NewTextHandler(d.e.stderr, nil))
	}
	drain := 5 * time.Second
	if d.stuck {
		drain = time.Second // a stopped process never exits by itself
	}
	s, err := supervisor.New(supervisor.Config{
		Path: exe, Argv: []string{"rpwrap", "serve-demo"}, Env: os.Environ(),
		Listen: []fdpass.Spec{spec}, Selector: flavour,
		Ready: supervisor.Ready{Kind: supervisor.ReadyNotify}, ReadyTimeout: 10 * time.Second,
		DrainTimeout: drain, StopTimeout: 5 * time.Second, RuntimeDir: dir, Log: log,
		Stdout: devNullOr(os.Stdout, verbose), Stderr: devNullOr(os.Stderr, verbose),
	})
	if err != nil {
		fmt.Fprintf(d.e.stderr, "rpwrap demo: %v\n", err)
		return 1
	}
	ctx, stop := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() { code <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case c := <-code:
		fmt.Fprintf(d.e.stderr, "rpwrap demo: the demo server did not start (status %d)\n", c)
		stop()
		return 1
	}
	addr := s.Listeners()[0].Addr.String()
	fmt.Fprintf(d.e.stdout, "rpwrap demo: serving http://%s/ with the %s selector; %d clients, %d restarts%s\n",
		addr, s.Flavour(), d.clients, d.restarts, map[bool]string{true: ", each old generation SIGSTOPped (stuck)"}[d.stuck])

	load, err := loadgen.Start(ctx, loadgen.Config{
		Target: addr, Path: "/", Clients: d.clients,
		Duration: time.Duration(d.restarts+1)*d.interval + 20*time.Second, Timeout: 5 * time.Second,
	})
	if err != nil {
		fmt.Fprintf(d.e.stderr, "rpwrap demo: %v\n", err)
		stop()
		<-code
		return 1
	}
	var results []supervisor.RestartResult
	for i := 0; i < d.restarts; i++ {
		time.Sleep(d.interval) // pacing between restarts, not synchronisation
		if d.stuck {
			_, pid := s.Active()
			hang(pid)
		}
		r, err := s.RestartAndDrain(ctx)
		results = append(results, r)
		status := "ok"
		if err != nil {
			status = "rolled back: " + err.Error()
		}
		p := load.Progress()
		fmt.Fprintf(d.e.stdout, "  restart %d/%d: generation %d (pid %d) %s, %d requests so far, %d failed\n",
			i+1, d.restarts, r.Generation, r.Pid, status, p.Sent, p.Failed)
	}
	time.Sleep(d.interval / 2) // a little steady state after the last restart
	load.Stop()
	res := load.Wait()
	status, sockets := s.Status(), s.Sockets() // as `rpwrap ctl status` and `ctl sockets` show them
	stop()
	<-code
	d.report(res, results)
	fmt.Fprintln(d.e.stdout, "\nrpwrap at the end (rpwrap ctl status):")
	status.Write(d.e.stdout)
	fmt.Fprintln(d.e.stdout, "\nThe listening socket at the end (rpwrap ctl sockets):")
	sockets.Write(d.e.stdout)
	if res.Failed() > 0 {
		return 1
	}
	return 0
}

func (d *demo) report(res loadgen.Result, rs []supervisor.RestartResult) {
	w := tabwriter.NewWriter(d.e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(d.e.stdout)
	fmt.Fprintln(w, "requests sent\tsucceeded\tfailed\trefused\treset\ttimeout\tshort read\t")
	fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", res.Sent, res.OK, res.Failed(), res.Refused, res.Reset, res.Timeout, res.ShortRead)
	w.Flush()
	fmt.Fprintln(d.e.stdout)
	fmt.Fprintln(w, "restart\tgeneration\tready after\tflip after trigger\trpwrap's share\tflip\tdrain\tqueue handed over\t")
	for i, r := range rs {
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%v\t\n", i+1, r.Generation, ms(r.Ready), ms(r.ToFlip), ms(r.Overhead),
			r.Flip.Round(time.Microsecond), ms(r.Drain), r.Migrated)
	}
	w.Flush()
	fmt.Fprintf(d.e.stdout, "\n%d of %d requests failed across %d restarts.\n", res.Failed(), res.Sent, len(rs))
}

// hang makes the demo server pid hang: on SIGUSR2 it stops accepting,
// answers what it had accepted and stops itself with SIGSTOP. hang returns
// once it has stopped, or after 10s.
func hang(pid int) {
	syscall.Kill(pid, syscall.SIGUSR2)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		st, err := procfs.ReadStat(pid)
		if err != nil || st.State == 'T' {
			return
		}
		time.Sleep(5 * time.Millisecond) // no event tells that a process stopped itself
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/1e6) }

func devNullOr(f *os.File, keep bool) *os.File {
	if keep {
		return f
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return f
	}
	return null
}
