//go:build linux

package supervisor

import "time"

// The waits before respawning a generation that died: minBackoff, doubled
// after each failed attempt, at most maxBackoff.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// backoff yields exponentially growing waits between respawns.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) next() time.Duration {
	switch {
	case b.d == 0:
		b.d = minBackoff
	case b.d < maxBackoff:
		b.d = min(2*b.d, maxBackoff)
	}
	return b.d
}

func (b *backoff) reset() { b.d = 0 }
