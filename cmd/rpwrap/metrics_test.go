//go:build linux

package main

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/procfs"
	"github.com/rpwrap/rpwrap/internal/testutil"
)

// scrape fetches /metrics from addr, checks it with promtool, and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	promtoolCheck(t, body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// promtoolCheck runs `promtool check metrics` (Debian's prometheus
// package) on a scrape: the format and the naming conventions.
func promtoolCheck(t *testing.T, body []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		testutil.SkipOrFail(t, "promtool not installed (apt-get install prometheus)")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// value is the value of the sample of family name whose labels include
// want; ok is false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		if hasLabels(m, want) {
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.Label {
		if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// byGeneration sums family name's samples with the given labels by their
// generation label.
func byGeneration(fams map[string]*dto.MetricFamily, name string, want map[string]string) map[int]float64 {
	out := map[int]float64{}
	if f := fams[name]; f != nil {
		for _, m := range f.Metric {
			if !hasLabels(m, want) {
				continue
			}
			for _, lp := range m.Label {
				if lp.GetName() == "generation" {
					n, _ := strconv.Atoi(lp.GetValue())
					out[n] += m.Counter.GetValue()
				}
			}
		}
	}
	return out
}

// /metrics during restarts under load says what happened: 3 restarts
// done and 1 rolled back, exactly, and every connection the load made
// counted once by the selector, under the generation it reached, besides
// the readiness probes (one per generation that got ready, and the one the
// rolled-back generation got, which migrated to the active one when its
// socket closed: the kernel's TCPMigrateReqSuccess says so too). It runs
// in a network namespace of its own, where no other connection reaches
// the port and the kernel's counters count only this test.
func TestMetricsDuringRestartsUnderLoadCountWhatHappened(t *testing.T) {
	if rerunInNetNS(t) {
		return
	}
	before, err := procfs.ReadTCPExt()
	if err != nil {
		t.Fatal(err)
	}
	exe := testBinary(t)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--selector", "ebpf", "--ready", "accept",
		"--metrics", "127.0.0.1:0", "--", "/bin/sh", "-c", onlyGeneration(3, "-exit-at-start", "1"), exe})
	addr := w.status().Config.Metrics
	if addr == "" {
		t.Fatal("status shows no metrics address")
	}
	res := underLoad(t, w, 4, func(load *loadgen.Load) {
		for i, wantOK := range []bool{true, false, true, true} { // generations 2, 3 (exits at start), 4, 5
			if r := w.call("restart"); r.OK != wantOK {
				t.Fatalf("restart %d: %+v, want ok=%v", i+1, r, wantOK)
			}
			scrape(t, addr) // under load, in every state: promtool accepts it
			waitRequests(t, load, load.Progress().Sent+50)
		}
	})
	requireNoLoss(t, res, 400)
	waitUntil(t, "the old generations drained", func() bool { return len(w.status().Generations) == 1 })

	fams := scrape(t, addr)
	for result, want := range map[string]float64{"done": 3, "rolled_back": 1} {
		if got, _ := value(fams, "rpwrap_restarts_total", map[string]string{"result": result}); got != want {
			t.Errorf("rpwrap_restarts_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	if got, _ := value(fams, "rpwrap_restart_duration_seconds", map[string]string{"result": "done"}); got != 3 {
		t.Errorf("rpwrap_restart_duration_seconds{result=done} has %v samples, want 3", got)
	}
	if got, _ := value(fams, "rpwrap_restart_overhead_seconds", nil); got != 3 {
		t.Errorf("rpwrap_restart_overhead_seconds has %v samples, want 3", got)
	}
	if got, _ := value(fams, "rpwrap_generations", map[string]string{"state": "active"}); got != 1 {
		t.Errorf("rpwrap_generations{state=active} = %v, want 1", got)
	}
	if got, _ := value(fams, "rpwrap_active_generation", nil); got != 5 {
		t.Errorf("rpwrap_active_generation = %v, want 5", got)
	}
	for _, name := range []string{"rpwrap_build_info", "rpwrap_tcp_migrate_requests_total", "rpwrap_tcp_listen_drops_total",
		"rpwrap_accept_queue_connections", "rpwrap_accept_queue_backlog_connections", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	steered := byGeneration(fams, "rpwrap_steered_total", nil)
	probes := byGeneration(fams, "rpwrap_steered_by_route_total", map[string]string{"route": "probe"})
	var total, probed float64
	for n, v := range steered {
		total += v
		probed += probes[n]
	}
	t.Logf("steered by generation %v, probes %v, load connections %d", steered, probes, res.Sent)
	t.Logf("active %v scan %v migrated %v stray %v", byGeneration(fams, "rpwrap_steered_by_route_total", map[string]string{"route": "active"}),
		byGeneration(fams, "rpwrap_steered_by_route_total", map[string]string{"route": "scan"}), byGeneration(fams, "rpwrap_migrated_in_total", nil), byGeneration(fams, "rpwrap_stray_segments_total", nil))
	if total != float64(res.Sent)+probed {
		t.Errorf("steered %v in all, want the load's %d connections + %v probes", total, res.Sent, probed)
	}
	for _, n := range []int{1, 2, 4, 5} {
		if probes[n] != 1 {
			t.Errorf("generation %d: %v probes, want 1 (one readiness check that passed at once)", n, probes[n])
		}
	}
	if len(steered) != 5 || steered[3] != probes[3] {
		t.Errorf("steered %v: want generations 1 to 5, and 3, never flipped to, only probed", steered)
	}
	for _, n := range []int{1, 2, 4, 5} {
		if steered[n] <= probes[n] {
			t.Errorf("generation %d got no load connection: steered %v", n, steered)
		}
	}
	migratedIn := byGeneration(fams, "rpwrap_migrated_in_total", nil)
	after, err := procfs.ReadTCPExt()
	if err != nil {
		t.Fatal(err)
	}
	var in float64
	for _, v := range migratedIn {
		in += v
	}
	kernel := after.TCPMigrateReqSuccess - before.TCPMigrateReqSuccess
	if in != float64(kernel) || after.TCPMigrateReqFailure != before.TCPMigrateReqFailure {
		t.Errorf("migrated in %v by generation, the kernel migrated %d (and failed %d): want the same",
			migratedIn, kernel, after.TCPMigrateReqFailure-before.TCPMigrateReqFailure)
	}
	if got, _ := value(fams, "rpwrap_tcp_migrate_requests_total", map[string]string{"result": "success"}); got != float64(after.TCPMigrateReqSuccess) {
		t.Errorf("rpwrap_tcp_migrate_requests_total{result=success} = %v, /proc/net/netstat says %d", got, after.TCPMigrateReqSuccess)
	}
}
