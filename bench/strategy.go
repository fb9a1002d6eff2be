//go:build linux

package main

import (
	"context"
	"time"
)

// A strategy is one way to restart a server: one kind of row in the
// table. The real-server strategies of a later extension (nginx HUP,
// HAProxy -sf, Apache graceful, rpwrap around each) are more values of
// this interface.
type strategy interface {
	Name() string
	// Start starts a server as sc says, serving on 127.0.0.1, and returns
	// once it is ready. It fails when the server cannot start.
	Start(ctx context.Context, sc scenario) (instance, error)
}

// An instance is a running server under one strategy.
type instance interface {
	Addr() string // host:port the load goes to
	// ServingPid is the process that accepts connections now: the one the
	// stuck scenario hangs.
	ServingPid() int
	// WrapperPid is the long-lived wrapper whose cost is measured (rpwrap),
	// or 0 when there is none.
	WrapperPid() int
	// Restart replaces the serving process and returns once the old one is
	// gone. It fails when the new one could not start; the instance may
	// then be unusable.
	Restart(ctx context.Context) (timings, error)
	Close()
}

// timings of one restart. Cycle is measured by the bench for every
// strategy; the rest are rpwrap's own figures (zero for the others).
type timings struct {
	Cycle    time.Duration `json:"cycle_ns"`
	Ready    time.Duration `json:"ready_ns"`
	ToFlip   time.Duration `json:"to_flip_ns"`
	Overhead time.Duration `json:"overhead_ns"`
	Flip     time.Duration `json:"flip_ns"`
	Drain    time.Duration `json:"drain_ns"`
	Handed   bool          `json:"queue_handed,omitempty"`

	Clock *clockCheck `json:"clock,omitempty"` // rpwrap's figures against the bench's clock
}

// scenario is what happens around a restart.
type scenario struct {
	Name       string
	Stuck      bool          // the predecessor hangs before the restart
	ReadyDelay time.Duration // the successor's start-up time (every generation's)

	// Successor are demo-server flags for every successor (not the first
	// generation): a faulty new version. Each of its restarts fails.
	Successor []string
	// LongLived: the load is keep-alive clients whose requests each take
	// longLivedRequest, holding their connections through the restarts.
	LongLived bool

	// The real servers' scenarios (-servers).
	HangAfter bool // the old generation is frozen right after the handover
	BadConfig bool // the new generation's configuration is refused
}

// warmUpCrash is how long the crash-after-accept successor holds the
// connections it accepted before it crashes.
const warmUpCrash = time.Second

// longLivedRequest is how long each request of the long-lived scenario
// takes: a restart has to wait for the ones in flight.
const longLivedRequest = 500 * time.Millisecond

var scenarios = []scenario{
	{Name: "healthy"},
	{Name: "stuck", Stuck: true},
	{Name: "slow-start", ReadyDelay: 2 * time.Second},
	// The successor accepts connections as soon as it has its socket,
	// holds them (it is not ready), and crashes: what it accepted is lost.
	{Name: "crash-after-accept", Successor: []string{"-crash-in-warm-up", warmUpCrash.String()}},
	// The successor exits at start, before touching its socket.
	{Name: "bad-config", Successor: []string{"-exit-at-start", "1"}},
	{Name: "long-lived", LongLived: true},
}

// Faulty tells a scenario whose successors never become ready.
func (sc scenario) Faulty() bool { return len(sc.Successor) > 0 }

// firstArgs are the demo server's flags for the first generation.
func (sc scenario) firstArgs() []string {
	if sc.ReadyDelay > 0 {
		return []string{"-ready-delay", sc.ReadyDelay.String()}
	}
	return nil
}

// successorArgs are the demo server's flags for every later generation.
func (sc scenario) successorArgs() []string {
	return append(sc.firstArgs(), sc.Successor...)
}

// grace is how long a stopping predecessor gets before SIGKILL: a stuck
// one never exits by itself, so waiting long only stretches the run.
func (sc scenario) grace() time.Duration {
	if sc.Stuck || sc.HangAfter {
		return 300 * time.Millisecond
	}
	return 5 * time.Second
}
