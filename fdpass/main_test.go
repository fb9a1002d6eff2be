//go:build linux

package fdpass

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
	"golang.org/x/sys/unix"
)

// roleEnv makes the re-executed test binary play a child's part.
const roleEnv = "RPWRAP_TEST_ROLE"

func TestMain(m *testing.M) {
	RunShim()
	if role, ok := os.LookupEnv(roleEnv); ok {
		os.Exit(runRole(role))
	}
	startPoller()
	os.Exit(testutil.VerifyNoLeaks(m))
}

// startPoller makes the Go runtime open its netpoller (an epoll and an
// eventfd that live as long as the process) before the leak check's first
// snapshot, so they do not count as leaked by the first test to use it.
func startPoller() {
	r, w, err := os.Pipe()
	if err == nil {
		r.Close()
		w.Close()
	}
}

func runRole(role string) int {
	switch role {
	case "server":
		return serverRole()
	case "holder":
		return holderRole()
	case "adopt":
		return adoptRole()
	case "eacces":
		return eaccesRole()
	}
	fmt.Fprintf(os.Stderr, "unknown test role %q\n", role)
	return 2
}

// childCommand re-executes the test binary in role, running no test.
func childCommand(role string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, roleEnv+"="+role)...)
	cmd.Stderr = os.Stderr
	return cmd
}

// holderRole binds 127.0.0.1:0 without SO_REUSEPORT, listens, prints the
// port and holds the socket until stdin closes.
func holderRole() int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	}
	if err == nil {
		err = unix.Listen(fd, 1)
	}
	sa, err2 := unix.Getsockname(fd)
	if err != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "holder:", err, err2)
		return 1
	}
	fmt.Println(sa.(*unix.SockaddrInet4).Port)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// startHolder starts a holderRole child and returns its port; the child
// exits at the end of the test.
func startHolder(t *testing.T) (port int, pid int) {
	cmd := childCommand("holder")
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
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("holder child: %v", err)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("read holder's port: %v", err)
	}
	if port, err = strconv.Atoi(strings.TrimSpace(line)); err != nil {
		t.Fatalf("holder printed %q", line)
	}
	return port, cmd.Process.Pid
}

// eaccesRole drops CAP_NET_BIND_SERVICE on a locked thread inside a fresh
// network namespace (ip_unprivileged_port_start back at its default, 1024)
// and tries to listen on port 80 there. It prints whether the error matches
// EACCES, then the message.
func eaccesRole() int {
	runtime.LockOSThread() // never unlocked: the thread dies with the process
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		fmt.Fprintln(os.Stderr, "unshare:", err)
		return 1
	}
	if err := dropCapability(unix.CAP_NET_BIND_SERVICE); err != nil {
		fmt.Fprintln(os.Stderr, "drop capability:", err)
		return 1
	}
	spec, err := ParseSpec(":80")
	if err == nil {
		var l *Listener
		if l, err = Listen(spec, 0); err == nil {
			l.Close()
		}
	}
	fmt.Println(errorsIsEACCES(err))
	fmt.Println(err)
	return 0
}

func errorsIsEACCES(err error) bool { return errors.Is(err, syscall.EACCES) }

// dropCapability clears capability c from this thread's effective set.
func dropCapability(c int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[c/32].Effective &^= 1 << (c % 32)
	return unix.Capset(&hdr, &data[0])
}

// adoptResult is what adoptRole reports on stdout.
type adoptResult struct {
	Err       string
	Names     []string
	Specs     []string
	Inodes    []uint64
	EnvLeft   []string
	CloseExec []bool
}

// adoptRole runs FromSystemd in a process the shim started with LISTEN_*.
func adoptRole() int {
	ls, err := FromSystemd()
	var res adoptResult
	if err != nil {
		res.Err = err.Error()
	}
	for _, l := range ls {
		flags, _ := unix.FcntlInt(l.File().Fd(), unix.F_GETFD, 0)
		res.Names = append(res.Names, l.Spec().Name)
		res.Specs = append(res.Specs, l.Spec().String())
		res.Inodes = append(res.Inodes, l.Inode())
		res.CloseExec = append(res.CloseExec, flags&unix.FD_CLOEXEC != 0)
		l.Close()
	}
	for _, v := range listenVars {
		if _, ok := os.LookupEnv(v); ok {
			res.EnvLeft = append(res.EnvLeft, v)
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}
