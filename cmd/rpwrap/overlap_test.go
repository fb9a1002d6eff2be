//go:build linux

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// Restarts that follow one another faster than a generation drains: the
// successor of one restart joins the group while an older generation
// leaves it, several times over. With the classic selector, which numbers
// the group's sockets as the kernel does, each join and leave must be seen
// in the kernel's order (bpf: TestClassicJoinAndLeaveKeepTheNumberingUnderChurn
// and its control); under load, every request is answered. The eBPF
// selector, whose map holds sockets rather than numbers, runs the same.
func TestOverlappingDrainsUnderLoad(t *testing.T) {
	const restarts = 60
	for _, c := range []struct {
		name  string
		flags []string
	}{
		{"cbpf", []string{"--selector", "cbpf"}},
		{"ebpf", []string{"--selector", "ebpf"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := startWrapper(t, append([]string{"--listen", "127.0.0.1:0", "--ready", "notify",
				"--drain-delay", "40ms", "--max-draining", "8"}, c.flags...))
			l := startLoads(t, []string{w.addr}, nil)
			l.more(100)
			began := time.Now()
			for range restarts {
				w.restartNoWait() // answers at the flip: the drains overlap the next restarts
				l.more(20)
			}
			t.Logf("%d restarts in %s", restarts, time.Since(began).Round(time.Millisecond))
			waitUntil(t, "every replaced generation retired", func() bool { return len(w.status().Generations) == 1 })
			l.more(100)
			l.requireNoLoss(1000)
			if st := w.status(); st.Restarts != restarts || st.RolledBack != 0 {
				t.Errorf("after %d restarts: %d restarts, %d rolled back", restarts, st.Restarts, st.RolledBack)
			}
		})
	}
}

// --shutdown-at-flip with the classic selector is refused at start: the
// kernel would reset the connections still being set up on the old socket.
func TestRefusesShutdownAtFlipWithTheClassicSelector(t *testing.T) {
	testutil.RequireRoot(t)
	code, out := runToExit(t, nil, "--listen", "127.0.0.1:0", "--selector", "cbpf", "--shutdown-at-flip", "--", "/bin/true")
	if code != 1 || !strings.Contains(out, "--shutdown-at-flip needs the eBPF selector") {
		t.Errorf("exit %d, output %q; want exit 1 and the reason", code, out)
	}
}
