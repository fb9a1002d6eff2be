//go:build linux

package main

import (
	"context"
	"encoding/json"
	"os"
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

// The quick path on two rows of the stuck scenario: the bench counts every
// request exactly once, sees the failures of a naive stop-start (the
// control: the bench can fail), and sees none through rpwrap with the
// eBPF selector; its outputs are written and readable.
func TestStuckRowsCountEveryRequestAndRpwrapEBPFLosesNone(t *testing.T) {
	testutil.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin, cleanup, err := rpwrapBinary(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	p := plan{Restarts: 1, Steady: 200 * time.Millisecond, Gap: 200 * time.Millisecond}
	ls := loadShape{Name: "closed", Clients: 4}
	var rows []row
	for _, st := range []strategy{plain{bin: bin}, wrapped{bin: bin, selector: "ebpf"}} {
		r, err := runRow(ctx, st, scenarios[1], ls, p)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s stuck: %d sent, %d ok, %d failed (refused %d, reset %d, timeout %d)", r.Strategy, r.Sent, r.OK, r.Failed, r.Refused, r.Reset, r.Timeout)
		if r.Restarts != 1 || len(r.RestartErrors) > 0 {
			t.Errorf("%s: %d restarts, errors %q; want 1 restart, no error", r.Strategy, r.Restarts, r.RestartErrors)
		}
		if r.Sent != r.OK+r.Failed || r.Failed != r.Refused+r.Reset+r.Timeout+r.ShortRead+r.Closed+r.BadStatus+r.Other {
			t.Errorf("%s: sent %d != ok %d + failed %d by kind", r.Strategy, r.Sent, r.OK, r.Failed)
		}
		rows = append(rows, r)
	}
	if rows[0].Failed == 0 {
		t.Errorf("stop-start with a stuck predecessor: 0 of %d failed; want some (the control)", rows[0].Sent)
	}
	if rows[1].Failed != 0 || rows[1].OK == 0 || rows[1].Wrapper == nil {
		t.Errorf("rpwrap-ebpf stuck: %d of %d failed, wrapper cost %v; want 0 failed and rpwrap's cost read", rows[1].Failed, rows[1].Sent, rows[1].Wrapper)
	}
	checkOutputs(t, report{Machine: describeMachine(nil), Rows: rows})
}

func checkOutputs(t *testing.T, rep report) {
	dir := t.TempDir()
	if err := writeOutputs(dir, rep); err != nil {
		t.Fatal(err)
	}
	var back report
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err == nil {
		err = json.Unmarshal(b, &back)
	}
	if err != nil || len(back.Rows) != len(rep.Rows) {
		t.Errorf("results.json: %v, %d rows; want %d", err, len(back.Rows), len(rep.Rows))
	}
	for _, name := range []string{"timeline-stop-start.svg", "timeline-rpwrap-ebpf.svg", "compare-stuck.svg"} {
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
