//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// wrkRow is wrk's view of the same restarts: an independent client. wrk
// counts a connect that was refused and retried as a write error, and
// reports errors per kind, not per request.
type wrkRow struct {
	Strategy string  `json:"strategy"`
	Scenario string  `json:"scenario"`
	Restarts int     `json:"restarts"`
	Requests int64   `json:"requests"`
	Connect  int64   `json:"connect_errors"`
	Read     int64   `json:"read_errors"`
	Write    int64   `json:"write_errors"`
	Timeout  int64   `json:"timeouts"`
	Non2xx   int64   `json:"non_2xx"`
	RPS      float64 `json:"rps"`
	Command  string  `json:"command"`
	Error    string  `json:"error,omitempty"`
}

// runWrkRows runs wrk against every strategy, healthy and stuck, with
// restarts during the run. It returns nil when wrk is not installed.
func runWrkRows(ctx context.Context, bin string, quick bool, stderr io.Writer) []wrkRow {
	path, err := exec.LookPath("wrk")
	if err != nil {
		fmt.Fprintln(stderr, "bench: wrk not installed (apt-get install wrk): no second client")
		return nil
	}
	d, restarts := 6*time.Second, 5
	if quick {
		d, restarts = 2*time.Second, 2
	}
	var rows []wrkRow
	for _, st := range strategies(bin, false) {
		for _, sc := range scenarios[:2] {
			r := wrkRun(ctx, path, st, sc, d, restarts)
			fmt.Fprintf(stderr, "bench: wrk %-17s %-8s %d requests, socket errors connect %d read %d write %d timeout %d, non-2xx %d\n",
				r.Strategy, r.Scenario, r.Requests, r.Connect, r.Read, r.Write, r.Timeout, r.Non2xx)
			rows = append(rows, r)
		}
	}
	return rows
}

// wrkRun runs wrk for d (new connection per request: Connection: close)
// while restarting st's server restarts times, evenly spaced.
func wrkRun(ctx context.Context, path string, st strategy, sc scenario, d time.Duration, restarts int) wrkRow {
	r := wrkRow{Strategy: st.Name(), Scenario: sc.Name}
	in, err := st.Start(ctx, sc)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer in.Close()
	args := []string{"-t2", "-c8", "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--timeout", "5s",
		"-H", "Connection: close", "http://" + in.Addr() + "/"}
	r.Command = "wrk " + joinArgs(args)
	cmd := exec.CommandContext(ctx, path, args...)
	out := make(chan []byte, 1)
	go func() { b, _ := cmd.CombinedOutput(); out <- b }()
	gap := d / time.Duration(restarts+1)
	for i := 0; i < restarts && ctx.Err() == nil; i++ {
		sleepCtx(ctx, gap) // pacing of restarts inside wrk's fixed duration
		if sc.Stuck {
			if err := hang(in.ServingPid(), 10*time.Second); err != nil {
				r.Error = err.Error()
				break
			}
		}
		if _, err := in.Restart(ctx); err != nil {
			r.Error = err.Error()
		}
		r.Restarts++
	}
	parseWrk(<-out, &r)
	return r
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
)

func parseWrk(b []byte, r *wrkRow) {
	if m := wrkRequests.FindSubmatch(b); m != nil {
		r.Requests, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := wrkSocket.FindSubmatch(b); m != nil {
		r.Connect, _ = strconv.ParseInt(string(m[1]), 10, 64)
		r.Read, _ = strconv.ParseInt(string(m[2]), 10, 64)
		r.Write, _ = strconv.ParseInt(string(m[3]), 10, 64)
		r.Timeout, _ = strconv.ParseInt(string(m[4]), 10, 64)
	}
	if m := wrkNon2xx.FindSubmatch(b); m != nil {
		r.Non2xx, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := wrkRPS.FindSubmatch(b); m != nil {
		r.RPS, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if r.Requests == 0 && r.Error == "" {
		r.Error = "no wrk summary: " + string(b)
	}
}

func joinArgs(args []string) string {
	s := ""
	for i, a := range args {
		if i > 0 {
			s += " "
		}
		if regexp.MustCompile(`\s`).MatchString(a) {
			a = strconv.Quote(a)
		}
		s += a
	}
	return s
}
