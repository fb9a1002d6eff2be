//go:build linux

package fdpass

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// ioTimeout is generous: the machine is shared and slow at times.
const ioTimeout = 30 * time.Second

func listenLoopback(t testing.TB, s string) *Listener {
	t.Helper()
	spec, err := ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// shimCmd builds the exec.Cmd that starts path through the shim.
func shimCmd(path string, argv, base []string, names []string, route Route, files ...*os.File) *exec.Cmd {
	exe, args, env := ShimCommand(path, argv, base, names, route)
	return &exec.Cmd{Path: exe, Args: args, Env: env, ExtraFiles: files, Stderr: os.Stderr}
}

func TestShimStartsServerWithListenersAtFD3(t *testing.T) {
	for _, route := range []Route{ListenFDs, Nginx} {
		t.Run(string(route), func(t *testing.T) { testShimServes(t, route) })
	}
}

func testShimServes(t *testing.T, route Route) {
	web, api := listenLoopback(t, "web=127.0.0.1:0"), listenLoopback(t, "api=[::1]:0")
	stray, strayW, err := os.Pipe() // a non-listener the server must not see
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	defer strayW.Close()
	wantNginx := ""
	if route == Nginx {
		wantNginx = "3;4;"
	}
	// GODEBUG: the server is a Go program, whose runtime would otherwise open
	// cgroup files at start; they are its own fds, not inherited ones.
	base := append(os.Environ(), "GODEBUG=containermaxprocs=0,updatemaxprocs=0", "LISTEN_PID=1", "LISTEN_FDS=7", "LISTEN_PIDFDID=99", "NGINX=9;",
		shimExecEnv+"=/bin/false", roleEnv+"=server", wantArg0Env+"=my-server",
		wantNamesEnv+"=web:api", wantNginxEnv+"="+wantNginx)
	cmd := shimCmd(os.Args[0], []string{"my-server", "-test.run=^$"}, base, []string{"web", "api"}, route,
		web.File(), api.File(), stray)
	exited := startChild(t, cmd)
	runtime.KeepAlive(web)
	runtime.KeepAlive(api)
	for _, l := range []*Listener{web, api} {
		want := fmt.Sprintf("%d %s", cmd.Process.Pid, l.Spec().Name)
		if got := fetchLine(t, l.Spec().Addr.String(), exited); got != want {
			t.Errorf("server on %s answered %q, want %q", l.Spec(), got, want)
		}
	}
	<-exited.done
	if exited.err != nil {
		t.Fatalf("server: %v (its checks are on stderr)", exited.err)
	}
}

// child is a started process: done closes when it has exited with err.
type child struct {
	done chan struct{}
	err  error
}

// startChild starts cmd and reaps it; the child is killed at the end of the
// test if it still runs.
func startChild(t *testing.T, cmd *exec.Cmd) *child {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	return c
}

// fetchLine connects to addr and reads one line, failing the test if the
// child exits first.
func fetchLine(t *testing.T, addr string, server *child) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(ioTimeout))
	lines := make(chan string, 1)
	go func() {
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			line = "read error: " + err.Error()
		}
		lines <- strings.TrimSuffix(line, "\n")
	}()
	select {
	case line := <-lines:
		return line
	case <-server.done:
		if server.err == nil { // it served every listener before exiting
			return <-lines
		}
		conn.Close()
		<-lines
		t.Fatalf("server exited before answering on %s: %v (its checks are on stderr)", addr, server.err)
		return ""
	}
}

func TestShimExitsWith127And126(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, wantMsg string
		wantCode      int
	}{
		{filepath.Join(dir, "missing"), "rpwrap: " + filepath.Join(dir, "missing") + ": command not found (execve: no such file or directory)\n", 127},
		{notExec, "rpwrap: " + notExec + ": command not executable (execve: permission denied)\n", 126},
		{dir, "rpwrap: " + dir + ": command not executable (execve: permission denied)\n", 126},
	} {
		cmd := shimCmd(tc.path, nil, os.Environ(), nil, ListenFDs)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != tc.wantCode {
			t.Errorf("shim exec %s: %v, want exit %d", tc.path, err, tc.wantCode)
		}
		if stderr.String() != tc.wantMsg {
			t.Errorf("shim exec %s said %q, want %q", tc.path, stderr.String(), tc.wantMsg)
		}
	}
}

// A Bind-route shim that cannot hand its seccomp listener to rpwrap (here:
// fd 3 is no socket pair) must not exec the server, whose binds would then
// block forever: it exits 126 and says why.
func TestShimRefusesBindRouteWithoutRpwrapsSocketPair(t *testing.T) {
	cmd := shimCmd("/bin/true", nil, os.Environ(), nil, Bind)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 126 {
		t.Fatalf("bind route without socket pair: %v, want exit 126", err)
	}
	if !strings.Contains(stderr.String(), "install bind filter") {
		t.Errorf("message %q does not say the bind filter could not be set up", stderr.String())
	}
}

func TestShimCommandBuildsEnvironment(t *testing.T) {
	base := []string{"PATH=/bin", "LISTEN_PID=1", "LISTEN_PIDFDID=5", "LISTEN_FDS=3", "LISTEN_FDNAMES=x",
		"NGINX=3;", "RPWRAP_SHIM_EXEC=/old", "NOTIFY_SOCKET=/run/n"}
	for _, tc := range []struct {
		route Route
		want  []string
	}{
		{ListenFDs, []string{"PATH=/bin", "NOTIFY_SOCKET=/run/n", "LISTEN_FDS=2", "LISTEN_FDNAMES=a:b",
			"RPWRAP_SHIM_EXEC=/srv/httpd", "RPWRAP_SHIM_ROUTE=listen-fds"}},
		{Nginx, []string{"PATH=/bin", "NOTIFY_SOCKET=/run/n", "LISTEN_FDS=2", "LISTEN_FDNAMES=a:b", "NGINX=3;4;",
			"RPWRAP_SHIM_EXEC=/srv/httpd", "RPWRAP_SHIM_ROUTE=nginx"}},
		{Bind, []string{"PATH=/bin", "NOTIFY_SOCKET=/run/n", "RPWRAP_SHIM_EXEC=/srv/httpd", "RPWRAP_SHIM_ROUTE=bind"}},
	} {
		exe, args, env := ShimCommand("/srv/httpd", []string{"httpd", "-X"}, base, []string{"a", "b"}, tc.route)
		if exe != "/proc/self/exe" || !slices.Equal(args, []string{shimArg0, "httpd", "-X"}) {
			t.Errorf("%s: exe %q args %q", tc.route, exe, args)
		}
		if !slices.Equal(env, tc.want) {
			t.Errorf("%s: env\n%q, want\n%q", tc.route, env, tc.want)
		}
	}
}

// BenchmarkShimStart compares fork+exec+wait of /bin/true directly and
// through the shim, in the same run, and reports the ratio.
func BenchmarkShimStart(b *testing.B) {
	testutil.RequireRoot(b) // not for privileges: keeps CI from skipping it silently elsewhere
	var direct, shim time.Duration
	for b.Loop() {
		start := time.Now()
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if err := shimCmd("/bin/true", []string{"true"}, os.Environ(), nil, ListenFDs).Run(); err != nil {
			b.Fatal(err)
		}
		direct, shim = direct+mid.Sub(start), shim+time.Since(mid)
	}
	b.ReportMetric(float64(direct.Nanoseconds())/float64(b.N), "direct-ns/op")
	b.ReportMetric(float64(shim.Nanoseconds())/float64(b.N), "shim-ns/op")
	b.ReportMetric(float64(shim)/float64(direct), "shim/direct")
}
