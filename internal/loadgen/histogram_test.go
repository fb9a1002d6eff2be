package loadgen

import (
	"testing"
	"time"
)

func TestBucketsAreContiguous(t *testing.T) {
	prev := -1
	for us := uint64(0); us < 1<<20; us++ {
		i := bucketIndex(us)
		if i != prev && i != prev+1 {
			t.Fatalf("value %d µs in bucket %d, after bucket %d", us, i, prev)
		}
		if high := bucketHigh(i); high < us || i > 0 && bucketHigh(i-1) >= us {
			t.Fatalf("value %d µs in bucket %d, whose top is %d", us, i, high)
		}
		prev = i
	}
}

func TestQuantilesOfKnownLatencies(t *testing.T) {
	var h Histogram
	for us := 10000; us >= 1; us-- {
		h.Record(time.Duration(us) * time.Microsecond)
	}
	if h.Count() != 10000 || h.Min() != time.Microsecond || h.Max() != 10*time.Millisecond || h.Mean() != 5000500*time.Nanosecond {
		t.Errorf("count %d, min %v, max %v, mean %v; want 10000, 1µs, 10ms, 5.0005ms", h.Count(), h.Min(), h.Max(), h.Mean())
	}
	for _, tt := range []struct {
		q    float64
		true time.Duration
	}{
		{0, time.Microsecond}, {0.001, 10 * time.Microsecond}, {0.5, 5 * time.Millisecond},
		{0.99, 9900 * time.Microsecond}, {0.999, 9990 * time.Microsecond}, {1, 10 * time.Millisecond},
	} {
		got := h.Quantile(tt.q)
		if got < tt.true || got > tt.true+max(tt.true/32, time.Microsecond) {
			t.Errorf("Quantile(%v) = %v, want %v to 1/32 above", tt.q, got, tt.true)
		}
	}
}

func TestHistogramMergeEqualsRecordingBoth(t *testing.T) {
	var a, b, both Histogram
	for i := range 1000 {
		d := time.Duration(i*i) * time.Microsecond
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
		both.Record(d)
	}
	var empty Histogram
	a.Merge(&empty)
	empty.Merge(&a)
	empty.Merge(&b)
	if empty.Summary() != both.Summary() || empty.Min() != both.Min() {
		t.Errorf("merged %+v, want %+v", empty.Summary(), both.Summary())
	}
}

func TestEmptyHistogram(t *testing.T) {
	var h Histogram
	if s := h.Summary(); s != (Summary{}) {
		t.Errorf("empty summary %+v, want zeros", s)
	}
}

func TestSplitLatencyByWindows(t *testing.T) {
	const ms = time.Millisecond
	res := Result{Bucket: 100 * ms}
	for i := range 5 {
		lat := ms
		if i == 2 {
			lat = 10 * ms
		}
		for range 100 {
			res.add(time.Duration(i)*100*ms+ms, lat, outcomeOK)
		}
		res.add(time.Duration(i)*100*ms, 0, outcomeReset)
	}
	windows := []Window{{"restart", 210 * ms, 250 * ms}}
	inside, outside := res.SplitLatency(windows)
	if inside.Count() != 100 || outside.Count() != 400 {
		t.Fatalf("inside %d, outside %d, want 100, 400", inside.Count(), outside.Count())
	}
	if p := inside.Quantile(0.99); p < 10*ms || p > 11*ms {
		t.Errorf("p99 inside = %v, want 10ms", p)
	}
	if p := outside.Quantile(0.99); p < ms || p > 2*ms {
		t.Errorf("p99 outside = %v, want 1ms", p)
	}
	if n := res.FailedIn(windows); n != 1 {
		t.Errorf("failed in window %d, want 1", n)
	}
	if res.Sent != 505 || res.Reset != 5 || res.Failed() != 5 {
		t.Errorf("sent %d, reset %d, failed %d; want 505, 5, 5", res.Sent, res.Reset, res.Failed())
	}
}
