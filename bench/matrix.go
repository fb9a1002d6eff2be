//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// report is everything one run measured: results.json.
type report struct {
	Machine  machine  `json:"machine"`
	Mode     string   `json:"mode"`
	Rows     []row    `json:"rows"`
	Ratio    []ratio  `json:"throughput_ratio,omitempty"`
	Wrk      []wrkRow `json:"wrk,omitempty"`
	Failures []string `json:"failures,omitempty"` // rows that could not run
}

// The open loop's rate, and the clients it may have in flight: enough for
// every request of a whole timeout's worth, so that no request waits for a
// free client before the timeout would fail it anyway, and what a restart
// loses is not capped by the client count.
const (
	openRate    = 1000
	openClients = openRate * int(requestTimeout/time.Second)
)

// requestTimeout bounds every request of the demo-server rows.
const requestTimeout = 5 * time.Second

var loads = []loadShape{
	{Name: "closed", Clients: 8},
	{Name: "open", Clients: openClients, Rate: openRate},
	{Name: "keepalive", Clients: 8, KeepAlive: true},
}

// udpEcho is the datagram load (loadgen.StartUDP): clients each on its own
// socket, each sending one datagram and waiting for its echo before the
// next, to a UDP server.
var udpEcho = loadShape{Name: "udp-echo", Clients: 8, UDP: true}

// udpTimeout is how long a datagram of the UDP rows waits for its echo
// before it counts as lost: a loopback echo takes well under a
// millisecond, and each lost datagram idles its client this long.
const udpTimeout = time.Second

// strategies are the demo-server strategies, on a TCP listener or, with
// udp, a UDP socket.
func strategies(bin string, udp bool) []strategy {
	return []strategy{
		plain{bin: bin, udp: udp}, plain{bin: bin, method: reuseportOverlap, udp: udp}, plain{bin: bin, method: sharedSocket, udp: udp},
		wrapped{bin: bin, selector: "cbpf", udp: udp}, wrapped{bin: bin, selector: "ebpf", udp: udp},
	}
}

// cell is one row to run.
type cell struct {
	st strategy
	sc scenario
	ls loadShape
	p  plan
}

// cells are the rows of a run: every strategy in every scenario under
// the closed loop; open loop in healthy and stuck; keep-alive in healthy;
// then the UDP rows (udp-echo), every strategy on a UDP socket, in the
// scenarios skip keeps. -udp runs the UDP rows only.
func cells(bin string, o options) []cell {
	if o.storm {
		return stormCells(bin, o)
	}
	var cs []cell
	quick, only := o.quick, o.only
	for _, udp := range []bool{false, true} {
		if o.udp && !udp {
			continue
		}
		for _, st := range strategies(bin, udp) {
			if only != "" && st.Name() != only {
				continue
			}
			for _, sc := range scenarios {
				for _, ls := range loadsFor(sc, udp) {
					if skip(sc, ls, quick) || o.headline && !isHeadline(st, sc, ls) {
						continue
					}
					if quick && sc.ReadyDelay > 0 {
						sc.ReadyDelay = quickReadyDelay
					}
					p := planFor(st, sc, ls, quick, o.restarts)
					if isHeadline(st, sc, ls) && !quick {
						p.MinRequests = o.requests
					}
					if o.udp && !quick {
						p.Restarts = o.restarts
					}
					cs = append(cs, cell{st: st, sc: sc, ls: ls, p: p})
				}
			}
		}
	}
	return cs
}

// quickReadyDelay is slow-start's start-up time in the quick run, which
// has a minute for every row.
const quickReadyDelay = 500 * time.Millisecond

// longLivedLoad is the long-lived scenario's load: keep-alive clients
// whose every request takes longLivedRequest, so that each restart finds
// requests in flight on connections that outlive it.
var longLivedLoad = loadShape{Name: "keepalive-slow", Clients: 16, KeepAlive: true,
	Path: fmt.Sprintf("/slow?ms=%d", longLivedRequest.Milliseconds())}

// loadsFor are the load shapes a scenario runs under: on a TCP listener,
// or the datagram load on a UDP socket.
func loadsFor(sc scenario, udp bool) []loadShape {
	if udp {
		return []loadShape{udpEcho}
	}
	if sc.LongLived {
		return []loadShape{longLivedLoad}
	}
	return loads
}

// skip leaves out the rows that cannot run or say nothing new. stuck ×
// keepalive cannot run: the demo server hangs only once every accepted
// connection is answered, and keep-alive clients never let go of theirs;
// no restart strategy can move an established connection anyway.
// slow-start shows the same under every load; a faulty successor that no
// connection reaches cannot show anything to keep-alive clients. The
// long-lived scenario has a load of its own. The quick run keeps the
// closed loop (and the long-lived load) only.
//
// The UDP rows run healthy, crash-after-accept (the successor echoes from
// the moment it has its socket, never becomes ready, and crashes) and
// bad-config; the quick run keeps healthy only. They leave out stuck, as
// the demo server's hang is defined by its TCP accept queue (it stops
// accepting, answers what it accepted, then stops itself) and with no TCP
// listener it would be a plain SIGSTOP; slow-start, as a datagram waits
// for a starting server in its socket's queue just as a connection waits
// in the accept queue, which the TCP rows show; and long-lived, as a
// datagram load has no connection that outlives a restart (each client's
// flow lasts the whole row in every scenario).
func skip(sc scenario, ls loadShape, quick bool) bool {
	switch {
	case ls.UDP:
		return quick && sc.Name != "healthy" || sc.Stuck || sc.ReadyDelay > 0 || sc.LongLived
	case ls.Name == "closed", sc.LongLived:
		return false
	case quick, sc.ReadyDelay > 0:
		return true
	}
	return (sc.Stuck || sc.Faulty()) && ls.KeepAlive
}

// isHeadline tells the headline rows: rpwrap, healthy and stuck, closed
// loop.
func isHeadline(st strategy, sc scenario, ls loadShape) bool {
	_, isRpwrap := st.(wrapped)
	return isRpwrap && ls.Name == "closed" && (sc.Name == "healthy" || sc.Name == "stuck")
}

// planFor sizes a row. The full run gives the rpwrap rows of the headline
// (healthy and stuck, closed loop) 100 restarts each and enough time for
// their requests; the others get fewer restarts, as their failures show
// from the first one.
func planFor(st strategy, sc scenario, ls loadShape, quick bool, headline int) plan {
	switch {
	case quick:
		return plan{Restarts: 1, Steady: 300 * time.Millisecond, Gap: 300 * time.Millisecond}
	case sc.ReadyDelay > 0:
		return plan{Restarts: 3, Steady: time.Second, Gap: time.Second}
	case isHeadline(st, sc, ls):
		return plan{Restarts: headline, Steady: time.Second, Gap: 200 * time.Millisecond}
	default:
		return plan{Restarts: 5, Steady: time.Second, Gap: 500 * time.Millisecond}
	}
}

// runMatrix runs every row, then the throughput ratio and wrk, and writes
// the outputs.
func runMatrix(ctx context.Context, bin string, m machine, o options, stdout, stderr io.Writer) int {
	rep := report{Machine: m, Mode: mode(o)}
	printMachine(stdout, m)
	for _, c := range cells(bin, o) {
		if ctx.Err() != nil {
			break
		}
		start := time.Now()
		r, err := runRow(ctx, c.st, c.sc, c.ls, c.p)
		if err != nil {
			rep.Failures = append(rep.Failures, err.Error())
			fmt.Fprintf(stderr, "bench: %v\n", err)
			continue
		}
		fmt.Fprintf(stderr, "bench: %-17s %-10s %-9s %3d restarts %8d requests %6d failed (%s)\n",
			r.Strategy, r.Scenario, r.Load, r.Restarts, r.Sent, r.Failed, time.Since(start).Round(100*time.Millisecond))
		rep.Rows = append(rep.Rows, r)
	}
	if ctx.Err() == nil && o.only == "" && !o.headline && !o.storm && !o.udp {
		rep.Ratio = measureRatios(ctx, bin, o.quick, stderr)
	}
	if ctx.Err() == nil && o.wrk && !o.quick && o.only == "" && !o.headline && !o.storm && !o.udp {
		rep.Wrk = runWrkRows(ctx, bin, o.quick, stderr)
	}
	printReport(stdout, rep)
	if err := writeOutputs(o.out, rep); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	if len(rep.Failures) > 0 || ctx.Err() != nil {
		return 1
	}
	return 0
}

// stormInterval is the storm's cadence: one restart triggered every 300 ms
// (the interval of HAProxy's reload-storm figures).
const stormInterval = 300 * time.Millisecond

// stormCells are the storm rows: rpwrap with each selector, healthy,
// closed loop, o.restarts restarts, one triggered every stormInterval
// whether or not the predecessor has drained (each restart returns at its
// flip, so generations drain side by side, as in a reload storm).
func stormCells(bin string, o options) []cell {
	var cs []cell
	for _, st := range []strategy{wrapped{bin: bin, selector: "ebpf", atFlip: true}, wrapped{bin: bin, selector: "cbpf", atFlip: true}} {
		if o.only != "" && st.Name() != o.only {
			continue
		}
		p := plan{Restarts: o.restarts, Steady: time.Second, Gap: time.Second, Every: stormInterval}
		cs = append(cs, cell{st: st, sc: scenario{Name: "storm"}, ls: loads[0], p: p})
	}
	return cs
}

func mode(o options) string {
	switch {
	case o.storm:
		return "storm"
	case o.headline:
		return "headline"
	case o.udp && o.quick:
		return "udp quick"
	case o.udp:
		return "udp"
	case o.quick:
		return "quick"
	}
	return "full"
}
