//go:build linux

package demoserver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// get fetches path from addr on a new connection and returns the status and
// the whole body.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: eventTimeout}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

func TestServesEveryHandlerOnPassedSocket(t *testing.T) {
	c := startChild(t)
	c.waitReady(t)

	want := fmt.Sprintf("gen=7 pid=%d\n", c.cmd.Process.Pid)
	if code, body := get(t, c.addr, "/"); code != 200 || body != want {
		t.Errorf("GET / = %d %q, want 200 %q", code, body, want)
	}
	if code, body := get(t, c.addr, "/slow?ms=20"); code != 200 || body != "slept 20 ms\n" {
		t.Errorf("GET /slow?ms=20 = %d %q, want 200 \"slept 20 ms\\n\"", code, body)
	}
	code, body := get(t, c.addr, "/download?bytes=100000&rate=1000000")
	if code != 200 || body != strings.Repeat("x", 100000) {
		t.Errorf("GET /download?bytes=100000&rate=1000000 = %d with %d bytes, want 200 with 100000", code, len(body))
	}
	for _, path := range []string{"/slow?ms=60001", "/slow?ms=x", "/download?bytes=1000&rate=1", "/download?bytes=-1"} {
		if code, _ := get(t, c.addr, path); code != 400 {
			t.Errorf("GET %s = %d, want 400", path, code)
		}
	}
	if code, _ := get(t, c.addr, "/nothing"); code != 404 {
		t.Errorf("GET /nothing = %d, want 404", code)
	}

	c.signal(t, syscall.SIGTERM)
	if code := c.exitCode(t); code != 0 {
		t.Errorf("exit status after SIGTERM = %d, want 0", code)
	}
	wantLog := fmt.Sprintf("demo server gen=7 pid=%d serving on %s\n", c.cmd.Process.Pid, c.addr)
	if !strings.HasPrefix(c.stderr.String(), wantLog) {
		t.Errorf("stderr = %q, want it to start with %q", c.stderr.String(), wantLog)
	}
}

// startSlowRequest sends GET /slow?ms=ms on a new connection and returns
// once the server has accepted that connection: it connects first, then
// gets "/" on a second connection; the single accept loop takes connections
// in the order of the accept queue, so the first was accepted before the
// second was answered.
func startSlowRequest(t *testing.T, c *child, ms int) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", c.addr, eventTimeout)
	if err != nil {
		t.Fatalf("connect to demo server: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(eventTimeout))
	fmt.Fprintf(conn, "GET /slow?ms=%d HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", ms)
	if code, _ := get(t, c.addr, "/"); code != 200 {
		t.Fatalf("GET / = %d, want 200", code)
	}
	return conn
}

func TestGracefulStopFinishesRequestInFlight(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGWINCH} {
		t.Run(sig.String(), func(t *testing.T) {
			c := startChild(t)
			c.waitReady(t)
			conn := startSlowRequest(t, c, 1000)
			c.signal(t, sig)

			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("read /slow response after %v: %v", sig, err)
			}
			body, err := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(body) != "slept 1000 ms\n" || err != nil {
				t.Errorf("/slow after %v = %d %q (%v), want 200 \"slept 1000 ms\\n\"", sig, resp.StatusCode, body, err)
			}
			if code := c.exitCode(t); code != 0 {
				t.Errorf("exit status = %d, want 0", code)
			}
		})
	}
}

// The control for the test above: without -graceful the request in flight
// is cut, so that test can fail.
func TestStopWithoutGracefulCutsRequestInFlight(t *testing.T) {
	c := startChild(t, "-graceful=false")
	c.waitReady(t)
	conn := startSlowRequest(t, c, 10000)
	c.signal(t, syscall.SIGTERM)

	// EOF, or a reset if the server had not read the request yet.
	got, err := io.ReadAll(conn)
	if len(got) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("/slow after SIGTERM read %q (%v), want nothing, then EOF or a reset", got, err)
	}
	if code := c.exitCode(t); code != 0 {
		t.Errorf("exit status = %d, want 0", code)
	}
}

func TestExitAtStartExitsWithCodeAndNeverReady(t *testing.T) {
	c := startChild(t, "-exit-at-start", "5")
	if code := c.exitCode(t); code != 5 {
		t.Errorf("exit status = %d, want 5", code)
	}
	if n := c.pendingNotification(t); n != "" {
		t.Errorf("notification %q, want none", n)
	}
}

func TestNeverReadyServesWithoutReady(t *testing.T) {
	c := startChild(t, "-never-ready")
	if code, _ := get(t, c.addr, "/"); code != 200 {
		t.Errorf("GET / = %d, want 200", code)
	}
	c.signal(t, syscall.SIGINT)
	if code := c.exitCode(t); code != 0 {
		t.Errorf("exit status = %d, want 0", code)
	}
	// The child has exited: anything it sent is in the socket by now.
	if n := c.pendingNotification(t); n != "" {
		t.Errorf("notification %q, want none", n)
	}
}

func TestCrashAfterReadyExits3(t *testing.T) {
	c := startChild(t, "-crash-after-ready", "200ms")
	c.waitReady(t)
	if code := c.exitCode(t); code != 3 {
		t.Errorf("exit status = %d, want 3", code)
	}
}

// -crash-in-warm-up: the server accepts a connection, never answers it,
// never sends READY=1, and exits 3; the client sees its connection end
// without a response.
func TestCrashInWarmUpAcceptsThenDropsAndExits3(t *testing.T) {
	c := startChild(t, "-crash-in-warm-up", "500ms")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: eventTimeout}
	resp, err := client.Get("http://" + c.addr + "/")
	if err == nil {
		resp.Body.Close()
		t.Errorf("GET / = %d, want the connection to end without a response", resp.StatusCode)
	}
	if code := c.exitCode(t); code != 3 {
		t.Errorf("exit status = %d, want 3", code)
	}
	if n := c.pendingNotification(t); n != "" {
		t.Errorf("notification %q, want none", n)
	}
}

func TestReadyDelayHoldsConnectionsUntilReady(t *testing.T) {
	const delay = 500 * time.Millisecond
	start := time.Now()
	c := startChild(t, "-ready-delay", delay.String())
	// Sent before the server accepts: it waits in the accept queue.
	if code, _ := get(t, c.addr, "/"); code != 200 {
		t.Errorf("GET / = %d, want 200", code)
	}
	if waited := time.Since(start); waited < delay {
		t.Errorf("GET / answered %v after start, before the %v ready delay", waited, delay)
	}
	c.waitReady(t)
	c.signal(t, syscall.SIGTERM)
	if code := c.exitCode(t); code != 0 {
		t.Errorf("exit status = %d, want 0", code)
	}
}

func TestIgnoreTermKeepsServing(t *testing.T) {
	c := startChild(t, "-ignore-term")
	c.waitReady(t)
	if !sigIgnored(t, c.cmd.Process.Pid, syscall.SIGTERM) {
		t.Fatalf("SIGTERM not in SigIgn of pid %d", c.cmd.Process.Pid)
	}
	// An ignored signal is discarded when sent: the server must keep serving.
	c.signal(t, syscall.SIGTERM)
	if code, _ := get(t, c.addr, "/"); code != 200 {
		t.Errorf("GET / after SIGTERM = %d, want 200", code)
	}
	c.signal(t, syscall.SIGQUIT)
	if code := c.exitCode(t); code != 0 {
		t.Errorf("exit status after SIGQUIT = %d, want 0", code)
	}
}

// sigIgnored reads the SigIgn mask of pid from /proc.
func sigIgnored(t *testing.T, pid int, sig syscall.Signal) bool {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if hex, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatalf("parse SigIgn %q: %v", hex, err)
			}
			return mask&(1<<(sig-1)) != 0
		}
	}
	t.Fatalf("no SigIgn in /proc/%d/status", pid)
	return false
}

func TestRefusesFdThatIsNotASocket(t *testing.T) {
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(cleanEnv(), childEnv+"=setpid", "LISTEN_FDS=1")
	cmd.ExtraFiles = []*os.File{f}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 {
		t.Errorf("exit status = %d (%v), want 2", code, err)
	}
	if !strings.Contains(stderr.String(), "use fd 3") {
		t.Errorf("stderr = %q, want it to name fd 3", stderr.String())
	}
}

func TestRefusesToStartWithoutSockets(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name       string
		pid, fds   string // "" = unset
		wantReason string
	}{
		{"no LISTEN_PID", "", "1", "LISTEN_PID is not set"},
		{"LISTEN_PID of another process", "1", "1", "LISTEN_PID=1 but my pid is " + self},
		{"no LISTEN_FDS", self, "", `LISTEN_FDS=""`},
		{"zero LISTEN_FDS", self, "0", `LISTEN_FDS="0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setenv(t, "LISTEN_PID", tt.pid)
			setenv(t, "LISTEN_FDS", tt.fds)
			var stderr bytes.Buffer
			if code := run(nil, &stderr); code != 2 {
				t.Errorf("exit status = %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), tt.wantReason) {
				t.Errorf("stderr = %q, want it to say %q", stderr.String(), tt.wantReason)
			}
		})
	}
}

// setenv sets (or, for "", unsets) an environment variable for the test.
func setenv(t *testing.T, key, value string) {
	t.Setenv(key, value)
	if value == "" {
		os.Unsetenv(key)
	}
}

func TestFlags(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-help"}, &out); code != 0 {
		t.Errorf("-help exit status = %d, want 0", code)
	}
	for _, flag := range []string{"-ready-delay", "-exit-at-start", "-never-ready", "-crash-after-ready", "-crash-in-warm-up", "-ignore-term", "-graceful", "-shutdown-timeout"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("-help does not document %s", flag)
		}
	}
	out.Reset()
	if code := run([]string{"-ready-delay", "soon"}, &out); code != 2 {
		t.Errorf("-ready-delay soon: exit status = %d, want 2", code)
	}
	if code := run([]string{"extra"}, &out); code != 2 {
		t.Errorf("extra argument: exit status = %d, want 2", code)
	}
}
