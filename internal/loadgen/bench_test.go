//go:build linux

package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	for i := range b.N {
		h.Record(time.Duration(i%100000) * time.Microsecond)
	}
}

// benchmarkLoad sends b.N requests to a net/http server on loopback and
// reports requests per second and the latency percentiles.
func benchmarkLoad(b *testing.B, keepAlive bool) {
	srv := httptest.NewServer(http.HandlerFunc(okHandler))
	defer srv.Close()
	b.ResetTimer()
	res, err := Run(context.Background(), Config{Target: srv.Listener.Addr().String(), Clients: 4, Requests: b.N, KeepAlive: keepAlive})
	if err != nil {
		b.Fatal(err)
	}
	if res.OK != int64(b.N) {
		b.Fatalf("OK %d of %d: %v", res.OK, b.N, res.Errors)
	}
	b.ReportMetric(float64(res.OK)/res.Elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(res.Latency.Quantile(0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(res.Latency.Quantile(0.99).Microseconds()), "p99-µs")
}

func BenchmarkLoadNewConnectionPerRequest(b *testing.B) { benchmarkLoad(b, false) }
func BenchmarkLoadKeepAlive(b *testing.B)               { benchmarkLoad(b, true) }
