//go:build linux

package supervisor

import (
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rpwrap/rpwrap/fdpass"
)

// The metrics endpoint (Config.MetricsAddr) serves GET /metrics in the
// Prometheus text format on a TCP socket of rpwrap's own, never passed to
// a server. It has no authentication: bind it to loopback or a private
// address. Every value is read when scraped, from one snapshot of the
// supervisor (as Status is), except the histograms, which restarts fill.

// metrics holds the histograms that restarts and drains observe, and the
// registry /metrics serves. A nil *metrics observes nothing.
type metrics struct {
	reg      *prometheus.Registry
	duration *prometheus.HistogramVec // trigger to flip, or to the rollback
	overhead prometheus.Histogram     // trigger to flip minus the server's own start-to-ready
	drain    prometheus.Histogram     // flip to the predecessor retired
}

// restartBuckets cover a restart, from milliseconds to the ready timeout.
var restartBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// overheadBuckets cover rpwrap's own share of a restart, from 100 µs.
var overheadBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

func newMetrics(s *Supervisor) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rpwrap_restart_duration_seconds",
			Help: "Time from a restart's trigger to its flip (result done) or its rollback (result rolled_back).", Buckets: restartBuckets},
			[]string{"result"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rpwrap_restart_overhead_seconds",
			Help: "rpwrap's own share of a restart that flipped: trigger to flip minus the new server's start to ready.", Buckets: overheadBuckets}),
		drain: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rpwrap_drain_duration_seconds",
			Help: "Time from a flip to the replaced generation stopped and retired.", Buckets: restartBuckets}),
	}
	m.reg.MustRegister(m.duration, m.overhead, m.drain, &snapshotCollector{s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeRestart records one restart, done or rolled back.
func (m *metrics) observeRestart(r *RestartResult, ok bool) {
	if m == nil {
		return
	}
	if !ok {
		m.duration.WithLabelValues("rolled_back").Observe(r.rolledBackAfter().Seconds())
		return
	}
	m.duration.WithLabelValues("done").Observe(r.ToFlip.Seconds())
	m.overhead.Observe(r.Overhead.Seconds())
}

// observeDrain records the end of a drain.
func (m *metrics) observeDrain(r *RestartResult) {
	if m != nil {
		m.drain.Observe(r.Drain.Seconds())
	}
}

// handler serves /metrics.
func (m *metrics) handler(s *Supervisor) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: promLogger{s}}))
	return mux
}

type promLogger struct{ s *Supervisor }

func (l promLogger) Println(v ...any) { l.s.cfg.Log.Warn("metrics endpoint", "err", v) }

var (
	descBuild = prometheus.NewDesc("rpwrap_build_info", "rpwrap's version and the Go version it was built with; always 1.",
		[]string{"version", "goversion"}, nil)
	descSelector = prometheus.NewDesc("rpwrap_selector_info", "The selector flavour that steers the listeners (ebpf or cbpf); always 1. Under cbpf rpwrap_steered_total is absent: a classic program counts nothing.",
		[]string{"flavour"}, nil)
	descRestarts = prometheus.NewDesc("rpwrap_restarts_total", "Restarts by result: done (flipped to the new generation) or rolled_back (the old one kept serving).",
		[]string{"result"}, nil)
	descRespawns = prometheus.NewDesc("rpwrap_respawns_total", "Generations started because the serving one died (--restart-on-failure).", nil, nil)
	descGens     = prometheus.NewDesc("rpwrap_generations", "Live generations by state.", []string{"state"}, nil)
	descActive   = prometheus.NewDesc("rpwrap_active_generation", "The number of the generation that receives new connections; 0 before the first is ready.", nil, nil)
	descQueue    = prometheus.NewDesc("rpwrap_accept_queue_connections", "Connections waiting in the accept queue of a generation's socket (TCP).",
		[]string{"listener", "generation"}, nil)
	descBacklog = prometheus.NewDesc("rpwrap_accept_queue_backlog_connections", "Size of the accept queue of a generation's socket (TCP): the listen(2) backlog capped at net.core.somaxconn.",
		[]string{"listener", "generation"}, nil)
	descSteered = prometheus.NewDesc("rpwrap_steered_total", "New connections (TCP) or datagrams (UDP) the eBPF selector gave a generation: probes, the active route and the fallback scan; kept for the last 32 generations.",
		[]string{"listener", "generation"}, nil)
	descRoute = prometheus.NewDesc("rpwrap_steered_by_route_total", "rpwrap_steered_total split by the route of the selector that chose the generation: probe, active or scan (the active slot was empty).",
		[]string{"listener", "generation", "route"}, nil)
	descMigratedIn = prometheus.NewDesc("rpwrap_migrated_in_total", "Requests migrating out of a closing listener that the eBPF selector gave a generation (not in rpwrap_steered_total).",
		[]string{"listener", "generation"}, nil)
	descStray = prometheus.NewDesc("rpwrap_stray_segments_total", "TCP segments other than a SYN that the kernel looked up against a generation's listener (racing their handshake, or for a connection gone); no new connections, not in rpwrap_steered_total.",
		[]string{"listener", "generation"}, nil)
	descMigrate = prometheus.NewDesc("rpwrap_tcp_migrate_requests_total", "The kernel's TCPMigrateReqSuccess and TCPMigrateReqFailure: requests moved out of a closing listener, or reset; totals of rpwrap's network namespace since boot (/proc/net/netstat).",
		[]string{"result"}, nil)
	descOverflows = prometheus.NewDesc("rpwrap_tcp_listen_overflows_total", "The kernel's ListenOverflows: connection requests dropped because an accept queue was full; total of rpwrap's network namespace since boot.", nil, nil)
	descDrops     = prometheus.NewDesc("rpwrap_tcp_listen_drops_total", "The kernel's ListenDrops: every connection request dropped at a listener, overflows included; total of rpwrap's network namespace since boot.", nil, nil)
)

// snapshotCollector reads the supervisor when scraped.
type snapshotCollector struct{ s *Supervisor }

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBuild, descSelector, descRestarts, descRespawns, descGens, descActive, descQueue,
		descBacklog, descSteered, descRoute, descMigratedIn, descStray, descMigrate, descOverflows, descDrops} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descBuild, 1, s.cfg.Version, runtime.Version())
	gauge(descSelector, 1, string(s.Flavour()))
	s.mu.Lock()
	restarts, rolledBack, respawns := s.restarts, s.rolledBack, s.respawns
	gens := append([]*generation(nil), s.gens...)
	byState := map[State]int{}
	for _, g := range gens {
		byState[g.state]++
	}
	s.mu.Unlock()
	counter(descRestarts, uint64(restarts), "done")
	counter(descRestarts, uint64(rolledBack), "rolled_back")
	counter(descRespawns, uint64(respawns))
	for _, st := range liveStates {
		gauge(descGens, float64(byState[st]), string(st))
	}
	n, _ := s.Active()
	gauge(descActive, float64(n))
	for _, g := range gens {
		c.queues(ch, g)
	}
	c.steered(ch, gens)
	if k := kernelCounters(); k != nil {
		counter(descMigrate, k.TCPMigrateReqSuccess, "success")
		counter(descMigrate, k.TCPMigrateReqFailure, "failure")
		counter(descOverflows, k.ListenOverflows)
		counter(descDrops, k.ListenDrops)
	}
}

// liveStates are the states a live generation can be in.
var liveStates = []State{StateStarting, StateReady, StateActive, StateDraining}

// queues reports the accept queues of g's TCP sockets that rpwrap holds.
func (c *snapshotCollector) queues(ch chan<- prometheus.Metric, g *generation) {
	for i, l := range g.listeners {
		if l.Spec().Network != "tcp" {
			continue
		}
		q, b, err := fdpass.QueueDepth(l)
		if err != nil {
			continue // released: rpwrap holds no copy any more
		}
		labels := []string{c.s.groups[i].spec.Name, strconv.Itoa(g.n)}
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(q), labels...)
		ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(b), labels...)
	}
}

// steered reports the selector's counters of the live generations and of
// those that let go of their sockets; nothing under cBPF.
func (c *snapshotCollector) steered(ch chan<- prometheus.Metric, gens []*generation) {
	s := c.s
	for _, gc := range s.steeredByGeneration(gens) {
		for i, cn := range gc.Selected {
			labels := []string{s.groups[i].spec.Name, strconv.Itoa(gc.Generation)}
			counter := func(d *prometheus.Desc, v uint64, extra ...string) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(labels, extra...)...)
			}
			counter(descSteered, cn.Steered())
			counter(descRoute, cn.Probe, "probe")
			counter(descRoute, cn.Active, "active")
			counter(descRoute, cn.Scan, "scan")
			counter(descMigratedIn, cn.Migrated)
			counter(descStray, cn.Stray)
		}
	}
}

// rolledBackAfter is how long a restart ran before its rollback, when
// called as it is recorded.
func (r *RestartResult) rolledBackAfter() time.Duration { return time.Since(r.At) }

// CheckMetrics refuses a MetricsAddr that is malformed, that one of the
// addresses served covers, or that is the health server's; see
// CheckHealthAddr. New calls it; a caller may too, to tell a bad flag from
// a failed start.
func (c *Config) CheckMetrics() error {
	if c.MetricsAddr == "" {
		return nil
	}
	specs := slices.Clone(c.Listen)
	for _, l := range c.Adopted {
		specs = append(specs, l.Spec())
	}
	if err := checkOwnAddr("--metrics", c.MetricsAddr, specs); err != nil {
		return err
	}
	if c.HealthAddr == "" {
		return nil
	}
	m, _ := parseOwnAddr("--metrics", c.MetricsAddr)
	h, err := parseOwnAddr("--health", c.HealthAddr)
	if err == nil && m.Port() != 0 && m.Port() == h.Port() && overlaps(m.Addr(), h.Addr()) {
		return fmt.Errorf("--metrics %s and --health %s: the same port; give each one of its own", c.MetricsAddr, c.HealthAddr)
	}
	return nil
}

// listenMetrics opens the metrics endpoint's socket, if Config.MetricsAddr
// asks for one.
func (s *Supervisor) listenMetrics() (err error) {
	if s.metricsSrv, err = listenOwn("metrics endpoint", "--metrics", s.cfg.MetricsAddr); err != nil || s.metricsSrv == nil {
		return err
	}
	s.metrics = newMetrics(s)
	return nil
}

// startMetrics serves /metrics until close.
func (s *Supervisor) startMetrics() {
	if s.metrics != nil {
		s.metricsSrv.start(s, s.metrics.handler(s), "/metrics no longer answers")
	}
}

// MetricsAddr is the metrics endpoint's address, port 0 resolved, or ""
// when there is none.
func (s *Supervisor) MetricsAddr() string {
	if s.metricsSrv == nil {
		return ""
	}
	return s.metricsSrv.Addr()
}
