//go:build linux

package systemd

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
	"golang.org/x/sys/unix"
)

// childEnv names the variable that turns the test binary into a child that
// speaks sd_notify to $NOTIFY_SOCKET; its value is the child's mode.
const childEnv = "RPWRAP_SYSTEMD_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		if err := runChild(mode); err != nil {
			fmt.Fprintf(os.Stderr, "test child %s: %v\n", mode, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// Go opens its netpoller's epoll and eventfd at the first pollable fd and
	// keeps them; open them before the leak check's baseline.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	os.Exit(testutil.VerifyNoLeaks(m))
}

// runChild plays a server in the given mode.
func runChild(mode string) error {
	switch mode {
	case "ready": // STATUS, then READY with a new STATUS
		return sendAll("STATUS=starting", "READY=1\nSTATUS=serving")
	case "fork": // a grandchild sends READY=1; it stays alive until stdin closes
		cmd := childCommand("ready-then-wait", os.Getenv("NOTIFY_SOCKET"))
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd.Run()
	case "ready-then-wait":
		if err := sendAll(fmt.Sprintf("READY=1\nSTATUS=grandchild %d", os.Getpid())); err != nil {
			return err
		}
		_, err := bufio.NewReader(os.Stdin).ReadString('\n') // EOF when the test closes the pipe
		if err != nil && err.Error() != "EOF" {
			return err
		}
		return nil
	case "status-wait-ready": // STATUS, "sent" on stdout, a line on stdin, READY=1 alone
		if err := sendAll("STATUS=child-starting"); err != nil {
			return err
		}
		fmt.Println("sent")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return err
		}
		return sendAll("READY=1")
	case "malformed":
		return sendMalformed()
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// sendMalformed sends a 4096-byte status (the largest a manager reads), then
// datagrams that must each be dropped or change nothing, then READY=1 alone:
// the status Ready returns tells whether any of the bad ones was believed.
func sendMalformed() error {
	good := "STATUS=" + strings.Repeat("g", notifyBufferMax-len("STATUS="))
	oversized := "STATUS=bad-oversized\nREADY=1\nX="
	oversized += strings.Repeat("x", notifyBufferMax+1-len(oversized))
	bad := []string{
		good,
		oversized,
		"STATUS=bad-nul\nREADY=1\n\x00",
		"STATUS=bad-utf8\xff\nREADY=1\xfe",
		"status=bad-lowercase\nSTATUS\nSTATUS =bad-space\n=1\nREADY=yes\nFOO_BAR=1\nERRNO=5\nMAINPID=1\n\n\n",
		"",
	}
	if err := sendAll(bad...); err != nil {
		return err
	}
	if err := sendWithFDs("FDSTORE=1\nFDNAME=leak-check"); err != nil {
		return err
	}
	return sendAll("READY=1")
}

// sendAll sends each message as one datagram, as sd_notify(3) does.
func sendAll(msgs ...string) error {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: os.Getenv("NOTIFY_SOCKET"), Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, m := range msgs {
		if _, err := conn.Write([]byte(m)); err != nil {
			return fmt.Errorf("send %.40q: %w", m, err)
		}
	}
	return nil
}

// sendWithFDs sends msg with three file descriptors attached (SCM_RIGHTS).
func sendWithFDs(msg string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	to := &unix.SockaddrUnix{Name: os.Getenv("NOTIFY_SOCKET")}
	return unix.Sendmsg(fd, []byte(msg), unix.UnixRights(p[0], p[1], p[0]), to, 0)
}

// childCommand re-executes the test binary as a child in mode, with
// NOTIFY_SOCKET set to socket.
func childCommand(mode, socket string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "NOTIFY_SOCKET="+socket)
	cmd.Stderr = os.Stderr
	return cmd
}
