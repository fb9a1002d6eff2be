//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// As a container's ENTRYPOINT rpwrap is PID 1 in fresh PID and network
// namespaces: it reaps orphans, forwards signals and exits with the
// server's status.
func TestRunsAsPID1InFreshNamespaces(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		testutil.SkipOrFail(t, "unshare (util-linux) not installed")
	}
	dir := shortTempDir(t)
	usr1 := filepath.Join(dir, "usr1")
	orphans := filepath.Join(dir, "orphans")
	// The server: makes orphans that exit (zombies for PID 1 to reap),
	// records SIGUSR1, and exits 7 on SIGTERM.
	server := `
trap 'echo got >` + usr1 + `' USR1
trap 'exit 7' TERM
for i in 1 2 3 4 5; do (sleep 0.01 & echo $! >>` + orphans + `) ; done
echo up >` + filepath.Join(dir, "up") + `
while :; do sleep 0.05; done`
	exe := testBinary(t)
	var out testutil.SyncBuffer
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc", "--net", "--",
		"/bin/sh", "-c", `ip link set lo up 2>/dev/null || true; exec "$0" "$@"`,
		exe, "--listen", "127.0.0.1:8080", "--ready", "none", "--control", filepath.Join(dir, "ctl.sock"),
		"--", "/bin/sh", "-c", server)
	cmd.Env = append(os.Environ(), asRpwrap+"=1", "RUNTIME_DIRECTORY="+dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}()
	waitFile(t, filepath.Join(dir, "up"), done)

	rpwrap := childPid(t, cmd.Process.Pid) // unshare forked it: PID 1 inside
	if nspid := nsPid(t, rpwrap); nspid != "1" {
		t.Fatalf("rpwrap is pid %s in its namespace, want 1", nspid)
	}
	// Every orphan is reaped: no zombie child of rpwrap remains.
	waitUntil(t, "orphans reaped", func() bool {
		for _, kid := range testutil.Children(rpwrap) {
			if processGone(kid) { // a zombie
				return false
			}
		}
		b, _ := os.ReadFile(orphans)
		return strings.Count(string(b), "\n") == 5
	})
	syscall.Kill(rpwrap, syscall.SIGUSR1)
	waitFile(t, usr1, done)
	syscall.Kill(rpwrap, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("rpwrap did not exit on SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 7 {
		t.Errorf("exit status %d, want the server's 7; output:\n%s", code, out.String())
	}
}

// waitFile waits until path exists, failing if done fires first.
func waitFile(t *testing.T, path string, done <-chan error) {
	t.Helper()
	waitUntil(t, path+" to appear", func() bool {
		select {
		case err := <-done:
			t.Fatalf("process ended early: %v", err)
		default:
		}
		_, err := os.Stat(path)
		return err == nil
	})
}

// waitUntil polls cond (for states that have no event) for up to 20s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func childPid(t *testing.T, ppid int) int {
	t.Helper()
	var kids []int
	waitUntil(t, "unshare's child", func() bool { kids = testutil.Children(ppid); return len(kids) > 0 })
	return kids[0]
}

// nsPid is pid's number in its innermost PID namespace.
func nsPid(t *testing.T, pid int) string {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "NSpid:") {
			f := strings.Fields(line)
			return f[len(f)-1]
		}
	}
	return ""
}

func itoa(i int) string { return strconv.Itoa(i) }
