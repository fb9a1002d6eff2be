//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
)

// soakReport is -soak's result: soak.json.
type soakReport struct {
	Machine  machine  `json:"machine"`
	Strategy string   `json:"strategy"`
	Restarts int      `json:"restarts"`
	Failed   int      `json:"failed_restarts"`
	Samples  []sample `json:"samples"` // rpwrap's usage every 100 restarts
	Load     row      `json:"load"`
}

type sample struct {
	Restarts int   `json:"restarts"`
	Usage    usage `json:"usage"`
}

const soakRestarts = 1000

// runSoak restarts rpwrap-ebpf 1,000 times under an open-loop load and
// samples its fd count, RSS and BPF objects every 100 restarts.
func runSoak(ctx context.Context, bin string, m machine, o options, stdout, stderr io.Writer) int {
	printMachine(stdout, m)
	st := wrapped{bin: bin, selector: "ebpf"}
	in, err := st.Start(ctx, scenario{Name: "healthy"})
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	defer in.Close()
	rep := soakReport{Machine: m, Strategy: st.Name()}
	// An open loop at a modest rate: the soak is about rpwrap's own
	// resources over many restarts, and a saturating load would make every
	// restart slower (see the guard's /proc/net/tcp scan in BENCHMARKS.md).
	load, err := loadgen.Start(ctx, loadgen.Config{Target: in.Addr(), Clients: 16, Rate: 500, Duration: 30 * time.Minute, Timeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	var ts []timings
	for i := 0; i <= soakRestarts && ctx.Err() == nil; i++ {
		if i%100 == 0 {
			u, _ := readUsage(in.WrapperPid())
			rep.Samples = append(rep.Samples, sample{Restarts: i, Usage: u})
			fmt.Fprintf(stderr, "bench: soak %4d restarts: RSS %.1f MiB, %d fds, %d BPF fds, CPU %s, %d requests %d failed\n",
				i, mib(u.RSSKiB), u.FDs, u.BPFObjs, u.CPU, load.Progress().Sent, load.Progress().Failed)
		}
		if i == soakRestarts {
			break
		}
		t, err := restartOnce(ctx, in, scenario{Name: "healthy"}, load, i)
		if err != nil {
			rep.Failed++
		}
		ts = append(ts, t)
	}
	load.Stop()
	rep.Load = row{Strategy: st.Name(), Scenario: "soak", Load: "closed"}
	rep.Load.fill(load.Wait(), ts)
	rep.Restarts = len(ts)
	return writeSoak(o.out, rep, stdout, stderr)
}

func writeSoak(dir string, rep soakReport, stdout, stderr io.Writer) int {
	first, last := rep.Samples[0].Usage, rep.Samples[len(rep.Samples)-1].Usage
	r := rep.Load
	fmt.Fprintf(stdout, "soak: %d restarts of %s (%d rolled back), %d requests, %d failed (refused %d, reset %d, timeout %d, short read %d)\n",
		rep.Restarts, rep.Strategy, rep.Failed, r.Sent, r.Failed, r.Refused, r.Reset, r.Timeout, r.ShortRead)
	fmt.Fprintf(stdout, "rpwrap at start: RSS %.1f MiB, %d fds, %d BPF fds; at end: RSS %.1f MiB, %d fds, %d BPF fds; CPU %s over the soak\n",
		mib(first.RSSKiB), first.FDs, first.BPFObjs, mib(last.RSSKiB), last.FDs, last.BPFObjs, last.CPU-first.CPU)
	fmt.Fprintf(stdout, "restart cycle median %s, max %s; overhead median %s; flip median %s\n",
		ms(r.Cycle.Median), ms(r.Cycle.Max), ms(r.Overhead.Median), us(r.Flip.Median))
	r.Timeline, r.Windows = nil, nil // 1,000 windows and the buckets make soak.json large and say nothing here
	rep.Load = r
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "soak.json"), b, 0o644); err != nil {
		fmt.Fprintf(stderr, "bench: write soak.json: %v\n", err)
		return 1
	}
	if r.Failed > 0 || rep.Failed > 0 {
		return 1
	}
	return 0
}
