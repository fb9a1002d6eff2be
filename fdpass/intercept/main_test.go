//go:build linux

package intercept

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
	"golang.org/x/sys/unix"
)

// The test binary re-executes itself: as a shim ("shim": InstallAndSend on
// fd 3, then exec of the rest of argv) and as a small Go server ("server").
const (
	childEnv = "RPWRAP_INTERCEPT_TEST_CHILD" // shim, notmain, server, docker-seccomp, docker
	nextEnv  = "RPWRAP_INTERCEPT_TEST_NEXT"  // the value of childEnv after the shim's exec
)

func init() {
	if os.Getenv(childEnv) != "" {
		runtime.LockOSThread() // the shim installs its filter on the main thread and execs there
	}
}

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "shim":
		os.Exit(runShim())
	case "notmain":
		os.Exit(runNotMain())
	case "server":
		os.Exit(runServer(os.Args[1:]))
	case "docker-seccomp":
		os.Exit(runDockerLike())
	case "docker":
		if err := checkDockerLike(); err != nil {
			fmt.Fprintln(os.Stderr, "docker-like environment:", err)
			os.Exit(1)
		}
		pidfdGetfdDenied = true
	}
	warmNetpoller()
	os.Exit(testutil.VerifyNoLeaks(m))
}

// warmNetpoller makes the runtime open its epoll fd and eventfd now, so the
// leak check does not count them: the tests' first pollable file would.
func warmNetpoller() {
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
}

// runShim does what rpwrap's exec shim does.
func runShim() int {
	if err := InstallAndSend(3); err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		return 111
	}
	env := withoutVar(os.Environ(), childEnv)
	if next := os.Getenv(nextEnv); next != "" {
		env = append(env, childEnv+"="+next)
	}
	argv := os.Args[1:]
	if argv[0] == "self" {
		argv[0] = "/proc/self/exe"
	}
	err := syscall.Exec(argv[0], argv, env)
	fmt.Fprintln(os.Stderr, "shim: exec:", err)
	return 127
}

// runNotMain calls InstallAndSend from a thread that is not the main one.
func runNotMain() int {
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // the main goroutine holds the main thread: this is another
		done <- InstallAndSend(3)
	}()
	if err := <-done; !errors.Is(err, ErrNotMainThread) {
		fmt.Println("unexpected:", err)
		return 1
	}
	fmt.Println("ErrNotMainThread")
	return 0
}

func withoutVar(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func errnoName(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) && unix.ErrnoName(e) != "" {
		return unix.ErrnoName(e)
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}
