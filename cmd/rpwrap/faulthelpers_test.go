//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
)

// onlyGeneration is a /bin/sh script that runs the demo server with args
// in generation n and the plain demo server in every other generation. The
// shell execs, so the server keeps the pid that LISTEN_PID names.
func onlyGeneration(n int, args ...string) string {
	return `if [ "$RPWRAP_GENERATION" -eq ` + itoa(n) + ` ]; then exec "$0" serve-demo ` + strings.Join(args, " ") +
		`; else exec "$0" serve-demo; fi`
}

// fromGeneration is onlyGeneration for generation n and every later one.
func fromGeneration(n int, args ...string) string {
	return `if [ "$RPWRAP_GENERATION" -ge ` + itoa(n) + ` ]; then exec "$0" serve-demo ` + strings.Join(args, " ") +
		`; else exec "$0" serve-demo; fi`
}

// waitOutput waits until rpwrap's output contains s.
func (w *wrapper) waitOutput(s string) {
	w.t.Helper()
	waitUntil(w.t, fmt.Sprintf("rpwrap to log %q", s), func() bool { return strings.Contains(w.out.String(), s) })
}

// waitExit waits for rpwrap to exit on its own and returns its status.
func (w *wrapper) waitExit(within time.Duration) int {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(within):
		w.t.Fatalf("rpwrap did not exit within %s; output:\n%s", within, w.out.String())
	}
	return w.cmd.ProcessState.ExitCode()
}

// logIndex is the position in rpwrap's output of the first log line that
// contains every one of parts, or -1.
func (w *wrapper) logIndex(parts ...string) int {
	pos := 0
	for _, line := range strings.SplitAfter(w.out.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return pos
		}
		pos += len(line)
	}
	return -1
}

// requireOrder fails unless rpwrap logged a line with every part of first
// before a line with every part of second.
func (w *wrapper) requireOrder(first, second []string) {
	w.t.Helper()
	i, j := w.logIndex(first...), w.logIndex(second...)
	if i < 0 || j < 0 || i >= j {
		w.t.Errorf("want a log line with %q (at %d) before one with %q (at %d); output:\n%s", first, i, second, j, w.out.String())
	}
}

// bounded sends n requests to addr and returns what they got.
func bounded(t *testing.T, addr string, n int) loadgen.Result {
	t.Helper()
	res, err := loadgen.Run(context.Background(), loadgen.Config{Target: addr, Clients: 4, Requests: n, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// requireAllGone fails unless every pid is gone (or a zombie) within the
// polling bound: a process the kernel is still killing has no event to wait
// on.
func requireAllGone(t *testing.T, pids ...int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("processes %v to be gone", pids), func() bool {
		for _, pid := range pids {
			if !processGone(pid) {
				return false
			}
		}
		return true
	})
}

// listeningOn lists the inodes of TCP sockets listening on addr in this
// network namespace (/proc/net/tcp, proc(5)).
func listeningOn(t *testing.T, addr string) []string {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	ip := ap.IP.To4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	var inodes []string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 10 && f[1] == want && f[3] == "0A" {
			inodes = append(inodes, f[9])
		}
	}
	return inodes
}

// publicCopy copies the test binary to a directory any user may read, so
// that processes running as nobody can execute it.
func publicCopy(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rpwbin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(testBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, "rpwrap")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// readPid reads the pid a server's script wrote to path.
func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

// countFDs is the number of descriptors pid holds.
func countFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
