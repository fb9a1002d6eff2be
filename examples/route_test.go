//go:build linux

package examples

import (
	"strings"
	"testing"
	"time"
)

// Apache given the wrong route (--pass listen-fds: Apache ignores LISTEN_FDS
// and, with ListenCoresBucketsRatio, binds an SO_REUSEPORT socket of its own
// that joins rpwrap's group) is refused: rpwrap exits non-zero instead of
// serving with some connections hanging on the socket nobody accepts from.
//
// With a readiness check that does not go through rpwrap's socket
// (delay:), the guard finds Apache's own socket and the message names the
// route to use. With --ready accept the probe, steered to rpwrap's socket,
// is never accepted; when the ready timeout ends the wait, the guard runs
// and its message names the route too.
func TestApacheOnTheWrongRouteIsRefused(t *testing.T) {
	requireServer(t, apache)
	for _, tc := range []struct {
		ready string
		want  []string
	}{
		{"delay:1s", []string{"with a socket of its own", "--pass bind"}},
		{"accept", []string{"with a socket of its own", "--pass bind"}}, // the probe is never accepted; the guard says why
	} {
		t.Run(tc.ready, func(t *testing.T) {
			dir, addr := workDir(t), freeAddr(t)
			docroot(t, dir)
			conf := reuseportConf(t, dir)
			w := launchRpwrap(t, dir, apacheEnv(dir, addr), "--listen", addr, "--pass", "listen-fds",
				"--stop-signal", "WINCH", "--ready", tc.ready, "--ready-timeout", "5s",
				"--", "/usr/sbin/apache2", "-DFOREGROUND", "-f", conf)
			select {
			case <-w.done:
			case <-w.ready:
				t.Fatalf("rpwrap reported ready with Apache on the wrong route")
			case <-time.After(eventTimeout):
				t.Fatalf("rpwrap still running %v after starting Apache on the wrong route", eventTimeout)
			}
			if code := w.cmd.ProcessState.ExitCode(); code == 0 {
				t.Errorf("rpwrap exited 0, want non-zero")
			}
			out := w.out.String()
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("rpwrap's output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
