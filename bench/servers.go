//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// realScenarios are the real servers' scenarios: a healthy restart, the
// old generation frozen right after the handover, and a new generation
// whose configuration is refused.
var realScenarios = []scenario{
	{Name: "healthy"},
	{Name: "hang", HangAfter: true},
	{Name: "bad-config", BadConfig: true},
}

// realLoad is the anchors' load: 4 clients, a new connection per request.
var realLoad = loadShape{Name: "closed", Clients: 4}

// realStrategies are srv's own mechanisms alternated with rpwrap (eBPF,
// then cBPF), in the order the rows run.
func realStrategies(bin string, srv realServer) []strategy {
	wrappers := []strategy{rpwrapReal{bin: bin, srv: srv, selector: "ebpf"}, rpwrapReal{bin: bin, srv: srv, selector: "cbpf"}}
	var out []strategy
	for _, o := range ownMechanisms() {
		if o.srv.Name != srv.Name {
			continue
		}
		out = append(out, o)
		if len(wrappers) > 0 {
			out, wrappers = append(out, wrappers[0]), wrappers[1:]
		}
	}
	return append(out, wrappers...)
}

func realPlan(quick bool, restarts int) plan {
	if quick {
		return plan{Restarts: 1, Steady: 200 * time.Millisecond, Gap: 200 * time.Millisecond}
	}
	return plan{Restarts: restarts, Steady: time.Second, Gap: 300 * time.Millisecond}
}

// runServers runs every real server's rows (-servers), then wrk, and
// writes the tables, results.json and one SVG per server and scenario
// into DIR/servers.
func runServers(ctx context.Context, bin string, m machine, o options, stdout, stderr io.Writer) int {
	if err := becomeSubreaper(); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	rep := report{Machine: m, Mode: "servers-" + map[bool]string{true: "quick", false: "full"}[o.quick]}
	printMachine(stdout, m)
	for _, srv := range realServers {
		if _, err := os.Stat(srv.Sbin); err != nil {
			rep.Failures = append(rep.Failures, srv.Sbin+" not installed (apt-get install apache2 nginx haproxy)")
			continue
		}
		for _, sc := range realScenarios {
			for _, st := range realStrategies(bin, srv) {
				if ctx.Err() != nil || !selected(o.only, st) {
					continue
				}
				start := time.Now()
				r, err := runRealRow(ctx, st, srv, sc, realLoad, realPlan(o.quick, o.restarts))
				if err != nil {
					rep.Failures = append(rep.Failures, err.Error())
					fmt.Fprintf(stderr, "bench: %v\n", err)
					continue
				}
				fmt.Fprintf(stderr, "bench: %-34s %-10s %3d restarts %7d requests %5d failed (%s)\n",
					r.Strategy, r.Scenario, r.Restarts, r.Sent, r.Failed, time.Since(start).Round(100*time.Millisecond))
				rep.Rows = append(rep.Rows, r)
			}
		}
	}
	if ctx.Err() == nil && o.wrk && !o.quick {
		rep.Wrk = runRealWrk(ctx, bin, o, stderr)
	}
	printServers(stdout, rep)
	dir := filepath.Join(o.out, "servers")
	if err := writeServerOutputs(dir, rep); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	if len(rep.Failures) > 0 || ctx.Err() != nil {
		return 1
	}
	return 0
}

// printServers writes the real servers' table: requests and failures,
// latency, what each restart replaced, and the time per cycle.
func printServers(w io.Writer, rep report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "\nReal servers: 4 clients, a new connection per request; latency ms steady | in restart windows (p50 p99 max);")
	fmt.Fprintln(w, "new binary/config/master, hung, down: restarts out of the row's")
	fmt.Fprintln(tw, "strategy\tscenario\trestarts\tsent\tfailed\tper restart\trefused\treset\ttimeout\tother\tp50\tp99\tmax\t|\tp50\tp99\tmax\tnew binary\tnew config\tnew master\thung\tkept old\tdown\tcycle ms (max)\t")
	for _, r := range rep.Rows {
		f := r.Real
		s, in := r.Steady, r.InWindows
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.2f\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t|\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s (%s)\t\n",
			r.Strategy, r.Scenario, r.Restarts, r.Sent, r.Failed, float64(r.Failed)/float64(max(r.Restarts, 1)),
			r.Refused, r.Reset, r.Timeout, r.ShortRead+r.Closed+r.BadStatus+r.Other,
			msv(s.P50), msv(s.P99), msv(s.Max), msv(in.P50), msv(in.P99), msv(in.Max),
			f.NewBinary, f.NewConfig, f.NewMaster, f.Hung, f.KeptOld, f.Down, msv(r.Cycle.Median), msv(r.Cycle.Max))
	}
	tw.Flush()
	printExtras(w, tw, report{Wrk: rep.Wrk, Rows: rep.Rows, Failures: rep.Failures})
}

func msv(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) }

// writeServerOutputs writes results.json and servers-SERVER-SCENARIO.svg.
func writeServerOutputs(dir string, rep report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	if err := writeJSON(filepath.Join(dir, "results.json"), rep); err != nil {
		return err
	}
	groups := map[string][]row{}
	var names []string
	for _, r := range rep.Rows {
		name := "servers-" + r.Real.Server + "-" + r.Scenario
		if _, ok := groups[name]; !ok {
			names = append(names, name)
		}
		groups[name] = append(groups[name], r)
	}
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(dir, name+".svg"), []byte(renderSVG(name, groups[name], rep.Machine)), 0o644); err != nil {
			return fmt.Errorf("write %s.svg: %w", name, err)
		}
	}
	return nil
}

// runRealWrk runs wrk against every real-server strategy, healthy and
// hang, 5 restarts in 6 s each.
func runRealWrk(ctx context.Context, bin string, o options, stderr io.Writer) []wrkRow {
	path, err := exec.LookPath("wrk")
	if err != nil {
		fmt.Fprintln(stderr, "bench: wrk not installed (apt-get install wrk): no second client")
		return nil
	}
	var rows []wrkRow
	for _, srv := range realServers {
		for _, sc := range realScenarios[:2] {
			for _, st := range realStrategies(bin, srv) {
				if ctx.Err() != nil || !selected(o.only, st) {
					continue
				}
				r := wrkRealRun(ctx, path, st, sc, 6*time.Second, 5)
				fmt.Fprintf(stderr, "bench: wrk %-34s %-8s %d requests, socket errors connect %d read %d write %d timeout %d, non-2xx %d %s\n",
					r.Strategy, r.Scenario, r.Requests, r.Connect, r.Read, r.Write, r.Timeout, r.Non2xx, r.Error)
				rows = append(rows, r)
			}
		}
	}
	return rows
}

// wrkRealRun is wrkRun with the hang after the handover.
func wrkRealRun(ctx context.Context, path string, st strategy, sc scenario, d time.Duration, restarts int) wrkRow {
	r := wrkRow{Strategy: st.Name(), Scenario: sc.Name}
	i0, err := st.Start(ctx, sc)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	in, ok := i0.(realInstance)
	if !ok {
		i0.Close()
		r.Error = fmt.Sprintf("%s %s: the strategy started %T, not a real server", st.Name(), sc.Name, i0)
		return r
	}
	defer in.Close()
	args := []string{"-t2", "-c4", "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--timeout", "5s",
		"-H", "Connection: close", "http://" + in.Addr() + "/"}
	r.Command = "wrk " + joinArgs(args)
	cmd := exec.CommandContext(ctx, path, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		r.Error = err.Error()
		return r
	}
	pid := cmd.Process.Pid
	tracked.Store(pid, struct{}{})
	out := make(chan []byte, 1)
	go func() { cmd.Wait(); tracked.Delete(pid); out <- buf.Bytes() }()
	gap := d / time.Duration(restarts+1)
	for i := 0; i < restarts && ctx.Err() == nil; i++ {
		sleepCtx(ctx, gap) // pacing of restarts inside wrk's fixed duration
		in.RestartHooked(ctx, func(old []int) {
			if sc.HangAfter {
				freezeIdle(old, portOf(in.Addr()), 2*time.Second)
			}
		})
		r.Restarts++
	}
	parseWrk(<-out, &r)
	return r
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// selected tells whether -only NAME picks st: its whole name, or its
// server ("apache") or "rpwrap".
func selected(only string, st strategy) bool {
	n := st.Name()
	return only == "" || n == only || strings.HasPrefix(n, only+" ") || strings.Contains(n, " "+only)
}
