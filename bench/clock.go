//go:build linux

package main

import (
	"time"

	"github.com/rpwrap/rpwrap/supervisor"
)

// clockCheck holds rpwrap's own account of one restart against the
// bench's clock: rpwrap says when the restart began (At) and how long it
// took to the flip and then to drain the predecessor; the bench knows when
// it sent the request and when the answer came. rpwrap's span must lie
// inside the bench's.
type clockCheck struct {
	// StartLag is At minus the bench's send time: the control round trip
	// before rpwrap began; negative would mean rpwrap's clock or account
	// is wrong.
	StartLag time.Duration `json:"start_lag_ns"`
	// Unaccounted is the bench's cycle minus rpwrap's ToFlip+Drain (and
	// StartLag): the control socket's round trip and the answer; negative
	// would mean rpwrap reports more time than passed.
	Unaccounted time.Duration `json:"unaccounted_ns"`
	OK          bool          `json:"ok"`
}

// clockSlack is what the check forgives: wall clocks of two processes are
// read at slightly different instants.
const clockSlack = time.Millisecond

func checkClock(sent time.Time, cycle time.Duration, r supervisor.RestartResult) *clockCheck {
	c := &clockCheck{StartLag: r.At.Sub(sent)}
	c.Unaccounted = cycle - c.StartLag - r.ToFlip - r.Drain
	c.OK = c.StartLag >= -clockSlack && c.Unaccounted >= -clockSlack && r.Overhead <= r.ToFlip && r.Ready <= r.ToFlip
	return c
}

// clockSummary is a row's clock checks: how many restarts rpwrap accounted
// for, how many of them fit the bench's clock, and the largest gap.
type clockSummary struct {
	Checked        int           `json:"checked"`
	Consistent     int           `json:"consistent"`
	MaxStartLag    time.Duration `json:"max_start_lag_ns"`
	MinUnaccounted time.Duration `json:"min_unaccounted_ns"`
	MaxUnaccounted time.Duration `json:"max_unaccounted_ns"`
}

func summariseClock(ts []timings) *clockSummary {
	var s clockSummary
	for _, t := range ts {
		c := t.Clock
		if c == nil {
			continue
		}
		if s.Checked == 0 {
			s.MinUnaccounted, s.MaxUnaccounted = c.Unaccounted, c.Unaccounted
		}
		s.Checked++
		if c.OK {
			s.Consistent++
		}
		s.MaxStartLag = max(s.MaxStartLag, c.StartLag)
		s.MinUnaccounted = min(s.MinUnaccounted, c.Unaccounted)
		s.MaxUnaccounted = max(s.MaxUnaccounted, c.Unaccounted)
	}
	if s.Checked == 0 {
		return nil
	}
	return &s
}
