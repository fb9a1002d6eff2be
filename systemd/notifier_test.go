//go:build linux

package systemd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// eventTimeout bounds every wait for a datagram; generous for a busy machine.
const eventTimeout = 10 * time.Second

// listenManager binds a unixgram socket in a temporary directory, plays the
// service manager, and points NOTIFY_SOCKET at it.
func listenManager(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(eventTimeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, notifyBufferMax+1)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifierWithoutSocketIsDisabledNoOp(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "100000")
	n := NewNotifier()
	if n.Enabled() || n.WatchdogInterval() != 0 {
		t.Fatalf("Enabled() = %v, WatchdogInterval() = %v; want false, 0", n.Enabled(), n.WatchdogInterval())
	}
	for name, err := range map[string]error{"Ready": n.Ready(), "Reloading": n.Reloading(), "Stopping": n.Stopping(), "Status": n.Status("x")} {
		if err != nil {
			t.Errorf("%s() = %v, want nil", name, err)
		}
	}
	n.Watchdog(t.Context())
	var nilN *Notifier
	if nilN.Enabled() || nilN.Ready() != nil {
		t.Fatal("a nil *Notifier must be disabled")
	}
}

func TestNewNotifierUnsetsEnvironment(t *testing.T) {
	listenManager(t)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := NewNotifier()
	if !n.Enabled() {
		t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
	}
	for _, v := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		if _, ok := os.LookupEnv(v); ok {
			t.Errorf("%s still set after NewNotifier: children would inherit it", v)
		}
	}
}

func TestNotifierReadySendsMainPID(t *testing.T) {
	conn := listenManager(t)
	if err := NewNotifier().Ready(); err != nil {
		t.Fatal(err)
	}
	want := "READY=1\nMAINPID=" + strconv.Itoa(os.Getpid())
	if got := receive(t, conn); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestNotifierReloadingSendsMonotonicUsec(t *testing.T) {
	conn := listenManager(t)
	n := NewNotifier()
	before := monotonicUsec(t)
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	after := monotonicUsec(t)
	fields := ParseNotify([]byte(receive(t, conn)))
	if len(fields) != 2 || fields["RELOADING"] != "1" {
		t.Fatalf("got %v, want RELOADING=1 and MONOTONIC_USEC only", fields)
	}
	usec, err := strconv.ParseInt(fields["MONOTONIC_USEC"], 10, 64)
	if err != nil || usec < before || usec > after {
		t.Fatalf("MONOTONIC_USEC=%q, want a CLOCK_MONOTONIC µs value in [%d, %d]", fields["MONOTONIC_USEC"], before, after)
	}
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

func TestNotifierStoppingSendsStopping(t *testing.T) {
	conn := listenManager(t)
	if err := NewNotifier().Stopping(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, conn); got != "STOPPING=1" {
		t.Fatalf("got %q, want STOPPING=1", got)
	}
}

func TestNotifierStatusIsOneValidLine(t *testing.T) {
	conn := listenManager(t)
	n := NewNotifier()
	cases := []struct{ format, arg, want string }{
		{"generation %s serving", "2", "STATUS=generation 2 serving"},
		{"%s", "line one\nline two\r\nthree\x00", "STATUS=line one line two three "},
		{"%s", "bad \xff byte", "STATUS=bad \uFFFD byte"},
	}
	for _, c := range cases {
		if err := n.Status(c.format, c.arg); err != nil {
			t.Fatal(err)
		}
		if got := receive(t, conn); got != c.want {
			t.Errorf("Status(%q, %q) sent %q, want %q", c.format, c.arg, got, c.want)
		}
	}
	if err := n.Status("%s", strings.Repeat("é", maxStatusLen)); err != nil {
		t.Fatal(err)
	}
	got := strings.TrimPrefix(receive(t, conn), "STATUS=")
	if len(got) > maxStatusLen || !utf8.ValidString(got) || len(got) < maxStatusLen-1 {
		t.Fatalf("long status cut to %d bytes (valid UTF-8: %v), want %d or %d valid bytes", len(got), utf8.ValidString(got), maxStatusLen-1, maxStatusLen)
	}
}

func TestNotifierSendsToAbstractSocket(t *testing.T) {
	var b [8]byte
	rand.Read(b[:])
	name := "@rpwrap-test-" + hex.EncodeToString(b[:])
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	if err := NewNotifier().Stopping(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, conn); got != "STOPPING=1" {
		t.Fatalf("got %q, want STOPPING=1", got)
	}
}

func TestNotifierReportsMissingManager(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gone.sock")
	t.Setenv("NOTIFY_SOCKET", path)
	err := NewNotifier().Ready()
	if err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET="+path) || !strings.Contains(err.Error(), `"READY=1"`) {
		t.Fatalf("Ready() = %v, want an error naming READY=1 and %s", err, path)
	}
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if err := NewNotifier().Stopping(); err == nil || !strings.Contains(err.Error(), "only absolute paths") {
		t.Fatalf("Stopping() to a vsock address = %v, want an unsupported-address error", err)
	}
}

func TestNotifierWatchdogPingsAtHalfInterval(t *testing.T) {
	conn := listenManager(t)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := NewNotifier()
	if got := n.WatchdogInterval(); got != 100*time.Millisecond {
		t.Fatalf("WatchdogInterval() = %v, want 100ms", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n.Watchdog(ctx)
	for i := range 3 {
		if got := receive(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("ping %d: got %q, want WATCHDOG=1", i, got)
		}
	}
}

func TestNotifierWatchdogStopsWithContext(t *testing.T) {
	conn := listenManager(t)
	t.Setenv("WATCHDOG_USEC", "20000")
	n := NewNotifier()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { n.watchdogLoop(ctx); close(done) }()
	if got := receive(t, conn); got != "WATCHDOG=1" {
		t.Fatalf("got %q, want WATCHDOG=1", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(eventTimeout):
		t.Fatal("watchdog loop still running after its context was cancelled")
	}
}

func TestNotifierWatchdogIgnoresOtherPID(t *testing.T) {
	listenManager(t)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getppid()))
	if got := NewNotifier().WatchdogInterval(); got != 0 {
		t.Fatalf("WatchdogInterval() = %v with WATCHDOG_PID of another process, want 0", got)
	}
	t.Setenv("WATCHDOG_USEC", "soon")
	t.Setenv("WATCHDOG_PID", "")
	if got := NewNotifier().WatchdogInterval(); got != 0 {
		t.Fatalf("WatchdogInterval() = %v with a malformed WATCHDOG_USEC, want 0", got)
	}
}
