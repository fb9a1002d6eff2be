//go:build linux

package loadgen

import (
	"os"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

func TestMain(m *testing.M) {
	startNetpoller()
	os.Exit(testutil.VerifyNoLeaks(m))
}

// startNetpoller makes the Go runtime open its epoll and eventfd
// descriptors, which it does on first use and keeps for good, so that the
// leak check does not count them.
func startNetpoller() {
	r, w, err := os.Pipe()
	if err == nil {
		r.Close()
		w.Close()
	}
}
