//go:build linux

package demoserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
)

// activatedListeners returns the sockets passed to this process as
// sd_listen_fds(3) describes, after checking LISTEN_PID and LISTEN_FDS
// itself so that the operator learns which of the two was wrong: listening
// stream sockets as listeners, datagram sockets as packet conns. It fails
// when either variable is missing or wrong, or when a passed fd is neither
// a listening stream socket nor a datagram socket; it then closes whatever
// it had opened.
//
// net.FileListener dups each fd and puts the file description (shared with
// rpwrap's own copy of the socket) in O_NONBLOCK mode. That is harmless here:
// rpwrap is a Go program and uses its copies non-blocking too, and the
// mode does not change which process the kernel hands connections to.
func activatedListeners() (_ sockets, err error) {
	if err := checkListenEnv(); err != nil {
		return sockets{}, err
	}
	files := activation.Files(true) // also unsets LISTEN_*, so no child inherits them
	defer closeFiles(files)
	var socks sockets
	defer func() {
		if err != nil {
			socks.close()
		}
	}()
	for i, f := range files {
		if typ, err := socketType(f); err == nil && typ == syscall.SOCK_DGRAM {
			pc, err := net.FilePacketConn(f)
			if err != nil {
				return sockets{}, fmt.Errorf("use fd %d (%s) as a datagram socket: %w", 3+i, f.Name(), err)
			}
			socks.pcs = append(socks.pcs, pc)
			continue
		}
		ln, err := net.FileListener(f)
		if err != nil {
			return sockets{}, fmt.Errorf("use fd %d (%s) as a listening socket: %w", 3+i, f.Name(), err)
		}
		socks.lns = append(socks.lns, ln)
	}
	return socks, nil
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
