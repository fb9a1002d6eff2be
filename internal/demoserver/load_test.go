//go:build linux

package demoserver

import (
	"context"
	"syscall"
	"testing"

	"github.com/rpwrap/rpwrap/internal/loadgen"
)

func TestServesConcurrentLoadWithoutFailure(t *testing.T) {
	c := startChild(t)
	c.waitReady(t)
	res, err := loadgen.Run(context.Background(), loadgen.Config{Target: c.addr, Clients: 4, Requests: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 2000 || res.OK != 2000 || res.Failed() != 0 {
		t.Errorf("sent %d, OK %d, failed %d (%v); want 2000, 2000, 0", res.Sent, res.OK, res.Failed(), res.Errors)
	}
	c.signal(t, syscall.SIGTERM)
	if code := c.exitCode(t); code != 0 {
		t.Errorf("exit status = %d, want 0", code)
	}
}

// benchmarkServer sends b.N requests to the demo server (a child process)
// and reports requests per second and latency percentiles: the baseline,
// unwrapped, for the benchmark program.
func benchmarkServer(b *testing.B, cfg loadgen.Config) {
	c := startChild(b)
	c.waitReady(b)
	cfg.Target, cfg.Requests = c.addr, b.N
	b.ResetTimer()
	res, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	if res.OK != int64(b.N) {
		b.Fatalf("OK %d of %d: %v", res.OK, b.N, res.Errors)
	}
	b.ReportMetric(float64(res.OK)/res.Elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(res.Latency.Quantile(0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(res.Latency.Quantile(0.99).Microseconds()), "p99-µs")
	b.StopTimer()
	c.signal(b, syscall.SIGTERM)
	c.exitCode(b)
}

func BenchmarkServerNewConnectionPerRequest(b *testing.B) {
	benchmarkServer(b, loadgen.Config{Clients: 4})
}

func BenchmarkServerKeepAlive(b *testing.B) {
	benchmarkServer(b, loadgen.Config{Clients: 4, KeepAlive: true})
}
