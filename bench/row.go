//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
)

// loadShape is how the clients send requests.
type loadShape struct {
	Name      string
	Clients   int
	Rate      float64 // > 0: open loop at this many requests/s
	KeepAlive bool
	Path      string // "": /
	UDP       bool   // datagrams to a UDP echo (loadgen.StartUDP); Rate, KeepAlive and Path do not apply
}

// plan is how long a row runs and how many restarts it does.
type plan struct {
	Restarts int
	Steady   time.Duration // before the first restart
	Gap      time.Duration // between restarts, and after the last; at least this
	// Every > 0 triggers a restart every Every (the storm), from one
	// trigger to the next, instead of pausing Gap after each.
	Every time.Duration

	// MinRequests > 0 stretches the gaps so that the row sends at least
	// this many requests with its restarts spread over them.
	MinRequests int64
}

// gap is the pause before restart done+1 (or after the last): p.Gap, or
// longer to spread the restarts over p.MinRequests at the rate so far.
func (p plan) gap(load running, done int) time.Duration {
	pr := load.Progress()
	left := p.MinRequests - pr.Sent
	if left <= 0 || pr.Sent == 0 {
		return p.Gap
	}
	rate := float64(pr.Sent) / pr.Elapsed.Seconds()
	g := time.Duration(float64(left) / rate / float64(p.Restarts-done+1) * float64(time.Second))
	return min(max(p.Gap, g), time.Minute)
}

// row is one strategy × scenario × load shape: every figure the bench
// reports about it.
type row struct {
	Strategy string `json:"strategy"`
	Scenario string `json:"scenario"`
	Load     string `json:"load"`

	Restarts      int      `json:"restarts"`
	RestartErrors []string `json:"restart_errors,omitempty"`

	Sent      int64 `json:"sent"`
	OK        int64 `json:"ok"`
	Failed    int64 `json:"failed"`
	Refused   int64 `json:"refused"`
	Reset     int64 `json:"reset"`
	Timeout   int64 `json:"timeout"`
	ShortRead int64 `json:"short_read"`
	Closed    int64 `json:"closed_idle"`
	BadStatus int64 `json:"bad_status"`
	Other     int64 `json:"other"`
	Unsent    int64 `json:"unsent"` // open loop: due, but no client could send it within the timeout
	// Late: UDP rows, echoes that came back after their datagram was
	// counted lost (in timeout). A UDP row's sent are datagrams, ok those
	// echoed, timeout those lost (no echo within udpTimeout), refused
	// those refused by ICMP port unreachable; failed = timeout + refused.
	Late int64 `json:"udp_late,omitempty"`

	FailedInWindows int64           `json:"failed_in_windows"` // 0 for UDP rows, which have no windows (see NoWindows)
	Steady          loadgen.Summary `json:"latency_steady"`
	InWindows       loadgen.Summary `json:"latency_in_windows"`
	Elapsed         time.Duration   `json:"elapsed_ns"`
	Errors          []string        `json:"errors,omitempty"`

	Cycle    spread        `json:"cycle"`
	Ready    spread        `json:"ready"`
	ToFlip   spread        `json:"to_flip"`
	Overhead spread        `json:"overhead"`
	Flip     spread        `json:"flip"`
	Drain    spread        `json:"drain"`
	Handed   int           `json:"queues_handed"`
	Clock    *clockSummary `json:"rpwrap_clock,omitempty"` // rpwrap's own timings against the bench's clock

	PerRestart []timings `json:"per_restart"` // in the order of Windows

	Wrapper *wrapperCost `json:"wrapper,omitempty"`
	Real    *realFigures `json:"real,omitempty"` // the real-server rows (-servers)

	Timeline []tick           `json:"timeline"`
	Windows  []loadgen.Window `json:"windows"`
	Bucket   time.Duration    `json:"bucket_ns"`
	// NoWindows: the load (the UDP rows') records no timeline or restart
	// windows, so nothing is counted inside windows and the latency is
	// all in latency_steady.
	NoWindows bool `json:"no_windows,omitempty"`
}

// running is a load in progress: the HTTP load (loadgen.Load) or the
// datagram load (udpRun).
type running interface {
	Progress() loadgen.Progress
	Window(label string) func() loadgen.Window
	Stop()
}

// udpRun is the datagram load as a running load. loadgen.UDPLoad keeps no
// timeline and no per-datagram times, so its restart windows mark
// nothing: a UDP row counts its losses per restart only.
type udpRun struct{ *loadgen.UDPLoad }

func (udpRun) Window(string) func() loadgen.Window {
	return func() loadgen.Window { return loadgen.Window{} }
}

// startLoad starts ls against target, bounded by bound, and returns it
// with the function that waits for its end and fills r.
func startLoad(ctx context.Context, ls loadShape, target string, bound time.Duration) (running, func(r *row, ts []timings), error) {
	if ls.UDP {
		l, err := loadgen.StartUDP(ctx, loadgen.UDPConfig{Target: target, Clients: ls.Clients, Duration: bound, Timeout: udpTimeout})
		if err != nil {
			return nil, nil, err
		}
		start := time.Now()
		return udpRun{l}, func(r *row, ts []timings) {
			res := l.Wait()
			r.fillUDP(res, time.Since(start), ts)
		}, nil
	}
	l, err := loadgen.Start(ctx, loadgen.Config{
		Target: target, Clients: ls.Clients, Rate: ls.Rate, KeepAlive: ls.KeepAlive, Path: ls.Path,
		Duration: bound, Timeout: requestTimeout,
	})
	if err != nil {
		return nil, nil, err
	}
	return l, func(r *row, ts []timings) { r.fill(l.Wait(), ts) }, nil
}

// tick is one timeline bucket: requests started in it that succeeded and
// failed.
type tick struct {
	OK     int64 `json:"ok"`
	Failed int64 `json:"failed"`
}

// spread summarises one timing over a row's restarts.
type spread struct {
	Median time.Duration `json:"median_ns"`
	P99    time.Duration `json:"p99_ns"`
	Max    time.Duration `json:"max_ns"`
}

// wrapperCost is what the rpwrap process cost over a row.
type wrapperCost struct {
	Start         usage         `json:"start"`
	End           usage         `json:"end"`
	MaxRSSKiB     int64         `json:"max_rss_kib"`
	CPUPerRestart time.Duration `json:"cpu_per_restart_ns"`
}

func spreadOf(ds []time.Duration) spread {
	if len(ds) == 0 {
		return spread{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return spread{Median: s[len(s)/2], P99: s[(len(s)*99)/100], Max: s[len(s)-1]}
}

// runRow starts a server with st, loads it, restarts it p.Restarts times
// and returns the figures. It fails only when the server cannot start;
// failed restarts are counted in the row.
func runRow(ctx context.Context, st strategy, sc scenario, ls loadShape, p plan) (row, error) {
	r := row{Strategy: st.Name(), Scenario: sc.Name, Load: ls.Name}
	in, err := st.Start(ctx, sc)
	if err != nil {
		return r, fmt.Errorf("%s %s: %w", st.Name(), sc.Name, err)
	}
	defer in.Close()
	var cost *wrapperCost
	if pid := in.WrapperPid(); pid != 0 {
		if u, err := readUsage(pid); err == nil {
			cost = &wrapperCost{Start: u, MaxRSSKiB: u.RSSKiB}
		}
	}
	bound := p.Steady + time.Duration(p.Restarts+1)*(p.Gap+p.Every+sc.ReadyDelay+warmUpCrash+2*time.Second) + time.Minute +
		time.Duration(p.MinRequests/500)*time.Second // the load stops by itself even if the bench does not
	loadStart := time.Now()
	load, finish, err := startLoad(ctx, ls, in.Addr(), bound)
	if err != nil {
		return r, err
	}
	sleepCtx(ctx, p.Steady) // steady state before the first restart: pacing, not synchronisation
	var ts []timings
	next := time.Now()
	for i := 0; i < p.Restarts && ctx.Err() == nil; i++ {
		switch {
		case p.Every > 0:
			sleepCtx(ctx, time.Until(next)) // the storm's cadence
			next = next.Add(p.Every)
		case i > 0:
			sleepCtx(ctx, p.gap(load, i)) // pacing between restarts
		}
		t, err := restartOnce(ctx, in, sc, load, i)
		if err != nil {
			r.RestartErrors = append(r.RestartErrors, err.Error())
		}
		ts = append(ts, t)
		if cost != nil {
			sampleRSS(cost, in.WrapperPid())
		}
	}
	sleepCtx(ctx, p.gap(load, p.Restarts)) // steady state after the last restart
	// The gaps are sized from the rate so far; when it dropped, top up to
	// p.MinRequests, within the load's own bound.
	for deadline := loadStart.Add(bound - 10*time.Second); load.Progress().Sent < p.MinRequests && ctx.Err() == nil && time.Now().Before(deadline); {
		sleepCtx(ctx, 100*time.Millisecond) // pacing: polling the count
	}
	load.Stop()
	finish(&r, ts)
	if cost != nil {
		if u, err := readUsage(in.WrapperPid()); err == nil {
			cost.End = u
			cost.MaxRSSKiB = max(cost.MaxRSSKiB, u.RSSKiB)
			cost.CPUPerRestart = (u.CPU - cost.Start.CPU) / time.Duration(max(len(ts), 1))
		}
		r.Wrapper = cost
	}
	return r, nil
}

// restartOnce is one restart inside a window of the load: the hang first
// in the stuck scenario, then the strategy's restart.
func restartOnce(ctx context.Context, in instance, sc scenario, load running, i int) (timings, error) {
	end := load.Window(fmt.Sprintf("restart %d", i+1))
	defer end()
	if sc.Stuck {
		pid := in.ServingPid()
		if pid <= 0 {
			return timings{}, errors.New("no server is running to hang: an earlier restart left none")
		}
		if err := hang(pid, 10*time.Second); err != nil {
			return timings{}, err
		}
	}
	return in.Restart(ctx)
}

func sampleRSS(c *wrapperCost, pid int) {
	if u, err := readUsage(pid); err == nil {
		c.MaxRSSKiB = max(c.MaxRSSKiB, u.RSSKiB)
	}
}

// fill copies the load's counts and the restarts' timings into r.
func (r *row) fill(res loadgen.Result, ts []timings) {
	r.Sent, r.OK, r.Failed = res.Sent, res.OK, res.Failed()
	r.Refused, r.Reset, r.Timeout, r.ShortRead = res.Refused, res.Reset, res.Timeout, res.ShortRead
	r.Closed, r.BadStatus, r.Other, r.Unsent = res.Closed, res.BadStatus, res.Other, res.Unsent
	r.FailedInWindows = res.FailedIn(res.Windows)
	in, out := res.SplitLatency(res.Windows)
	r.InWindows, r.Steady = in.Summary(), out.Summary()
	r.Elapsed, r.Errors, r.Windows, r.Bucket = res.Elapsed, res.Errors, res.Windows, res.Bucket
	for _, b := range res.Timeline {
		r.Timeline = append(r.Timeline, tick{OK: b.OK, Failed: b.Failed})
	}
	r.fillTimings(ts)
}

// fillUDP copies the datagram load's counts, and the restarts' timings,
// into r: lost datagrams in Timeout, the latency of every echo in Steady.
func (r *row) fillUDP(res loadgen.UDPResult, elapsed time.Duration, ts []timings) {
	r.Sent, r.OK, r.Failed = res.Sent, res.Answered, res.Failed()
	r.Timeout, r.Refused, r.Late = res.Lost, res.Refused, res.Late
	r.Steady = res.Latency.Summary()
	r.Elapsed, r.Errors, r.NoWindows = elapsed, res.Errors, true
	r.fillTimings(ts)
}

// fillTimings copies the restarts' timings into r.
func (r *row) fillTimings(ts []timings) {
	r.Restarts = len(ts)
	pick := func(f func(timings) time.Duration) spread {
		var ds []time.Duration
		for _, t := range ts {
			ds = append(ds, f(t))
		}
		return spreadOf(ds)
	}
	r.Cycle = pick(func(t timings) time.Duration { return t.Cycle })
	r.Ready = pick(func(t timings) time.Duration { return t.Ready })
	r.ToFlip = pick(func(t timings) time.Duration { return t.ToFlip })
	r.Overhead = pick(func(t timings) time.Duration { return t.Overhead })
	r.Flip = pick(func(t timings) time.Duration { return t.Flip })
	r.Drain = pick(func(t timings) time.Duration { return t.Drain })
	r.PerRestart = ts
	r.Clock = summariseClock(ts)
	for _, t := range ts {
		if t.Handed {
			r.Handed++
		}
	}
}

// sleepCtx sleeps d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// rps is the row's successful requests per second.
func (r row) rps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}
