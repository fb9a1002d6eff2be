//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// The in-place upgrade runs real rpwrap binaries (the test binary cannot
// re-execute itself as rpwrap): three builds of this package that differ
// in their bytes, built once for all the tests.
var (
	upgradeBinsOnce sync.Once
	upgradeBinsDir  string
	upgradeBinsErr  error
)

// upgradeBinary returns the path of the build named name: "a" and "b"
// (versions vA-test and vB-test) and "fail" (vF-test, which passes the
// check and fails to take over after the exec).
func upgradeBinary(t *testing.T, name string) string {
	t.Helper()
	upgradeBinsOnce.Do(func() {
		if upgradeBinsDir, upgradeBinsErr = os.MkdirTemp("", "rpwup"); upgradeBinsErr != nil {
			return
		}
		builds := map[string]string{
			"a":    "-X main.version=vA-test",
			"b":    "-X main.version=vB-test",
			"fail": "-X main.version=vF-test -X github.com/rpwrap/rpwrap/supervisor.failAfterExec=injected-failure",
		}
		for n, ld := range builds {
			if upgradeBinsErr = testutil.GoBuildFlags(filepath.Join(upgradeBinsDir, n), ".", []string{"-ldflags", ld}, "CGO_ENABLED=0"); upgradeBinsErr != nil {
				return
			}
		}
	})
	if upgradeBinsErr != nil {
		t.Fatal(upgradeBinsErr)
	}
	return filepath.Join(upgradeBinsDir, name)
}

// removeUpgradeBinaries is called by TestMain once the tests are done.
func removeUpgradeBinaries() {
	if upgradeBinsDir != "" {
		os.RemoveAll(upgradeBinsDir)
	}
}

// install copies the build name to path as a package manager does: a new
// file renamed over the old one.
func install(t *testing.T, name, path string) {
	t.Helper()
	b, err := os.ReadFile(upgradeBinary(t, name))
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// upgradable is a running rpwrap started from a build at dir/rpwrap.
type upgradable struct {
	*wrapper
	dir, path string
	pid       int // as this test sees it
	nsPid     int // as rpwrap sees itself: 1 in a PID namespace of its own
}

// startUpgradable installs build "a" as dir/rpwrap and runs it with flags
// around the built-in server (a copy of its own, which the upgrades leave
// alone); prefix, if any, comes before rpwrap in the command line
// (unshare).
func startUpgradable(t *testing.T, prefix, flags []string, serverArgs ...string) *upgradable {
	t.Helper()
	testutil.RequireRoot(t)
	dir := shortTempDir(t)
	u := &upgradable{dir: dir, path: filepath.Join(dir, "rpwrap")}
	install(t, "a", u.path)
	install(t, "a", filepath.Join(dir, "server"))
	args := append(append([]string(nil), flags...), "--", filepath.Join(dir, "server"), "serve-demo")
	args = append(args, serverArgs...)
	w := &wrapper{t: t, control: filepath.Join(dir, "ctl.sock"), out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	w.notify = newNotifyReader(t, filepath.Join(dir, "notify.sock"))
	argv := append(append(append([]string(nil), prefix...), u.path, "--control", w.control), args...)
	w.cmd = exec.Command(argv[0], argv[1:]...)
	w.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+w.notify.path, "RUNTIME_DIRECTORY="+dir)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.err = w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		<-w.done
		if t.Failed() {
			t.Logf("rpwrap output:\n%s", w.out.String())
		}
	})
	if !w.notify.waitFor(t, "READY=1", w.done, 30*time.Second) {
		t.Fatalf("rpwrap did not become ready; output:\n%s", w.out.String())
	}
	st := w.status()
	spec, err := fdpass.ParseSpec(st.Listeners[0])
	if err != nil {
		t.Fatal(err)
	}
	w.addr = spec.Addr.String()
	u.wrapper, u.pid, u.nsPid = w, st.Rpwrap.Pid, st.Rpwrap.Pid
	if prefix != nil { // rpwrap is unshare's child, pid 1 in its namespace
		u.pid = childPid(t, w.cmd.Process.Pid)
	}
	return u
}

// upgrade asks for an upgrade onto binary ("" for rpwrap's own path) and
// returns the answer and how long it took to come.
func (u *upgradable) upgrade(binary string) (supervisor.Response, time.Duration) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t0 := time.Now()
	resp, err := supervisor.Call(ctx, u.control, supervisor.Request{Command: "upgrade", Binary: binary})
	if err != nil {
		u.t.Fatalf("ctl upgrade: %v; output:\n%s", err, u.out.String())
	}
	return resp, time.Since(t0)
}

// requireUpgraded fails unless resp is a successful upgrade to version
// and rpwrap, same pid, now runs from the file at u.path.
func (u *upgradable) requireUpgraded(resp supervisor.Response, version string) {
	u.t.Helper()
	if !resp.OK || resp.Upgrade == nil || resp.Upgrade.To != version {
		u.t.Fatalf("upgrade to %s: %+v", version, resp)
	}
	st := u.status()
	if st.Rpwrap.Pid != u.nsPid || st.Rpwrap.Version != version {
		u.t.Fatalf("after the upgrade rpwrap is pid %d version %s, want pid %d version %s", st.Rpwrap.Pid, st.Rpwrap.Version, u.nsPid, version)
	}
	u.requireExe(u.path)
}

// requireExe fails unless /proc/PID/exe of rpwrap is the file at path now.
func (u *upgradable) requireExe(path string) {
	u.t.Helper()
	var exe, file syscall.Stat_t
	if err := syscall.Stat("/proc/"+itoa(u.pid)+"/exe", &exe); err != nil {
		u.t.Fatal(err)
	}
	if err := syscall.Stat(path, &file); err != nil {
		u.t.Fatal(err)
	}
	if exe.Ino != file.Ino || exe.Dev != file.Dev {
		link, _ := os.Readlink("/proc/" + itoa(u.pid) + "/exe")
		u.t.Fatalf("rpwrap runs %s (inode %d), not the file at %s (inode %d)", link, exe.Ino, path, file.Ino)
	}
}

// requireRefused fails unless resp refuses the upgrade with a message
// containing want, and rpwrap serves on as before: same version and
// binary, the same number of descriptors, requests answered.
func (u *upgradable) requireRefused(resp supervisor.Response, want string, fds int) {
	u.t.Helper()
	if resp.OK || !strings.Contains(resp.Error, want) {
		u.t.Fatalf("upgrade: want a refusal saying %q, got %+v", want, resp)
	}
	if st := u.status(); st.Rpwrap.Version != "vA-test" || st.Rpwrap.Pid != u.nsPid {
		u.t.Fatalf("after a refused upgrade rpwrap is %s, pid %d", st.Rpwrap.Version, st.Rpwrap.Pid)
	}
	if n := settledFDCount(u.t, u.pid); n != fds {
		u.t.Errorf("refused upgrade (%s): rpwrap holds %d descriptors, %d before", want, n, fds)
	}
	if res := bounded(u.t, u.addr, 20); res.OK != 20 {
		u.t.Fatalf("after a refused upgrade: %d of 20 requests answered", res.OK)
	}
}

// Twenty upgrades under load, onto alternating builds installed at
// rpwrap's path: no request fails, rpwrap and the server keep their pids,
// rpwrap runs the new file each time, and a restart afterwards with the
// serving process frozen still hands over without a loss: the selector
// crossed every exec.
func TestUpgradeInPlaceUnderLoad(t *testing.T) {
	u := startUpgradable(t, nil, []string{"--listen", "127.0.0.1:0", "--drain-timeout", "3s", "--drain-stall", "200ms"})
	server := u.activePid()
	var fds int // after the first upgrade: the old binary's process may hold a descriptor a fresh one does not
	load, err := loadgen.Start(context.Background(), loadgen.Config{Target: u.addr, Clients: 4, Duration: 2 * time.Minute, Timeout: 5 * time.Second, Bucket: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	time.Sleep(500 * time.Millisecond) // steady state, for the p99 outside the upgrades
	var took, checks []time.Duration
	for i := range 20 {
		name, version := "b", "vB-test"
		if i%2 == 1 {
			name, version = "a", "vA-test"
		}
		install(t, name, u.path)
		end := load.Window(fmt.Sprintf("upgrade %d", i))
		resp, d := u.upgrade("")
		end()
		took = append(took, d)
		if resp.Upgrade != nil {
			checks = append(checks, resp.Upgrade.Check)
		}
		u.requireUpgraded(resp, version)
		if got := u.activePid(); got != server {
			t.Fatalf("upgrade %d: the server is pid %d, was %d", i, got, server)
		}
		if i == 0 {
			fds = settledFDCount(t, u.pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := settledFDCount(t, u.pid); n != fds {
		t.Errorf("rpwrap holds %d descriptors after 20 upgrades, %d after the first: a descriptor leaks per upgrade", n, fds)
	}
	// The serving process frozen (it answers what it had accepted, then
	// stops itself with SIGSTOP): only the selector, migrating its queue
	// and steering new connections, gets them to the successor.
	hangServer(t, server)
	waitUntil(t, "connections queued on the frozen server", func() bool { return u.status().Generations[0].Queued[0] > 0 })
	end := load.Window("restart, old frozen")
	if r := u.restart(); !r.Migrated {
		t.Errorf("restart after the upgrades: the frozen server's queue was not handed over: %+v", r)
	}
	end()
	if !processGone(server) {
		t.Errorf("the frozen server %d is still there after its drain", server)
	}
	time.Sleep(300 * time.Millisecond)
	load.Stop()
	res := load.Wait()
	if res.Failed() != 0 || res.OK < 100 {
		for _, w := range res.Windows {
			if n := res.FailedIn([]loadgen.Window{w}); n > 0 {
				t.Logf("%s: %d failed", w.Label, n)
			}
		}
		t.Fatalf("under load across 20 upgrades and a frozen restart: %d of %d requests failed (%d answered): %v", res.Failed(), res.Sent, res.OK, res.Errors)
	}
	slices.Sort(took)
	slices.Sort(checks)
	inside, outside := res.SplitLatency(res.Windows[:20])
	p99 := outside.Quantile(0.99)
	t.Logf("%d requests, 0 failed; ctl upgrade until the new rpwrap answered: median %s, max %s over 20 (the check of the new binary: median %s, max %s); "+
		"request latency outside the upgrades p50 %s p99 %s max %s (%d requests), during them p50 %s p99 %s p99.9 %s max %s (%d requests); above the steady p99 during them: %v",
		res.Sent, took[10].Round(time.Microsecond), took[19].Round(time.Microsecond), checks[10].Round(time.Microsecond), checks[19].Round(time.Microsecond),
		outside.Quantile(0.5), p99, outside.Max(), outside.Count(),
		inside.Quantile(0.5), inside.Quantile(0.99), inside.Quantile(0.999), inside.Max(), inside.Count(), inside.Max() > p99)
}

// Each refused upgrade leaves rpwrap as it was: a missing file, one that
// is not executable, a directory, a program that is not rpwrap, one that
// hangs in its check, and an rpwrap that cannot read the state document.
func TestUpgradeRefusedLeavesRpwrapServing(t *testing.T) {
	u := startUpgradable(t, nil, []string{"--listen", "127.0.0.1:0"})
	fds := settledFDCount(t, u.pid)
	noexec := filepath.Join(u.dir, "noexec")
	os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644)
	hang := filepath.Join(u.dir, "hang")
	os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755)
	old := filepath.Join(u.dir, "old")
	os.WriteFile(old, []byte("#!/bin/sh\necho '{\"rpwrap\":\"upgrade-check\",\"version\":\"v0\",\"state_version\":1,\"ok\":false,\"error\":\"unknown state document version: version 2\"}'; exit 1\n"), 0o755)
	for _, c := range []struct{ binary, want string }{
		{filepath.Join(u.dir, "missing"), "no such file"},
		{noexec, "not executable"},
		{u.dir, "not a regular file"},
		{"/bin/true", "not an rpwrap"},
		{old, "cannot take over"},
	} {
		resp, _ := u.upgrade(c.binary)
		u.requireRefused(resp, c.want, fds)
	}
	if testing.Short() {
		return
	}
	resp, _ := u.upgrade(hang)
	u.requireRefused(resp, "did not answer its check", fds)
}

// A new binary that passes its check and fails after the exec does not
// take the servers down: it executes the previous binary again, which
// serves on and answers ctl upgrade with the reason.
func TestUpgradeFailingAfterExecFallsBack(t *testing.T) {
	u := startUpgradable(t, nil, []string{"--listen", "127.0.0.1:0"})
	server := u.activePid()
	load, err := loadgen.Start(context.Background(), loadgen.Config{Target: u.addr, Clients: 2, Duration: time.Minute, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	resp, _ := u.upgrade(upgradeBinary(t, "fail"))
	if resp.OK || resp.Upgrade == nil || !resp.Upgrade.Fallback || !strings.Contains(resp.Error, "injected-failure") {
		t.Fatalf("upgrade onto a failing binary: want a fallback naming the failure, got %+v", resp)
	}
	st := u.status()
	if st.Rpwrap.Pid != u.nsPid || st.Rpwrap.Version != "vA-test" || u.activePid() != server {
		t.Fatalf("after the fallback: rpwrap pid %d version %s, server %d (want %d, vA-test, %d)", st.Rpwrap.Pid, st.Rpwrap.Version, u.activePid(), u.pid, server)
	}
	u.requireExe(u.path) // the previous binary, the file at rpwrap's path
	load.Stop()
	if res := load.Wait(); res.Failed() != 0 || res.OK == 0 {
		t.Fatalf("across the failed upgrade: %d of %d requests failed", res.Failed(), res.Sent)
	}
	r := u.restart() // the fallback's selector (a program of its own) steers
	if r.Pid == server || bounded(t, u.addr, 20).OK != 20 {
		t.Fatalf("restart after the fallback: %+v", r)
	}
}

// settledFDCount is the number of descriptors pid holds once it stays the same
// for 100ms: a control client just answered may still be closing.
func settledFDCount(t *testing.T, pid int) int {
	t.Helper()
	n := countFDs(t, pid)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		m := countFDs(t, pid)
		if m == n {
			return n
		}
		n = m
	}
	return n
}
