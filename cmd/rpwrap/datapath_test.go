//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/rpwrap/rpwrap/supervisor"
)

// somaxconn is net.core.somaxconn, which caps every backlog.
func somaxconn(t *testing.T) uint32 {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return uint32(n)
}

// get makes one request on a connection of its own.
func get(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if b, err := io.ReadAll(c); err != nil || !strings.Contains(string(b), "200 OK") {
		t.Fatalf("request: %v %q", err, b)
	}
}

// ctl status shows per generation what the data path did: the slot it
// holds, its queue against the backlog, the connections its server holds
// open, and (eBPF) how many the selector gave it, by route; under cBPF it
// says what cannot be counted. In a network namespace of its own, so that
// the counts are exact.
func TestCtlStatusShowsTheDataPathPerGeneration(t *testing.T) {
	if rerunInNetNS(t) {
		return
	}
	const requests, idle = 20, 3
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--selector", sel, "--ready", "notify", "--backlog", "100"})
			for range requests {
				get(t, w.addr)
			}
			for range idle { // accepted, and held open by the server until it has a request
				c, err := net.Dial("tcp", w.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			var g supervisor.GenerationStatus
			waitUntil(t, "the idle connections accepted", func() bool {
				g = w.status().Generations[0]
				return len(g.Established) == 1 && g.Established[0] == idle
			})
			st := w.status()
			if want := min(100, somaxconn(t)); len(g.Backlog) != 1 || g.Backlog[0] != want || len(g.Slots) != 1 || g.Slots[0] != 0 {
				t.Errorf("backlog %v slots %v, want [%d] and [0]", g.Backlog, g.Slots, want)
			}
			if st.Kernel == nil {
				t.Error("no kernel counters")
			}
			var out strings.Builder
			st.Write(&out)
			if sel == "cbpf" {
				if g.Selected != nil || !strings.Contains(st.CountersNote, "cannot be shown") || !strings.Contains(out.String(), "counters:  cbpf: ") {
					t.Errorf("cbpf: selected %v, note %q; want none and a note:\n%s", g.Selected, st.CountersNote, out.String())
				}
				return
			}
			if len(g.Selected) != 1 || g.Selected[0].Active != requests+idle || g.Selected[0].Steered() != requests+idle {
				t.Errorf("selected %+v, want %d on the active route", g.Selected, requests+idle)
			}
			want := fmt.Sprintf("  %s: slot 0, queue 0 of 100, %d established, selected %d (active %d, probe 0, scan 0), migrated in 0, stray 0\n",
				st.Listeners[0], idle, requests+idle, requests+idle)
			if !strings.Contains(out.String(), want) {
				t.Errorf("ctl status lacks %q:\n%s", want, out.String())
			}
		})
	}
}
