//go:build linux

package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// BenchmarkMetricsCost measures what --metrics costs rpwrap itself: the
// CPU time and resident memory of two rpwraps that run side by side over
// the same seconds, each wrapping its demo server under the same load (two
// clients, a new connection per request): one without --metrics, one with
// it scraped once a second. One op is one second; run it with -benchtime
// 60x or more.
func BenchmarkMetricsCost(b *testing.B) {
	testutil.RequireRoot(b)
	bin := filepath.Join(b.TempDir(), "rpwrap")
	if err := testutil.GoBuild(bin, "."); err != nil {
		b.Fatal(err)
	}
	type side struct {
		name      string
		pid       int
		metrics   string
		cpu0      uint64
		load      *loadgen.Load
		scrapes   int
		bytesLast int
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sides []*side
	for _, scraped := range []bool{false, true} {
		pid, control, metrics := startForCost(b, bin, scraped)
		load, err := loadgen.Start(ctx, loadgen.Config{Target: activeAddr(b, control), Clients: 2, Duration: time.Hour, Timeout: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { load.Stop(); load.Wait() }()
		sides = append(sides, &side{name: map[bool]string{false: "without", true: "scraped"}[scraped], pid: pid, metrics: metrics, load: load})
	}
	scraped := sides[1]
	scraped.bytesLast = scrapeOnce(b, scraped.metrics) // the first scrape builds what later ones reuse
	for _, s := range sides {
		s.cpu0 = cpuNanos(b, s.pid)
	}
	t0 := time.Now()
	next := t0
	for b.Loop() {
		scraped.bytesLast = scrapeOnce(b, scraped.metrics)
		scraped.scrapes++
		next = next.Add(time.Second)
		time.Sleep(time.Until(next)) // pacing: one scrape a second, as Prometheus does
	}
	secs := time.Since(t0).Seconds()
	for _, s := range sides {
		b.ReportMetric(float64(cpuNanos(b, s.pid)-s.cpu0)/1e6/secs, s.name+"-cpu-ms/s")
		b.ReportMetric(float64(rssKiB(b, s.pid)), s.name+"-rss-KiB")
		b.ReportMetric(float64(s.load.Progress().Sent)/secs, s.name+"-conn/s")
	}
	b.ReportMetric(float64(scraped.bytesLast), "scrape-bytes")
	b.ReportMetric(0, "ns/op")
}

// startForCost starts bin wrapping its demo server, with --metrics when
// scraped, and returns rpwrap's pid, control socket and metrics address.
func startForCost(b *testing.B, bin string, scraped bool) (int, string, string) {
	dir, err := os.MkdirTemp("", "rpw")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	control := filepath.Join(dir, "ctl.sock")
	args := []string{"--listen", "127.0.0.1:0", "--selector", "ebpf", "--ready", "notify", "--control", control, "--log-level", "warn"}
	if scraped {
		args = append(args, "--metrics", "127.0.0.1:0")
	}
	cmd := exec.Command(bin, append(args, "--", bin, "serve-demo")...)
	cmd.Env = append(os.Environ(), "RUNTIME_DIRECTORY="+dir)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var st supervisor.Status
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("rpwrap did not serve within 30s")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := supervisor.Call(ctx, control, supervisor.Request{Command: "status"})
		cancel()
		if err == nil && resp.Status != nil && len(resp.Status.Generations) == 1 && resp.Status.Generations[0].State == supervisor.StateActive {
			st = *resp.Status
			break
		}
	}
	return cmd.Process.Pid, control, st.Config.Metrics
}

func activeAddr(b *testing.B, control string) string {
	resp, err := supervisor.Call(context.Background(), control, supervisor.Request{Command: "status"})
	if err != nil {
		b.Fatal(err)
	}
	spec, err := fdpass.ParseSpec(resp.Status.Listeners[0])
	if err != nil {
		b.Fatal(err)
	}
	return spec.Addr.String()
}

// scrapeOnce GETs /metrics and returns the size of the answer.
func scrapeOnce(b *testing.B, addr string) int {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET /metrics: %s", resp.Status)
	}
	return int(n)
}

// cpuNanos is the CPU time of every thread of pid, in nanoseconds, from
// /proc/PID/task/*/schedstat (finer than the 10 ms ticks of /proc/PID/stat;
// a thread that has exited is not counted).
func cpuNanos(b *testing.B, pid int) uint64 {
	paths, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	if err != nil || len(paths) == 0 {
		b.Fatalf("no schedstat for pid %d: %v", pid, err)
	}
	var total uint64
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // the thread exited meanwhile
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			n, _ := strconv.ParseUint(f[0], 10, 64)
			total += n
		}
	}
	return total
}

// rssKiB is VmRSS of /proc/PID/status.
func rssKiB(b *testing.B, pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
