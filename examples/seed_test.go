//go:build linux

package examples

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/supervisor"
	"golang.org/x/sys/unix"
)

// The seed's experiment with Debian's Apache: two Apaches on one port, the
// old one frozen with SIGSTOP (its whole process tree), 100 requests with a
// 1 s timeout, 25 at a time.
//
// Plain SO_REUSEPORT (both Apaches bind their own socket with
// ListenCoresBucketsRatio, no selector): the kernel keeps giving the frozen
// one its share, and those requests time out; more than 10 must fail, or
// the experiment shows nothing. Under rpwrap (the serving generation frozen
// the same way, then `rpwrap ctl restart`): the selector sends every new
// connection to the new generation while the frozen one still exists, and
// none fails.
//
// Both Apaches are frozen while idle, between two rounds of requests: a
// request the frozen Apache had already accepted would be lost whatever
// the method, since only that process can answer it.
func TestFrozenApacheLosesRequestsWithPlainReuseportButNotUnderRpwrap(t *testing.T) {
	requireServer(t, apache)
	t.Run("plain reuseport", func(t *testing.T) {
		t.Cleanup(func() { killLeftovers(t) }) // runs last
		dir, addr := workDir(t), freeAddr(t)
		docroot(t, dir)
		conf := reuseportConf(t, dir)
		startApacheDirect(t, dir, addr, conf, "a")
		frozen := startApacheDirect(t, dir, addr, conf, "b")
		waitUntilAllOK(t, addr)
		must(t, unix.Kill(-frozen, unix.SIGSTOP))
		res := seedRequests(t, addr)
		t.Logf("plain SO_REUSEPORT, one of two Apaches frozen: %d of %d failed (%d timeout)", res.Failed(), res.Sent, res.Timeout)
		if res.Failed() <= 10 {
			t.Errorf("plain SO_REUSEPORT: %d of %d failed, want more than 10 (the seed saw 54)", res.Failed(), res.Sent)
		}
	})
	t.Run("rpwrap", func(t *testing.T) {
		dir, addr := workDir(t), freeAddr(t)
		argv, env := apache.setup(t, dir, addr)
		args := append([]string{"--listen", addr, "--ready", "accept", "--drain-timeout", "5s"}, apache.flags...)
		w := startRpwrap(t, dir, env, append(append(args, "--"), argv...)...)
		waitUntilAllOK(t, addr)
		old, _ := w.generation(1)
		must(t, unix.Kill(-old, unix.SIGSTOP)) // rpwrap gives each generation its own process group
		done := make(chan supervisor.Response, 1)
		go func() { done <- w.ctl("restart") }()
		waitState(t, w, 2, supervisor.StateActive)
		res := seedRequests(t, addr)
		if _, st := w.generation(1); st != supervisor.StateDraining {
			t.Errorf("generation 1 is %q after the requests, want it still draining (frozen): the requests must meet both", st)
		}
		t.Logf("under rpwrap, the old Apache frozen: %d of %d failed", res.Failed(), res.Sent)
		if res.Failed() != 0 || res.OK != 100 {
			t.Errorf("under rpwrap: %d of %d failed (%v), want 0", res.Failed(), res.Sent, res.Errors)
		}
		if resp := <-done; !resp.OK {
			t.Errorf("restart: %s", resp.Error)
		}
	})
}

// seedRequests sends the seed's 100 requests, 25 at a time, 1 s timeout.
func seedRequests(t *testing.T, addr string) loadgen.Result {
	t.Helper()
	res, err := loadgen.Run(context.Background(), loadgen.Config{
		Target: addr, Path: "/", Clients: 25, Requests: 100, Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// waitUntilAllOK waits until a round of 100 requests all succeed: every
// server in the group answers.
func waitUntilAllOK(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for seedRequests(t, addr).Failed() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("servers on %s did not all answer within %v", addr, eventTimeout)
		}
	}
}

// waitState waits until generation n is in state st.
func waitState(t *testing.T, w *wrapped, n int, st supervisor.State) {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for {
		if _, got := w.generation(n); got == st {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation %d not %s within %v", n, st, eventTimeout)
		}
		time.Sleep(10 * time.Millisecond) // polling rpwrap's status; bounded above
	}
}

// reuseportConf is the example configuration with ListenCoresBucketsRatio,
// which makes Apache set SO_REUSEPORT on the socket it binds itself.
func reuseportConf(t *testing.T, dir string) string {
	return fromExample(t, dir, "apache/apache2.conf",
		"Listen ${APACHE_LISTEN}", "Listen ${APACHE_LISTEN}\nListenCoresBucketsRatio 1024")
}

// startApacheDirect runs Apache on conf without rpwrap, in a process group
// of its own, as instance name (its pid file's suffix), and returns its pid.
func startApacheDirect(t *testing.T, dir, addr, conf, name string) int {
	t.Helper()
	cmd := exec.Command("/usr/sbin/apache2", "-DFOREGROUND", "-f", conf)
	cmd.Env = append(append(os.Environ(), apacheEnv(dir, addr)...), "RPWRAP_GENERATION="+name)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		unix.Kill(-pid, unix.SIGKILL) // the whole group, stopped or not
		cmd.Wait()
		reapGroup(t, pid)
	})
	// Apache writes its pid file once its listener is bound.
	waitFile(t, filepath.Join(dir, "apache2-"+name+".pid"))
	return pid
}

// reapGroup reaps the killed members of process group pgid, which came to
// this process (a child subreaper) when their parent died.
func reapGroup(t *testing.T, pgid int) {
	deadline := time.Now().Add(eventTimeout)
	for unix.Kill(-pgid, 0) == nil {
		var ws unix.WaitStatus
		if pid, _ := unix.Wait4(-pgid, &ws, unix.WNOHANG, nil); pid > 0 {
			continue
		}
		if time.Now().After(deadline) {
			t.Errorf("process group %d still has members %v after SIGKILL", pgid, eventTimeout)
			return
		}
		time.Sleep(5 * time.Millisecond) // polling: no event for a grandchild's exit
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within %v", path, eventTimeout)
		}
		time.Sleep(10 * time.Millisecond) // polling a file; no event for it
	}
}
