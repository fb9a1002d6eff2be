//go:build linux

package main

import (
	"context"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Under systemd (Type=notify-reload) rpwrap says READY=1 when the first
// generation serves, RELOADING=1 with MONOTONIC_USEC at a restart, READY=1
// when it is done, and STOPPING=1 when it stops.
func TestNotifiesSystemdInOrder(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify"}) // consumed READY=1
	before := monotonicUsec(t)
	w.restart()
	after := monotonicUsec(t)
	code := w.stop(syscall.SIGTERM)
	if code != 0 {
		t.Errorf("exit status %d after SIGTERM, want the server's 0", code)
	}
	var seen []string
	for len(w.notify.msgs) > 0 {
		m := <-w.notify.msgs
		for _, line := range strings.Split(m, "\n") {
			key, val, _ := strings.Cut(line, "=")
			switch key {
			case "READY", "RELOADING", "STOPPING":
				seen = append(seen, line)
			case "MONOTONIC_USEC":
				usec, err := strconv.ParseInt(val, 10, 64)
				if err != nil || usec < before || usec > after {
					t.Errorf("MONOTONIC_USEC=%s not within [%d, %d]", val, before, after)
				}
				seen = append(seen, "MONOTONIC_USEC")
			}
		}
	}
	want := "RELOADING=1 MONOTONIC_USEC READY=1 STOPPING=1"
	if got := strings.Join(seen, " "); got != want {
		t.Errorf("notifications after the first READY=1: %q, want %q", got, want)
	}
}

func monotonicUsec(t *testing.T) int64 {
	var ts syscall.Timespec
	if err := clockGettime(&ts); err != nil {
		t.Fatal(err)
	}
	return ts.Sec*1e6 + ts.Nsec/1e3
}

// A predecessor that ignores the stop signal is killed after
// --drain-timeout, and a long request it accepted before the flip finishes
// within that time.
func TestDrainTimeoutKillsStubbornPredecessorAfterInflightRequests(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--drain-timeout", "3s"}, "-ignore-term")
	old := w.activePid()
	slow := make(chan error, 1)
	conn, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() { slow <- getOn(conn, "/slow?ms=1000") }()
	waitUntil(t, "the slow request to be accepted", func() bool { return w.status().Generations[0].Queued[0] == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := w.restart()
	if err := <-slow; err != nil {
		t.Errorf("in-flight request on the old generation: %v", err)
	}
	if r.Drain < 3*time.Second {
		t.Errorf("drain took %s: the predecessor ignoring TERM was not given --drain-timeout", r.Drain)
	}
	if !processGone(old) {
		t.Errorf("predecessor %d survived the drain timeout", old)
	}
	_ = ctx
}

// getOn sends GET path on conn and checks for a complete 200 response.
func getOn(conn net.Conn, path string) error {
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	var got []byte
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 200") {
		return &net.OpError{Op: "read", Err: errShort(string(got))}
	}
	return nil
}

type errShort string

func (e errShort) Error() string { return "incomplete response: " + strconv.Quote(string(e)) }
