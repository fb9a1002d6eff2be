// Package loadtest holds the assertions that rpwrap's end-to-end tests make
// about a load from package loadgen: wait until it has sent so many
// requests, and require that not one of them was lost.
package loadtest

import (
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
)

// WaitSent waits until load has sent n requests, and fails the test when
// that takes longer than timeout.
func WaitSent(tb testing.TB, load *loadgen.Load, n int64, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for load.Progress().Sent < n {
		if time.Now().After(deadline) {
			tb.Fatalf("load stalled at %d requests", load.Progress().Sent)
		}
		time.Sleep(5 * time.Millisecond) // polling a counter; bounded above
	}
}

// RequireNoLoss logs res and fails the test unless every request sent got a
// whole 200, and at least atLeast were sent (so that the test means
// something).
func RequireNoLoss(tb testing.TB, res loadgen.Result, atLeast int64) {
	tb.Helper()
	tb.Logf("requests: sent %d, ok %d, refused %d, reset %d, timeout %d, short read %d, closed idle %d, bad status %d, other %d; errors: %v",
		res.Sent, res.OK, res.Refused, res.Reset, res.Timeout, res.ShortRead, res.Closed, res.BadStatus, res.Other, res.Errors)
	if res.Failed() != 0 || res.OK != res.Sent {
		tb.Errorf("lost requests: %d failed of %d sent (%d ok)", res.Failed(), res.Sent, res.OK)
	}
	if res.Sent < atLeast {
		tb.Errorf("only %d requests sent, want at least %d for the test to mean something", res.Sent, atLeast)
	}
}
