//go:build linux

package systemd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Errors returned by NotifySocket.Ready.
var (
	// ErrNoPID is returned by Ready when SetPID has not been called.
	ErrNoPID = errors.New("the server's pid is unknown: call SetPID after starting the server and before Ready")
	// ErrClosed is returned by Ready when the socket was closed before READY=1.
	ErrClosed = net.ErrClosed
)

const (
	maxPending = 64  // datagrams kept from before SetPID
	maxSunPath = 107 // sizeof(sockaddr_un.sun_path) less the terminating NUL
	scmMaxFD   = 253 // SCM_MAX_FD: the most fds one datagram can carry
)

// NotifySocket is a NOTIFY_SOCKET for one server: a unixgram socket with
// SO_PASSCRED, bound to a file of mode 0600. A reader goroutine runs from
// ListenNotify to Close and believes a datagram only when its kernel-attached
// sender pid is the server's (SetPID) or a descendant of it, found by walking
// the parent chain in /proc/PID/stat when the datagram is read. So a server
// that forks before it sends READY=1 (or runs systemd-notify(1), which as
// root sends with its parent's pid) is heard; a sender that has already
// exited and been reaped when the datagram is read cannot be placed and is
// dropped. Datagrams from other processes, longer than 4096 bytes, holding a
// NUL byte or lacking credentials are dropped; any file descriptors that come
// with a datagram are closed at once, which also answers BARRIER=1. Of the
// fields (see ParseNotify) only READY=1 and STATUS= are used.
type NotifySocket struct {
	conn *net.UnixConn
	path string

	mu      sync.Mutex
	pid     int        // the server's pid; 0 until SetPID
	pending []received // datagrams read before SetPID
	status  string     // last STATUS= believed
	ready   chan struct{}
	isReady bool

	done      chan struct{} // closed when the reader goroutine returns
	readErr   error         // why the reader stopped, set before done closes
	closeOnce sync.Once
}

// received is a datagram that passed the size and content checks, with the
// sender's ancestry as it was when the datagram was read.
type received struct {
	chain  []int
	fields map[string]string
}

// ListenNotify creates dir (mode 0700) if it does not exist and binds a new
// socket dir/notify-<random hex>.sock with mode 0600 in it. dir should be
// private to rpwrap: the file exists with the process umask for the moment
// between bind(2) and chmod(2). It fails when the path would be longer than
// sockaddr_un allows (107 bytes), or with the wrapped error of the mkdir,
// socket, bind or chmod that failed; nothing is left behind on failure.
func ListenNotify(dir string) (_ *NotifySocket, err error) {
	name, err := randomName()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	if len(path) > maxSunPath {
		return nil, fmt.Errorf("create notify socket %s: the path is %d bytes, over the %d a unix socket address holds; use a shorter directory such as /run/rpwrap", path, len(path), maxSunPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create directory for notify socket: %w", err)
	}
	conn, err := listenPassCred(path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		conn.Close()
		os.Remove(path)
		return nil, fmt.Errorf("restrict notify socket %s to mode 0600: %w", path, err)
	}
	s := &NotifySocket{conn: conn, path: path, ready: make(chan struct{}), done: make(chan struct{})}
	go s.readLoop()
	return s, nil
}

func randomName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("name notify socket: %w", err)
	}
	return "notify-" + hex.EncodeToString(b[:]) + ".sock", nil
}

// listenPassCred binds a unixgram socket at path with SO_PASSCRED set before
// the bind, so no datagram can arrive without credentials.
func listenPassCred(path string) (*net.UnixConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		}); err != nil {
			return err
		}
		return os.NewSyscallError("setsockopt SO_PASSCRED", serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "unixgram", path)
	if err != nil {
		return nil, fmt.Errorf("create notify socket: %w", err)
	}
	return pc.(*net.UnixConn), nil
}

// Path returns the socket's file name, the value for the server's
// NOTIFY_SOCKET.
func (s *NotifySocket) Path() string { return s.path }

// SetPID names the server whose messages count: pid and its descendants.
// Datagrams that arrived before it are judged now, against the ancestry
// their senders had when they were read. Call it once, after starting the
// server; a later call replaces the pid for datagrams still to come.
func (s *NotifySocket) SetPID(pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pid = pid
	for _, r := range s.pending {
		s.applyLocked(r)
	}
	s.pending = nil
}

// Ready blocks until READY=1 has arrived from the server (or a descendant),
// and returns the last STATUS= value the server sent (possibly ""). It
// returns ErrNoPID at once when SetPID was not called, an error wrapping
// ctx.Err() when ctx is done first, and an error wrapping ErrClosed when the
// socket is closed first. Once READY=1 has arrived, Ready returns at once.
func (s *NotifySocket) Ready(ctx context.Context) (status string, err error) {
	s.mu.Lock()
	pid := s.pid
	s.mu.Unlock()
	if pid == 0 {
		return "", ErrNoPID
	}
	select {
	case <-s.ready:
		return s.lastStatus(), nil
	default:
	}
	select {
	case <-s.ready:
		return s.lastStatus(), nil
	case <-ctx.Done():
		return s.lastStatus(), fmt.Errorf("wait for READY=1 from pid %d on %s: %w", pid, s.path, ctx.Err())
	case <-s.done:
		if !errors.Is(s.readErr, net.ErrClosed) {
			return s.lastStatus(), fmt.Errorf("read READY=1 from pid %d on %s: %w", pid, s.path, s.readErr)
		}
		return s.lastStatus(), fmt.Errorf("wait for READY=1 from pid %d on %s: %w", pid, s.path, ErrClosed)
	}
}

func (s *NotifySocket) lastStatus() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Close closes the socket, waits for its reader to stop and removes the
// file. It returns the error of removing the file (other than its absence);
// calling it again returns nil.
func (s *NotifySocket) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.conn.Close()
		<-s.done
		if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("remove notify socket: %w", rerr)
		}
	})
	return err
}

func (s *NotifySocket) readLoop() {
	defer close(s.done)
	buf := make([]byte, notifyBufferMax)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*scmMaxFD))
	for {
		n, oobn, flags, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			s.readErr = err
			return
		}
		pid := senderPID(oob[:oobn]) // closes any passed fds
		if pid <= 0 || flags&unix.MSG_TRUNC != 0 || bytes.IndexByte(buf[:n], 0) >= 0 {
			continue
		}
		s.receive(received{chain: ancestry(pid), fields: ParseNotify(buf[:n])})
	}
}

// senderPID returns the pid from the SCM_CREDENTIALS message in oob (0 when
// there is none) and closes every file descriptor passed with SCM_RIGHTS.
func senderPID(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	pid := 0
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			continue
		}
		if cred, err := unix.ParseUnixCredentials(&m); err == nil {
			pid = int(cred.Pid)
		}
	}
	return pid
}

func (s *NotifySocket) receive(r received) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pid != 0 {
		s.applyLocked(r)
	} else if len(s.pending) < maxPending {
		s.pending = append(s.pending, r)
	}
}

// applyLocked takes the fields of a datagram whose sender is the server or
// its descendant.
func (s *NotifySocket) applyLocked(r received) {
	if !slices.Contains(r.chain, s.pid) {
		return
	}
	if st, ok := r.fields["STATUS"]; ok {
		s.status = st
	}
	if r.fields["READY"] == "1" && !s.isReady {
		s.isReady = true
		close(s.ready)
	}
}
