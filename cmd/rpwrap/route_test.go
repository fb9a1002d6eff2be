//go:build linux

package main

import (
	"strings"
	"testing"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/supervisor"
)

// A server that binds its own port (no socket activation at all) serves on
// rpwrap's socket with --pass bind, and restarts lose nothing.
func TestBindRouteRestartsServerThatBindsItsOwnPort(t *testing.T) {
	addr := freePort(t)
	w := startWrapper(t, []string{"--listen", addr, "--pass", "bind", "--ready", "accept", "--selector", "ebpf"}, "-bind", addr)
	restartsUnderLoad(t, w, 10, 1000)
}

// A server that ignores LISTEN_FDS and binds its own SO_REUSEPORT socket
// would join the group and leave the connections steered to rpwrap's socket
// hanging. rpwrap's guard sees the foreign socket before the flip and rolls
// back with a message that names the route to use.
func TestGuardRollsBackServerOnTheWrongRoute(t *testing.T) {
	addr := freePort(t)
	exe := testBinary(t)
	script := `if [ "$RPWRAP_GENERATION" -ge 2 ]; then exec "$0" serve-demo -bind ` + addr + ` -reuseport; else exec "$0" serve-demo; fi`
	w := startWrapperCommand(t, []string{"--listen", addr, "--ready", "notify", "--selector", "ebpf", "--", "/bin/sh", "-c", script, exe})
	var resp supervisor.Response
	res := underLoad(t, w, 4, func(*loadgen.Load) { resp = w.call("restart") })
	requireNoLoss(t, res, 400)
	for _, want := range []string{"with a socket of its own", "--pass bind"} {
		if resp.OK || !strings.Contains(resp.Error, want) {
			t.Errorf("restart: ok=%v %q, want a rollback saying %q", resp.OK, resp.Error, want)
		}
	}
}
