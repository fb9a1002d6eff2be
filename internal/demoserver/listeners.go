//go:build linux

package demoserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
)

// activatedListeners returns the listening sockets passed to this process
// as sd_listen_fds(3) describes, after checking LISTEN_PID and LISTEN_FDS
// itself so that the operator learns which of the two was wrong. It fails
// when either is missing or wrong, or when a passed fd is not a listening
// stream socket; it then closes whatever it had opened.
//
// net.FileListener dups each fd and puts the file description (shared with
// rpwrap's own copy of the socket) in O_NONBLOCK mode. That is harmless here:
// rpwrap is a Go program and uses its copies non-blocking too, and the
// mode does not change which process the kernel hands connections to.
func activatedListeners() (_ []net.Listener, err error) {
	if err := checkListenEnv(); err != nil {
		return nil, err
	}
	files := activation.Files(true) // also unsets LISTEN_*, so no child inherits them
	defer closeFiles(files)
	lns := make([]net.Listener, 0, len(files))
	defer func() {
		if err != nil {
			closeListeners(lns)
		}
	}()
	for i, f := range files {
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("use fd %d (%s) as a listening socket: %w", 3+i, f.Name(), err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// checkListenEnv explains why activation.Files would return nothing.
func checkListenEnv() error {
	pid, ok := os.LookupEnv("LISTEN_PID")
	if !ok {
		return errors.New("no sockets passed: LISTEN_PID is not set; run me under rpwrap (rpwrap demo) or systemd socket activation, I never bind a port myself")
	}
	if strings.TrimSpace(pid) != strconv.Itoa(os.Getpid()) {
		return fmt.Errorf("sockets are not meant for me: LISTEN_PID=%s but my pid is %d; exec me directly, not through a shell or a fork", pid, os.Getpid())
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return fmt.Errorf("no sockets passed: LISTEN_FDS=%q, want a count of 1 or more", os.Getenv("LISTEN_FDS"))
	}
	return nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

func closeListeners(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

func listenerAddrs(lns []net.Listener) string {
	addrs := make([]string, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr().String()
	}
	return strings.Join(addrs, ", ")
}
