//go:build linux

package main

import (
	"testing"

	"github.com/rpwrap/rpwrap/fdpass"
)

// A UDP echo server restarted under datagram load loses no datagram: the
// old generation gets its stop signal (on which it closes its socket) only
// once it has read what was queued on it, also when it reads slowly.
func TestUDPRestartsLoseNoDatagram(t *testing.T) {
	cases := []struct {
		name     string
		restarts int
		atLeast  int64
		server   []string
	}{
		{"echo", 10, 1000, nil},
		{"slow reader", 5, 300, []string{"-udp-read-delay", "5ms"}},
	}
	for _, c := range cases {
		for _, sel := range []string{"ebpf", "cbpf"} {
			t.Run(c.name+"/"+sel, func(t *testing.T) {
				w := startWrapper(t, []string{"--listen", "udp://127.0.0.1:0", "--selector", sel, "--ready", "notify", "--udp-flows", "off"}, c.server...)
				l := startLoads(t, nil, []string{w.addr})
				restartsUnderLoads(t, w, l, c.restarts)
				l.requireNoLoss(c.atLeast)
			})
		}
	}
}

// The control: when rpwrap gives up waiting for the slow reader's queue
// at once (--drain-stall 1ms), the stop signal comes while datagrams are
// queued, and they are lost. This is what the wait above prevents.
func TestUDPStopSignalWithDatagramsQueuedLosesThem(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "udp://127.0.0.1:0", "--selector", "ebpf", "--ready", "notify", "--drain-stall", "1ms", "--udp-flows", "off"},
		"-udp-read-delay", "5ms")
	l := startLoads(t, nil, []string{w.addr})
	restartsUnderLoads(t, w, l, 5)
	l.stop()
	res := l.udp[w.addr].Wait()
	t.Logf("udp %s: datagrams sent %d, answered %d, lost %d, refused %d, late %d", w.addr, res.Sent, res.Answered, res.Lost, res.Refused, res.Late)
	if res.Lost == 0 {
		t.Errorf("no datagram lost across 5 restarts with --drain-stall 1ms: the control does not show what the drain's wait prevents")
	}
}

// TCP and UDP listeners of one server restart together under both loads
// (the UDP side a slow reader, so that datagrams are queued at each flip).
func TestTCPAndUDPListenersRestartTogether(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--listen", "udp://127.0.0.1:0", "--selector", sel, "--udp-flows", "off"}, "-udp-read-delay", "2ms")
			spec, err := fdpass.ParseSpec(w.status().Listeners[1])
			if err != nil {
				t.Fatal(err)
			}
			l := startLoads(t, []string{w.addr}, []string{spec.Addr.String()})
			restartsUnderLoads(t, w, l, 10)
			l.requireNoLoss(300)
		})
	}
}
