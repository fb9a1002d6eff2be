//go:build linux

package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// callAsync sends req to u's control socket on a goroutine of its own.
func (u *upgradable) callAsync(req supervisor.Request) <-chan supervisor.Response {
	ch := make(chan supervisor.Response, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		resp, err := supervisor.Call(ctx, u.control, req)
		if err != nil {
			resp.Error = "call: " + err.Error()
		}
		ch <- resp
	}()
	return ch
}

func receive(t *testing.T, what string, ch <-chan supervisor.Response) supervisor.Response {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(time.Minute):
		t.Fatalf("no answer to %s", what)
	}
	return supervisor.Response{}
}

// A generation draining when rpwrap upgrades itself goes on draining in
// the new rpwrap with the deadline it had, and the client waiting for that
// drain (ctl restart --wait) is answered by the new rpwrap once it is over.
func TestUpgradeWhileDraining(t *testing.T) {
	u := startUpgradable(t, nil, []string{"--listen", "127.0.0.1:0", "--drain-timeout", "2s"}, "-ignore-term")
	old := u.activePid()
	waiter := u.callAsync(supervisor.Request{Command: "restart", Wait: true})
	var deadline time.Time
	waitUntil(t, "a draining generation", func() bool {
		for _, g := range u.status().Generations {
			if g.State == supervisor.StateDraining && g.Deadline != nil {
				deadline = *g.Deadline
				return true
			}
		}
		return false
	})
	install(t, "b", u.path)
	resp, _ := u.upgrade("")
	u.requireUpgraded(resp, "vB-test")
	var carried bool
	for _, g := range u.status().Generations {
		if g.State == supervisor.StateDraining && g.Pid == old && g.Deadline != nil && g.Deadline.Equal(deadline) {
			carried = true
		}
	}
	if !carried && time.Now().Before(deadline) {
		t.Fatalf("after the upgrade generation 1 (pid %d) is not draining with its deadline %s: %+v", old, deadline, u.status().Generations)
	}
	r := receive(t, "ctl restart --wait", waiter)
	if !r.OK || r.Restart == nil || !r.Restart.Drained {
		t.Fatalf("ctl restart --wait across the upgrade: %+v", r)
	}
	if !processGone(old) {
		t.Fatalf("the drained generation (pid %d) is still there", old)
	}
	u.waitOutput("did not stop by its deadline")
	if res := bounded(t, u.addr, 20); res.OK != 20 {
		t.Fatalf("after the drain: %d of 20 answered", res.OK)
	}
}

// An upgrade asked for during a restart waits for it, and the restart
// queued behind that one crosses the exec: the new rpwrap runs it and
// answers its client.
func TestUpgradeWithRestartQueued(t *testing.T) {
	u := startUpgradable(t, nil, []string{"--listen", "127.0.0.1:0", "--ready", "notify"}, "-ready-delay", "700ms")
	first := u.callAsync(supervisor.Request{Command: "restart"})
	waitUntil(t, "the restart to begin", func() bool { return len(u.status().Generations) == 2 })
	queued := u.callAsync(supervisor.Request{Command: "restart"})
	time.Sleep(100 * time.Millisecond) // it is queued behind the first
	install(t, "b", u.path)
	up := u.callAsync(supervisor.Request{Command: "upgrade"})
	if r := receive(t, "the first restart", first); !r.OK || r.Restart.Generation != 2 {
		t.Fatalf("first restart: %+v", r)
	}
	u.requireUpgraded(receive(t, "ctl upgrade", up), "vB-test")
	r := receive(t, "the queued restart", queued)
	if !r.OK || r.Restart == nil || r.Restart.Generation != 3 {
		t.Fatalf("the restart queued across the upgrade: %+v", r)
	}
	if st := u.status(); st.Restarts != 2 || len(st.History) != 2 {
		t.Fatalf("after the upgrade: %d restarts, %d in the history, want 2 and 2", st.Restarts, len(st.History))
	}
}

// As PID 1 of fresh PID and mount namespaces (a container's ENTRYPOINT)
// rpwrap upgrades itself too, with the classic BPF selector, under load,
// and goes on reaping and serving.
func TestUpgradeAsPID1WithClassicSelector(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		testutil.SkipOrFail(t, "unshare (util-linux) not installed")
	}
	u := startUpgradable(t, []string{"unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc", "--"},
		[]string{"--listen", "127.0.0.1:0", "--selector", "cbpf", "--drain-timeout", "2s", "--drain-stall", "200ms"})
	if u.nsPid != 1 || nsPid(t, u.pid) != "1" {
		t.Fatalf("rpwrap is pid %d (%s in its namespace), want 1", u.nsPid, nsPid(t, u.pid))
	}
	res := underLoad(t, u.wrapper, 4, func(load *loadgen.Load) {
		for i, name := range []string{"b", "a", "b"} {
			install(t, name, u.path)
			resp, _ := u.upgrade("")
			u.requireUpgraded(resp, "v"+strings.ToUpper(name)+"-test")
			waitRequests(t, load, load.Progress().Sent+100)
			if i == 1 {
				u.restart()
			}
		}
	})
	requireNoLoss(t, res, 300)
	if st := u.status(); st.Selector != "cbpf" || st.Restarts != 1 {
		t.Fatalf("after the upgrades: selector %s, %d restarts", st.Selector, st.Restarts)
	}
	// The upgrade signal does the same, onto rpwrap's own path.
	install(t, "a", u.path)
	if err := syscall.Kill(u.pid, supervisor.UpgradeSignal); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the upgrade signal to take effect", func() bool { return u.status().Rpwrap.Version == "vA-test" })
	u.requireExe(u.path)
	if res := bounded(t, u.addr, 20); res.OK != 20 {
		t.Fatalf("after the signalled upgrade: %d of 20 answered", res.OK)
	}
}

// With --pass bind the seccomp listener of the serving generation crosses
// the exec, and the next restart's bind is intercepted by the new rpwrap.
func TestUpgradeWithBindRoute(t *testing.T) {
	addr := freePort(t)
	u := startUpgradable(t, nil, []string{"--listen", addr, "--pass", "bind", "--ready", "accept"}, "-bind", addr)
	before := seccompListeners(t, u.pid)
	if before != 1 {
		t.Fatalf("rpwrap holds %d seccomp listeners, want 1", before)
	}
	res := underLoad(t, u.wrapper, 4, func(load *loadgen.Load) {
		install(t, "b", u.path)
		resp, _ := u.upgrade("")
		u.requireUpgraded(resp, "vB-test")
		// systemd (Type=notify) sees a reload of the same main process.
		for _, line := range []string{"RELOADING=1", "MAINPID=" + itoa(u.pid)} { // READY=1 comes with MAINPID
			if !u.notify.waitFor(t, line, u.done, 10*time.Second) {
				t.Errorf("NOTIFY_SOCKET: no %s around the upgrade", line)
			}
		}
		if n := seccompListeners(t, u.pid); n != 1 {
			t.Errorf("after the upgrade rpwrap holds %d seccomp listeners, want 1", n)
		}
		r := u.restart() // its server binds addr itself: intercepted, or it fails
		if r.Generation != 2 {
			t.Errorf("restart after the upgrade: %+v", r)
		}
		waitRequests(t, load, load.Progress().Sent+200)
	})
	requireNoLoss(t, res, 200)
	u.waitOutput("upgraded in place")
}

// seccompListeners counts the seccomp notification descriptors pid holds.
func seccompListeners(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if link, _ := os.Readlink("/proc/" + itoa(pid) + "/fd/" + e.Name()); strings.Contains(link, "seccomp") {
			n++
		}
	}
	return n
}

// The check mode of a real build refuses a state document of a version it
// does not know, by name, and accepts one it reads.
func TestUpgradeCheckRefusesAnUnknownStateVersion(t *testing.T) {
	for _, c := range []struct {
		doc  string
		ok   bool
		want string
	}{
		{`{"version":99,"from":"v9"}`, false, "unknown state document version: version 99"},
		{`{"version":2,"groups":[{"spec":{"Name":"tcp-1","Network":"tcp","Addr":"127.0.0.1:1"}}],"generations":[{"n":1,"listeners":[{"fd":-1}],"slots":[0]}]}`, true, ""},
	} {
		f, err := os.CreateTemp(t.TempDir(), "state")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(c.doc)
		cmd := exec.Command(upgradeBinary(t, "a"), supervisor.CheckCommand, "--listen", "127.0.0.1:1", "--", "/bin/true")
		cmd.ExtraFiles = []*os.File{f}
		cmd.Env = append(os.Environ(), "RPWRAP_UPGRADE_STATE=3")
		out, _ := cmd.Output()
		f.Close()
		var a supervisor.CheckAnswer
		if err := json.Unmarshal(out, &a); err != nil || a.Rpwrap != "upgrade-check" || a.Version != "vA-test" || a.OK != c.ok || !strings.Contains(a.Error, c.want) {
			t.Errorf("check of %s: %q (%v), want ok=%v and an error containing %q", c.doc, out, err, c.ok, c.want)
		}
	}
}

// The control for TestUpgradeInPlaceUnderLoad: replacing rpwrap the way
// there is without the upgrade, stopping it and starting the new binary,
// stops the server with it, and requests fail meanwhile.
func TestUpgradeControlStopAndStartLosesRequests(t *testing.T) {
	u := startUpgradable(t, nil, []string{"--listen", "127.0.0.1:0"})
	server := u.activePid()
	load, err := loadgen.Start(context.Background(), loadgen.Config{Target: u.addr, Clients: 4, Duration: time.Minute, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitRequests(t, load, 200)
	install(t, "b", u.path)
	u.stop(syscall.SIGTERM)
	next := exec.Command(u.path, "--listen", u.addr, "--control", u.control, "--", u.dir+"/server", "serve-demo")
	next.Env = append(os.Environ(), "RUNTIME_DIRECTORY="+u.dir)
	if err := next.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { next.Process.Signal(syscall.SIGTERM); next.Wait() }()
	waitUntil(t, "the new rpwrap to answer", func() bool { return bounded(t, u.addr, 1).OK == 1 })
	load.Stop()
	res := load.Wait()
	if res.Failed() == 0 || !processGone(server) {
		t.Fatalf("stop and start: %d of %d requests failed, server %d gone: %v; want failures and the server gone", res.Failed(), res.Sent, server, processGone(server))
	}
	t.Logf("stop and start instead of an upgrade: %d of %d requests failed", res.Failed(), res.Sent)
}
