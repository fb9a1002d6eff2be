//go:build linux

package systemd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

func listenNotify(t *testing.T) *NotifySocket {
	t.Helper()
	s, err := ListenNotify(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func readyCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), eventTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startChild starts the test binary as a child in mode, speaking to s, and
// tells s its pid.
func startChild(t *testing.T, s *NotifySocket, mode string) *exec.Cmd {
	t.Helper()
	cmd := childCommand(mode, s.Path())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.SetPID(cmd.Process.Pid)
	return cmd
}

func wait(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child %d: %v", cmd.Process.Pid, err)
	}
}

func TestListenNotifyCreatesPrivateSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "rpwrap")
	s, err := ListenNotify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^notify-[0-9a-f]{16}\.sock$`).MatchString(filepath.Base(s.Path())) || filepath.Dir(s.Path()) != dir {
		t.Errorf("Path() = %s, want %s/notify-<16 hex>.sock", s.Path(), dir)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("created directory: %v, %v; want mode 0700", di.Mode(), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close, stat %s = %v; want the file gone", s.Path(), err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

func TestListenNotifyRejectsTooLongPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	_, err := ListenNotify(dir)
	if err == nil || !strings.Contains(err.Error(), "shorter directory") {
		t.Fatalf("ListenNotify(%d-byte dir) = %v, want an error asking for a shorter directory", len(dir), err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ListenNotify left %s behind: %v", dir, err)
	}
}

func TestNotifySocketReadyFromChild(t *testing.T) {
	s := listenNotify(t)
	cmd := startChild(t, s, "ready")
	status, err := s.Ready(readyCtx(t))
	wait(t, cmd)
	if err != nil || status != "serving" {
		t.Fatalf("Ready() = %q, %v; want \"serving\", nil", status, err)
	}
	if status, err := s.Ready(t.Context()); err != nil || status != "serving" {
		t.Fatalf("second Ready() = %q, %v; want it to return at once with the same status", status, err)
	}
}

func TestNotifySocketReadyFromGrandchild(t *testing.T) {
	s := listenNotify(t)
	cmd := childCommand("fork", s.Path())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.SetPID(cmd.Process.Pid)
	status, err := s.Ready(readyCtx(t))
	stdin.Close() // the grandchild stayed alive until now
	wait(t, cmd)
	if err != nil || !strings.HasPrefix(status, "grandchild ") {
		t.Fatalf("Ready() = %q, %v; want the grandchild's status", status, err)
	}
	if pid, _ := strconv.Atoi(strings.TrimPrefix(status, "grandchild ")); pid == cmd.Process.Pid || pid <= 0 {
		t.Fatalf("status %q: the sender was not a separate descendant", status)
	}
}

// TestNotifySocketIgnoresForeignPID sends READY=1 from the test process, not
// the expected child, once before SetPID and once after: both are dropped,
// and the status Ready returns is the child's.
func TestNotifySocketIgnoresForeignPID(t *testing.T) {
	s := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", s.Path())
	if err := sendAll("READY=1\nSTATUS=foreign-early"); err != nil {
		t.Fatal(err)
	}
	cmd := childCommand("status-wait-ready", s.Path())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	s.SetPID(cmd.Process.Pid)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "sent\n" {
		t.Fatalf("child said %q, %v; want sent", line, err)
	}
	// Queued after the child's STATUS and before its READY=1.
	if err := sendAll("READY=1\nSTATUS=foreign"); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "go\n")
	status, err := s.Ready(readyCtx(t))
	if err != nil || status != "child-starting" {
		t.Fatalf("Ready() = %q, %v; want \"child-starting\": a foreign datagram was believed", status, err)
	}
	stdin.Close()
	wait(t, cmd)
}

// TestNotifySocketDropsMalformedDatagrams has the expected child send
// oversized, NUL, non-UTF-8 and unknown-key datagrams, each carrying a
// STATUS= or READY that must not count, and file descriptors that must be
// closed (the leak check in TestMain sees them otherwise).
func TestNotifySocketDropsMalformedDatagrams(t *testing.T) {
	s := listenNotify(t)
	cmd := startChild(t, s, "malformed")
	status, err := s.Ready(readyCtx(t))
	wait(t, cmd)
	want := strings.Repeat("g", notifyBufferMax-len("STATUS="))
	if err != nil || status != want {
		t.Fatalf("Ready() = %.40q (%d bytes), %v; want the 4096-byte datagram's status: a malformed datagram was believed", status, len(status), err)
	}
}

func TestNotifySocketReadyNeedsPID(t *testing.T) {
	s := listenNotify(t)
	if _, err := s.Ready(t.Context()); !errors.Is(err, ErrNoPID) {
		t.Fatalf("Ready() before SetPID = %v, want ErrNoPID", err)
	}
}

func TestNotifySocketReadyHonoursContext(t *testing.T) {
	s := listenNotify(t)
	s.SetPID(os.Getppid()) // a pid that sends nothing here
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { _, err := s.Ready(ctx); errc <- err }()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Ready() = %v, want context.Canceled", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Ready did not return after its context was cancelled")
	}
}

func TestNotifySocketReadyReturnsOnClose(t *testing.T) {
	s := listenNotify(t)
	s.SetPID(os.Getppid())
	errc := make(chan error, 1)
	go func() { _, err := s.Ready(t.Context()); errc <- err }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Ready() = %v, want ErrClosed", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Ready did not return after Close")
	}
}

// TestNotifySocketWithSystemdNotify runs systemd-notify(1) from a shell, as a
// script server would. As root it sends with its parent's (the shell's) pid,
// and it waits for its BARRIER=1 fd to be closed: a clean exit shows the
// barrier was answered.
func TestNotifySocketWithSystemdNotify(t *testing.T) {
	testutil.RequireRoot(t)
	bin, err := exec.LookPath("systemd-notify")
	if err != nil {
		t.Skip("systemd-notify is not installed (Debian package systemd)")
	}
	s := listenNotify(t)
	cmd := exec.Command("/bin/sh", "-c", bin+` --status="via systemd-notify" --ready`)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+s.Path())
	out, err := startAndSetPID(t, s, cmd)
	status, rerr := s.Ready(readyCtx(t))
	if werr := cmd.Wait(); werr != nil || err != nil {
		t.Fatalf("systemd-notify: %v %v: %s", werr, err, out)
	}
	if rerr != nil || status != "via systemd-notify" {
		t.Fatalf("Ready() = %q, %v; want \"via systemd-notify\"", status, rerr)
	}
}

func startAndSetPID(t *testing.T, s *NotifySocket, cmd *exec.Cmd) (*strings.Builder, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return &out, err
	}
	s.SetPID(cmd.Process.Pid)
	return &out, nil
}
