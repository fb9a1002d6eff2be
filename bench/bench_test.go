//go:build linux

package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/testutil"
)

func TestMain(m *testing.M) {
	fdpass.RunShim() // the plain strategies start the demo server through this binary
	os.Exit(testutil.VerifyNoLeaks(m))
}

// The quick run, as `go run ./bench -quick` does it, every strategy in
// every scenario, and on a UDP socket healthy: the bench counts every
// request and datagram exactly once; it sees the failures of a naive
// stop-start with a stuck predecessor, of a shared socket whose successor
// accepts and crashes, and of stop-start on UDP (the controls: the bench
// can fail), and none through rpwrap with either selector; every restart to a
// faulty successor fails; rpwrap's timings fit the bench's clock; its
// outputs are written and readable.
func TestQuickRunCountsEveryRequestAndRpwrapLosesNone(t *testing.T) {
	testutil.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, cleanup, err := rpwrapBinary(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	dir := t.TempDir()
	var stdout, stderr strings.Builder
	start := time.Now()
	code := run([]string{"-quick", "-rpwrap", bin, "-out", dir}, &stdout, &stderr)
	t.Logf("quick run: %s, exit %d\n%s", time.Since(start).Round(time.Second), code, stdout.String())
	if code != 0 {
		t.Fatalf("bench -quick exited %d:\n%s", code, stderr.String())
	}
	var rep report
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil {
		t.Fatal(err)
	}
	if want := len(cells(bin, options{quick: true})); len(rep.Rows) != want || len(rep.Failures) > 0 {
		t.Fatalf("%d rows, failures %q; want %d rows, none failed", len(rep.Rows), rep.Failures, want)
	}
	failed := map[string]int64{}
	for _, r := range rep.Rows {
		name := r.Strategy + " " + r.Scenario
		if r.Load == udpEcho.Name {
			name += " " + r.Load
		}
		failed[name] = r.Failed
		if r.Sent != r.OK+r.Failed || r.Failed != r.Refused+r.Reset+r.Timeout+r.ShortRead+r.Closed+r.BadStatus+r.Other+r.Unsent {
			t.Errorf("%s: sent %d != ok %d + failed %d by kind", name, r.Sent, r.OK, r.Failed)
		}
		faulty := r.Scenario == "crash-after-accept" || r.Scenario == "bad-config"
		if r.Restarts != 1 || faulty != (len(r.RestartErrors) == 1) {
			t.Errorf("%s: %d restarts, errors %q; want 1 restart, failed only with a faulty successor", name, r.Restarts, r.RestartErrors)
		}
		if strings.HasPrefix(r.Strategy, "rpwrap-") {
			if r.Failed != 0 || r.OK == 0 || r.Wrapper == nil {
				t.Errorf("%s: %d of %d failed (%v), wrapper cost %v; want 0 failed and rpwrap's cost read", name, r.Failed, r.Sent, r.Errors, r.Wrapper)
			}
			// Whether rpwrap's timings fit the bench's own clock is a figure
			// of the run (results.json, the table), compared within a
			// millisecond: on a loaded machine the two processes read
			// their clocks far enough apart to miss that, so the test asks
			// only that rpwrap reported the restart.
			if c := r.Clock; c == nil || c.Checked != 1 {
				t.Errorf("%s: rpwrap's timings against the bench's clock: %+v; want the restart reported", name, c)
			} else if c.Consistent != 1 {
				t.Logf("%s: rpwrap's timings and the bench's clock differ by more than the slack on this run: %+v", name, c)
			}
		}
	}
	for _, control := range []string{"stop-start stuck", "shared-socket crash-after-accept", "stop-start healthy udp-echo"} {
		if failed[control] == 0 {
			t.Errorf("%s: 0 failed; want some (the control)", control)
		}
	}
	for _, st := range strategies(bin, true) {
		if _, ok := failed[st.Name()+" healthy "+udpEcho.Name]; !ok {
			t.Errorf("no %s healthy %s row in the quick run", st.Name(), udpEcho.Name)
		}
	}
	for _, name := range []string{"timeline-stop-start.svg", "timeline-shared-socket.svg", "timeline-rpwrap-ebpf.svg", "compare-crash-after-accept.svg"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}
}

// wrk's summary, as wrk 4.1 prints it, gives every count.
func TestParseWrkReadsSocketErrors(t *testing.T) {
	out := []byte(`Running 6s test @ http://127.0.0.1:4000/
  2 threads and 8 connections
  48702 requests in 6.00s, 5.57MB read
  Socket errors: connect 0, read 9, write 14, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:   8117.02
Transfer/sec:    950.38KB
`)
	var r wrkRow
	parseWrk(out, &r)
	want := wrkRow{Requests: 48702, Connect: 0, Read: 9, Write: 14, Timeout: 2, Non2xx: 3, RPS: 8117.02}
	if r != want {
		t.Errorf("parseWrk = %+v, want %+v", r, want)
	}
}

func TestListenerAddrStripsNameAndScheme(t *testing.T) {
	for in, want := range map[string]string{
		"http=tcp://127.0.0.1:41234": "127.0.0.1:41234",
		"tcp://127.0.0.1:80":         "127.0.0.1:80",
		"[::1]:8080":                 "[::1]:8080",
	} {
		if got := listenerAddr(in); got != want {
			t.Errorf("listenerAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// Each server's rows alternate its own mechanisms with rpwrap's, and
// -only picks a whole name, a server or a selector.
func TestRealStrategiesAlternateAndOnlySelects(t *testing.T) {
	var names []string
	for _, st := range realStrategies("rpwrap", nginxServer) {
		names = append(names, st.Name())
	}
	want := []string{"nginx reload (HUP)", "nginx rpwrap-ebpf", "nginx upgrade (USR2+WINCH+QUIT)", "nginx rpwrap-cbpf", "nginx stop+start"}
	if strings.Join(names, "|") != strings.Join(want, "|") {
		t.Errorf("nginx rows %q, want %q", names, want)
	}
	st := rpwrapReal{srv: apacheServer, selector: "ebpf"}
	for only, want := range map[string]bool{"": true, "apache": true, "rpwrap-ebpf": true, "apache rpwrap-ebpf": true, "nginx": false, "rpwrap-cbpf": false} {
		if got := selected(only, st); got != want {
			t.Errorf("selected(%q, %s) = %v, want %v", only, st.Name(), got, want)
		}
	}
}

// The real servers' configurations are examples/' with the bench's
// address, paths and header written in, and each server accepts its own.
func TestRealConfigsComeFromExamples(t *testing.T) {
	check := map[string][]string{"apache": {"-t", "-f"}, "nginx": {"-t", "-c"}, "haproxy": {"-c", "-f"}}
	for _, srv := range realServers {
		t.Run(srv.Name, func(t *testing.T) {
			dir := t.TempDir()
			s := &site{srv: srv, dir: dir, addr: "127.0.0.1:18080", listen: "127.0.0.1:18080", backend: "127.0.0.1:18081",
				conf: filepath.Join(dir, srv.Comm+".conf"), pidFile: filepath.Join(dir, "apache2-${RPWRAP_GENERATION}.pid")}
			if err := s.writeConfig(7, false); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(s.conf)
			if err != nil {
				t.Fatal(err)
			}
			text := string(b)
			wants := []string{configHeader, "127.0.0.1:18080"}
			if srv.Name != "haproxy" { // its configuration has no paths
				wants = append(wants, dir)
			}
			for _, want := range wants {
				if !strings.Contains(text, want) {
					t.Errorf("configuration lacks %q:\n%s", want, text)
				}
			}
			if strings.Contains(text, "${APACHE_") || strings.Contains(text, "/var/www/html") || strings.Contains(text, "127.0.0.1:8081") {
				t.Errorf("configuration keeps an example's setting:\n%s", text)
			}
			if _, err := os.Stat(srv.Sbin); err != nil {
				testutil.SkipOrFail(t, srv.Sbin+" not installed (apt-get install apache2 nginx haproxy): cannot check the configuration")
			}
			if err := os.MkdirAll(filepath.Join(dir, "htdocs"), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(srv.Sbin, append(check[srv.Name], s.conf)...)
			cmd.Env = append(append(os.Environ(), apacheEnv()...), "RPWRAP_GENERATION=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s refuses the configuration: %v\n%s\n%s", srv.Sbin, err, out, text)
			}
		})
	}
}
