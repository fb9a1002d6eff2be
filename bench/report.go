//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"
)

func printMachine(w io.Writer, m machine) {
	fmt.Fprintf(w, "command: %s\nkernel:  %s\ncpu:     %s (%d CPUs)\ngo:      %s\ndate:    %s\n\n", m.Command, m.Kernel, m.CPU, m.CPUs, m.Go, m.Date)
}

// printReport writes the three tables: requests, latency, restart cost;
// then the throughput ratios and wrk's counts.
func printReport(w io.Writer, rep report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	printSummary(w, tw, rep.Rows)
	printUDP(w, tw, rep.Rows)
	fmt.Fprintln(w, "\nRequests (every request sent, or due in the open loop, has exactly one outcome; udp-echo: datagrams, timeout = lost)")
	fmt.Fprintln(tw, "strategy\tscenario\tload\trestarts\tsent\tok\tfailed\tper restart\trefused\treset\ttimeout\tshort read\tclosed idle\tunsent\tother\t")
	for _, r := range rep.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.2f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", r.Strategy, r.Scenario, r.Load, r.Restarts,
			r.Sent, r.OK, r.Failed, r.perRestart(r.Failed), r.Refused, r.Reset, r.Timeout, r.ShortRead, r.Closed, r.Unsent, r.BadStatus+r.Other)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nLatency of successful requests, steady state | inside restart windows (p50 p99 p99.9 max; udp-echo: every echo on the left)")
	fmt.Fprintln(tw, "strategy\tscenario\tload\tp50\tp99\tp99.9\tmax\t|\tp50\tp99\tp99.9\tmax\tp99 ratio\t")
	for _, r := range rep.Rows {
		s, in := r.Steady, r.InWindows
		inside := fmt.Sprintf("%s\t%s\t%s\t%s\t%.2f", ms(in.P50), ms(in.P99), ms(in.P999), ms(in.Max), r.p99Ratio())
		if r.NoWindows {
			inside = "-\t-\t-\t-\t-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t|\t%s\t\n", r.Strategy, r.Scenario, r.Load,
			ms(s.P50), ms(s.P99), ms(s.P999), ms(s.Max), inside)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nRestarts: medians (max) of cycle, trigger to flip, rpwrap's overhead, flip, drain; rpwrap's RSS and CPU")
	fmt.Fprintln(tw, "strategy\tscenario\tload\tcycle\tto flip\toverhead\tflip\tdrain\thanded\tRSS start→end (max)\tfds\tbpf fds\tCPU/restart\t")
	for _, r := range rep.Rows {
		cost := "-\t-\t-\t-"
		if c := r.Wrapper; c != nil {
			cost = fmt.Sprintf("%.1f→%.1f (%.1f) MiB\t%d→%d\t%d→%d\t%s", mib(c.Start.RSSKiB), mib(c.End.RSSKiB), mib(c.MaxRSSKiB),
				c.Start.FDs, c.End.FDs, c.Start.BPFObjs, c.End.BPFObjs, ms(c.CPUPerRestart))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s (%s)\t%s\t%s (%s)\t%s (%s)\t%s\t%d\t%s\t\n", r.Strategy, r.Scenario, r.Load,
			ms(r.Cycle.Median), ms(r.Cycle.Max), ms(r.ToFlip.Median), ms(r.Overhead.Median), ms(r.Overhead.Max),
			us(r.Flip.Median), us(r.Flip.Max), ms(r.Drain.Median), r.Handed, cost)
	}
	tw.Flush()
	printExtras(w, tw, rep)
}

func printExtras(w io.Writer, tw *tabwriter.Writer, rep report) {
	if len(rep.Ratio) > 0 {
		fmt.Fprintln(w, "\nThroughput wrapped / unwrapped (closed loop, new connection per request, no restart)")
		fmt.Fprintln(tw, "strategy\twrapped req/s\tunwrapped req/s\tratio\trounds\t")
		for _, r := range rep.Ratio {
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.3f\t%d\t\n", r.Strategy, r.Wrapped, r.Unwrapped, r.Ratio, r.Rounds)
		}
		tw.Flush()
	}
	if len(rep.Wrk) > 0 {
		fmt.Fprintln(w, "\nwrk, the second client (socket errors by kind; a refused connect that wrk retries counts as a write error)")
		fmt.Fprintln(tw, "strategy\tscenario\trestarts\trequests\tconnect\tread\twrite\ttimeout\tnon-2xx\treq/s\t")
		for _, r := range rep.Wrk {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f\t\n", r.Strategy, r.Scenario, r.Restarts, r.Requests,
				r.Connect, r.Read, r.Write, r.Timeout, r.Non2xx, r.RPS)
		}
		tw.Flush()
	}
	for _, r := range rep.Rows {
		for _, e := range r.RestartErrors {
			fmt.Fprintf(w, "restart error: %s %s %s: %s\n", r.Strategy, r.Scenario, r.Load, e)
		}
	}
	for _, f := range rep.Failures {
		fmt.Fprintf(w, "row failed: %s\n", f)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/1e6) }
func us(d time.Duration) string { return fmt.Sprintf("%.1fµs", float64(d)/1e3) }
func mib(kib int64) float64     { return float64(kib) / 1024 }

// writeOutputs writes results.json and the SVGs into dir.
func writeOutputs(dir string, rep report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return writeSVGs(dir, rep)
}

// printSummary is the table to scan: per row, failed requests per restart
// (all, and those started inside restart windows), p99 latency inside the
// windows over steady p99, the restart's duration on the bench's clock,
// and how many restarts failed (a faulty successor: each one should).
func printSummary(w io.Writer, tw *tabwriter.Writer, rows []row) {
	fmt.Fprintln(w, "\nPer restart: failed requests (all | started inside restart windows), p99 in windows / steady p99, restart duration median (max), restarts that failed")
	fmt.Fprintln(tw, "strategy\tscenario\tload\trestarts\tfailed/restart\tin windows/restart\tp99 ratio\trestart\tfailed restarts\trpwrap clock\t")
	for _, r := range rows {
		inWindows, ratio := fmt.Sprintf("%.2f", r.perRestart(r.FailedInWindows)), fmt.Sprintf("%.2f", r.p99Ratio())
		if r.NoWindows {
			inWindows, ratio = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.2f\t%s\t%s\t%s (%s)\t%d\t%s\t\n", r.Strategy, r.Scenario, r.Load, r.Restarts,
			r.perRestart(r.Failed), inWindows, ratio, ms(r.Cycle.Median), ms(r.Cycle.Max),
			len(r.RestartErrors), r.clockVerdict())
	}
	tw.Flush()
}

// printUDP is the UDP rows' own table, when there are any: datagrams
// sent, echoed, lost (no echo within udpTimeout), refused (ICMP port
// unreachable), lost+refused per restart, and echoes that came after
// their datagram was counted lost. The datagram load marks no restart
// windows: its losses are counted per restart only.
func printUDP(w io.Writer, tw *tabwriter.Writer, rows []row) {
	header := false
	for _, r := range rows {
		if r.Load != udpEcho.Name {
			continue
		}
		if !header {
			fmt.Fprintf(w, "\nUDP rows (%s: every datagram sent has one outcome; a datagram with no echo within %s is lost)\n", udpEcho.Name, udpTimeout)
			fmt.Fprintln(tw, "strategy\tscenario\trestarts\tsent\tanswered\tlost\trefused\tfailed/restart\tlate echoes\tp99\tmax\t")
			header = true
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%.2f\t%d\t%s\t%s\t\n", r.Strategy, r.Scenario, r.Restarts, r.Sent, r.OK,
			r.Timeout, r.Refused, r.perRestart(r.Failed), r.Late, ms(r.Steady.P99), ms(r.Steady.Max))
	}
	tw.Flush()
}

func (r row) perRestart(n int64) float64 { return float64(n) / float64(max(r.Restarts, 1)) }

// p99Ratio is p99 latency inside restart windows over steady p99.
func (r row) p99Ratio() float64 {
	return float64(r.InWindows.P99) / float64(max(r.Steady.P99, 1))
}

// clockVerdict says how many of rpwrap's restart accounts fit the bench's
// clock: "-" for the strategies without rpwrap.
func (r row) clockVerdict() string {
	c := r.Clock
	if c == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d fit", c.Consistent, c.Checked)
}
