//go:build linux

package systemd

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// InheritNotify makes a NotifySocket of fd, the notify socket at path of a
// server that is ready already, passed on by rpwrap to itself across an
// in-place upgrade. pid is the server's (see SetPID); Ready returns at
// once. The NotifySocket owns fd from then on, on error too.
func InheritNotify(fd int, path string, pid int) (*NotifySocket, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inherited notify socket %s (fd %d): %w", path, fd, os.NewSyscallError("fcntl F_SETFD", err))
	}
	f := os.NewFile(uintptr(fd), path)
	c, err := net.FileConn(f) // a duplicate
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("inherited notify socket %s (fd %d): %w", path, fd, err)
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("inherited notify socket %s (fd %d) is not a unix socket", path, fd)
	}
	s := &NotifySocket{conn: conn, path: path, pid: pid, ready: make(chan struct{}), done: make(chan struct{}), isReady: true}
	close(s.ready)
	go s.readLoop()
	return s, nil
}

// File returns the socket's descriptor for passing it on across an
// in-place upgrade, without changing the socket.
func (s *NotifySocket) File() (int, error) {
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	err = rc.Control(func(d uintptr) { fd = int(d) })
	return fd, err
}

// Socket returns $NOTIFY_SOCKET as NewNotifier read it ("" when disabled),
// for the environment of rpwrap's own in-place upgrade: the new binary
// reads it again.
func (n *Notifier) Socket() string {
	if n == nil {
		return ""
	}
	return n.socket
}

// WatchdogEnv returns WATCHDOG_USEC and WATCHDOG_PID for rpwrap's own
// in-place upgrade, or nil without a watchdog.
func (n *Notifier) WatchdogEnv() []string {
	if n == nil || n.watchdog == 0 {
		return nil
	}
	return []string{fmt.Sprintf("WATCHDOG_USEC=%d", n.watchdog.Microseconds()), fmt.Sprintf("WATCHDOG_PID=%d", n.pid)}
}

// CloseKeepFile closes the socket and waits for its reader, leaving the
// file in place: the server's NOTIFY_SOCKET for the rpwrap that takes
// over after a failed take-over.
func (s *NotifySocket) CloseKeepFile() {
	s.closeOnce.Do(func() {
		s.conn.Close()
		<-s.done
	})
}
