package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// The histogram is log-linear over microseconds, like HdrHistogram with
// 5 significant bits: values below 64 µs have a bucket each; above, every
// power of two is split in 32 buckets, so a value is known within 1/32
// (3.1 %). Counts are exact.
const (
	subBits    = 5
	subBuckets = 1 << subBits
)

// Histogram counts latencies. The zero value is empty and ready to use; it
// is not safe for concurrent use. Merge adds one histogram to another, so
// per-window histograms can be combined.
type Histogram struct {
	counts []uint64 // by bucketIndex, grown on demand
	n      uint64
	sum    time.Duration
	min    time.Duration
	max    time.Duration
}

// Summary is a histogram's figures, ready to print or marshal.
type Summary struct {
	Count int64         `json:"count"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

func bucketIndex(us uint64) int {
	if us < 2*subBuckets {
		return int(us)
	}
	e := bits.Len64(us) - subBits - 1 // us>>e is in [32, 64)
	return (e+1)*subBuckets + int(us>>e) - subBuckets
}

// bucketHigh is the largest whole number of microseconds in bucket i.
func bucketHigh(i int) uint64 {
	if i < 2*subBuckets {
		return uint64(i)
	}
	e := i/subBuckets - 1
	m := uint64(i%subBuckets + subBuckets)
	return (m+1)<<e - 1
}

// Record adds one latency; negative latencies count as 0.
func (h *Histogram) Record(d time.Duration) {
	d = max(d, 0)
	i := bucketIndex(uint64(d / time.Microsecond))
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]uint64, i+1-len(h.counts))...)
	}
	h.counts[i]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	h.max = max(h.max, d)
	h.n++
	h.sum += d
}

// Merge adds every latency counted in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]uint64, len(o.counts)-len(h.counts))...)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of latencies recorded.
func (h *Histogram) Count() int64 { return int64(h.n) }

// Max is the largest latency recorded, exactly; 0 when empty.
func (h *Histogram) Max() time.Duration { return h.max }

// Min is the smallest latency recorded, exactly; 0 when empty.
func (h *Histogram) Min() time.Duration { return h.min }

// Mean is the average latency, exactly; 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// Quantile returns the latency at or below which a fraction q (0 to 1) of
// the recorded latencies fall: the top of the bucket holding the
// ceil(q·n)-th smallest latency, so never below the true value and above it
// by less than 1/32 of it (less than 1 µs under 64 µs), and never beyond
// Max. It returns 0 when the histogram is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(min(max(q, 0), 1) * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			top := time.Duration(bucketHigh(i)+1)*time.Microsecond - 1
			return min(top, h.max)
		}
	}
	return h.max
}

// Summary returns the count, mean, p50, p99, p99.9 and max.
func (h *Histogram) Summary() Summary {
	return Summary{
		Count: h.Count(),
		Mean:  h.Mean(),
		P50:   h.Quantile(0.50),
		P99:   h.Quantile(0.99),
		P999:  h.Quantile(0.999),
		Max:   h.Max(),
	}
}
