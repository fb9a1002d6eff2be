package loadgen

import "time"

// Result counts every request the load sent, each exactly once:
// Sent == OK + Failed().
type Result struct {
	Sent int64 // requests started, and with Rate those due but never sent (Unsent): each has exactly one outcome below
	OK   int64 // whole responses with status 200

	// Failures, by kind.
	Refused   int64 // connect(2) got ECONNREFUSED: nothing listened
	Reset     int64 // ECONNRESET or EPIPE while sending or reading
	Timeout   int64 // Config.Timeout passed while connecting or reading
	ShortRead int64 // the connection ended before the whole response came
	Closed    int64 // KeepAlive only: the server ended a reused connection before a byte of the response came (the race with closing an idle connection, which net/http retries)
	BadStatus int64 // a whole response with a status other than 200
	Other     int64 // anything else, such as a malformed response
	Unsent    int64 // open loop only: due, but every client was busy until Config.Timeout after it was due, or until the load stopped

	Latency  Histogram // of the OK requests
	Timeline []Bucket  // by the time each request was started (with Rate: was due)
	Marks    []Mark    // from Load.Mark, in order
	Windows  []Window  // from Load.Window, in the order they began
	Errors   []string  // the first distinct error messages, at most maxErrors
	Bucket   time.Duration
	Elapsed  time.Duration // from the start until the last request ended
}

// Bucket is one slice of the Timeline: the requests started in
// [Start, Start+Result.Bucket) after the load started.
type Bucket struct {
	Start   time.Duration
	OK      int64
	Failed  int64
	Latency Histogram // of the OK requests
}

// Mark is a labelled instant on the load's timeline.
type Mark struct {
	Label string
	At    time.Duration // since the load started
}

// Window is a labelled stretch of the load's timeline, such as a restart.
type Window struct {
	Label string
	Start time.Duration
	End   time.Duration
}

// maxErrors bounds Result.Errors.
const maxErrors = 10

// Failed is the number of requests that did not get a whole 200 response.
func (r Result) Failed() int64 {
	return r.Refused + r.Reset + r.Timeout + r.ShortRead + r.Closed + r.BadStatus + r.Other + r.Unsent
}

// SplitLatency returns the latencies of the OK requests started inside
// windows and of those started outside them. It works at the resolution
// of Result.Bucket: a bucket that overlaps a window counts as inside.
func (r Result) SplitLatency(windows []Window) (inside, outside Histogram) {
	for _, b := range r.Timeline {
		if r.overlaps(b, windows) {
			inside.Merge(&b.Latency)
		} else {
			outside.Merge(&b.Latency)
		}
	}
	return inside, outside
}

// FailedIn returns the number of failed requests started inside windows,
// at the resolution of Result.Bucket as in SplitLatency.
func (r Result) FailedIn(windows []Window) int64 {
	var n int64
	for _, b := range r.Timeline {
		if r.overlaps(b, windows) {
			n += b.Failed
		}
	}
	return n
}

func (r Result) overlaps(b Bucket, windows []Window) bool {
	end := b.Start + r.Bucket
	for _, w := range windows {
		if w.Start < end && b.Start <= w.End {
			return true
		}
	}
	return false
}

// add counts one request's outcome; at is when it started, latency how
// long it took.
func (r *Result) add(at, latency time.Duration, o outcome) {
	r.Sent++
	b := r.bucketAt(at)
	if o == outcomeOK {
		r.OK++
		b.OK++
		r.Latency.Record(latency)
		b.Latency.Record(latency)
		return
	}
	b.Failed++
	*r.failures(o)++
}

func (r *Result) failures(o outcome) *int64 {
	switch o {
	case outcomeRefused:
		return &r.Refused
	case outcomeReset:
		return &r.Reset
	case outcomeTimeout:
		return &r.Timeout
	case outcomeShortRead:
		return &r.ShortRead
	case outcomeClosed:
		return &r.Closed
	case outcomeBadStatus:
		return &r.BadStatus
	case outcomeUnsent:
		return &r.Unsent
	}
	return &r.Other
}

func (r *Result) bucketAt(at time.Duration) *Bucket {
	i := int(max(at, 0) / r.Bucket)
	for len(r.Timeline) <= i {
		r.Timeline = append(r.Timeline, Bucket{Start: time.Duration(len(r.Timeline)) * r.Bucket})
	}
	return &r.Timeline[i]
}

// addError keeps msg if it is new and there is room.
func (r *Result) addError(msg string) {
	if len(r.Errors) >= maxErrors {
		return
	}
	for _, m := range r.Errors {
		if m == msg {
			return
		}
	}
	r.Errors = append(r.Errors, msg)
}
