//go:build linux

package main

import (
	"net"
	"testing"
)

// IPv6 and IPv4-mapped listeners restart under load with the default
// readiness check (accept), whose probe connects over the listener's own
// family: [::1], the dual-stack [::] (reached over ::1 and 127.0.0.1),
// and [::ffff:127.0.0.1] (an IPv6 socket that IPv4 clients reach).
func TestIPv6ListenersRestartUnderLoad(t *testing.T) {
	cases := []struct {
		name    string
		listen  string
		clients []string // hosts the load connects to
	}{
		{"loopback", "[::1]:0", []string{"::1"}},
		{"dual-stack wildcard", "[::]:0", []string{"::1", "127.0.0.1"}},
		{"IPv4-mapped", "[::ffff:127.0.0.1]:0", []string{"127.0.0.1"}},
	}
	for _, c := range cases {
		for _, sel := range []string{"ebpf", "cbpf"} {
			t.Run(c.name+"/"+sel, func(t *testing.T) {
				w := startWrapper(t, []string{"--listen", c.listen, "--selector", sel})
				_, port, err := net.SplitHostPort(w.addr)
				if err != nil {
					t.Fatal(err)
				}
				var targets []string
				for _, h := range c.clients {
					targets = append(targets, net.JoinHostPort(h, port))
				}
				l := startLoads(t, targets, nil)
				restartsUnderLoads(t, w, l, 10)
				l.requireNoLoss(500)
				if st := w.status(); st.Restarts != 10 || st.RolledBack != 0 {
					t.Errorf("after 10 restarts: %d restarts, %d rolled back", st.Restarts, st.RolledBack)
				}
			})
		}
	}
}
