//go:build linux

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// A server that calls listen(fd, 5) on the socket it bound (with --pass
// bind, rpwrap's socket) shrinks that socket's accept queue for everyone;
// rpwrap gives each generation's socket --backlog again before the flip,
// the first one's included.
func TestServerOwnListenBacklogDoesNotShrinkTheQueue(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			addr := freePort(t)
			w := startWrapper(t, []string{"--listen", addr, "--pass", "bind", "--backlog", "1024", "--selector", sel},
				"-bind", addr, "-listen-backlog", "5")
			if got := listenBacklogs(t, addr); len(got) != 1 || got[0] != "1024" {
				t.Errorf("at start: backlog of the sockets listening on %s (ss Send-Q): %v, want [1024] (--backlog), not the server's 5", addr, got)
			}
			l := startLoads(t, []string{addr}, nil)
			l.more(100)
			for i := 0; i < 3; i++ {
				w.restart()
				l.more(50)
				if got := listenBacklogs(t, addr); len(got) != 1 || got[0] != "1024" {
					t.Errorf("after restart %d: backlog of the sockets listening on %s (ss Send-Q): %v, want [1024] (--backlog), not the server's 5", i+1, addr, got)
				}
			}
			l.requireNoLoss(200)
		})
	}
}

// listenBacklogs lists the backlog (ss's Send-Q column, sk_max_ack_backlog)
// of each TCP socket listening on addr.
func listenBacklogs(t *testing.T, addr string) []string {
	t.Helper()
	out, err := exec.Command("ss", "-ltnH", "src", addr).Output()
	if err != nil {
		t.Fatalf("ss -ltnH src %s: %v", addr, err)
	}
	var q []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[3] == addr {
			q = append(q, f[2])
		}
	}
	return q
}
