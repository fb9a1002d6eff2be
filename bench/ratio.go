//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
)

// ratio is the throughput through a wrapped server divided by the same
// server unwrapped, both under the closed new-connection load, no restart.
type ratio struct {
	Strategy  string  `json:"strategy"`
	Wrapped   float64 `json:"wrapped_rps"`
	Unwrapped float64 `json:"unwrapped_rps"`
	Ratio     float64 `json:"ratio"`
	Rounds    int     `json:"rounds"`
}

// measureRatios alternates unwrapped and wrapped runs, rounds times each,
// so that drift of a shared machine falls on both sides alike.
func measureRatios(ctx context.Context, bin string, quick bool, stderr io.Writer) []ratio {
	d, rounds := 3*time.Second, 3
	if quick {
		d, rounds = time.Second, 1
	}
	sts := []strategy{plain{bin: bin}, wrapped{bin: bin, selector: "cbpf"}, wrapped{bin: bin, selector: "ebpf"}}
	ok := make([]int64, len(sts))
	el := make([]time.Duration, len(sts))
	for range rounds {
		for i, st := range sts {
			n, e, err := steadyRun(ctx, st, d)
			if err != nil {
				fmt.Fprintf(stderr, "bench: throughput of %s: %v\n", st.Name(), err)
				return nil
			}
			ok[i] += n
			el[i] += e
		}
	}
	base := float64(ok[0]) / el[0].Seconds()
	var rs []ratio
	for i := 1; i < len(sts); i++ {
		w := float64(ok[i]) / el[i].Seconds()
		rs = append(rs, ratio{Strategy: sts[i].Name(), Wrapped: w, Unwrapped: base, Ratio: w / base, Rounds: rounds})
	}
	return rs
}

// steadyRun starts st's server and loads it for d without restarting it.
func steadyRun(ctx context.Context, st strategy, d time.Duration) (ok int64, elapsed time.Duration, err error) {
	in, err := st.Start(ctx, scenario{Name: "healthy"})
	if err != nil {
		return 0, 0, err
	}
	defer in.Close()
	res, err := loadgen.Run(ctx, loadgen.Config{Target: in.Addr(), Clients: loads[0].Clients, Duration: d, Timeout: 5 * time.Second})
	return res.OK, res.Elapsed, err
}
