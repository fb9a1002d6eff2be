//go:build linux

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/supervisor"
)

// A successor that binds the port itself, run without --pass bind and
// with the default readiness check (accept), is rolled back well before
// --ready-timeout (60s), with a message that says what it does and names
// --pass bind: with SO_REUSEPORT it joins the group with a socket of its
// own (the probe to rpwrap's socket would wait the whole timeout); without
// it, its bind fails (EADDRINUSE) and it exits.
func TestServerThatBindsItsOwnPortWithoutBindRouteIsRolledBackWithAHint(t *testing.T) {
	cases := []struct {
		name   string
		server string
		want   []string
	}{
		{"SO_REUSEPORT", "-reuseport", []string{"binds the port itself", "--pass bind"}},
		{"no SO_REUSEPORT", "", []string{"exited before it was ready", "--pass bind"}},
	}
	for _, c := range cases {
		for _, sel := range []string{"ebpf", "cbpf"} {
			t.Run(c.name+"/"+sel, func(t *testing.T) {
				addr := freePort(t)
				w := startWrapperCommand(t, []string{"--listen", addr, "--selector", sel, "--ready-timeout", "60s",
					"--", "/bin/sh", "-c", fromGeneration(2, "-bind", addr, c.server), testBinary(t)})
				pid := w.activePid()
				var resp supervisor.Response
				var took time.Duration
				res := underLoad(t, w, 4, func(*loadgen.Load) {
					t0 := time.Now()
					resp = w.call("restart")
					took = time.Since(t0)
				})
				requireNoLoss(t, res, 400)
				t.Logf("restart rolled back after %v: %s", took, resp.Error)
				if took >= 30*time.Second {
					t.Errorf("rollback took %v: it waited for --ready-timeout instead of seeing the server's own socket", took)
				}
				for _, want := range c.want {
					if resp.OK || !strings.Contains(resp.Error, want) {
						t.Errorf("restart: ok=%v %q, want a rollback saying %q", resp.OK, resp.Error, want)
					}
				}
				if st := w.status(); len(st.Generations) != 1 || st.Generations[0].Pid != pid || st.RolledBack != 1 {
					t.Errorf("after the rollback: %+v, want only generation 1 (pid %d)", st, pid)
				}
			})
		}
	}
}
