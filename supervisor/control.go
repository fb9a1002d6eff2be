//go:build linux

package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The control protocol: the client sends one JSON Request on a line, the
// supervisor answers one JSON Response on a line and closes.

// Request is a control command.
type Request struct {
	Command string `json:"command"`          // "restart", "status", "sockets", "events", "promote", "abort" or "upgrade"
	Wait    bool   `json:"wait,omitempty"`   // restart: answer once the predecessor is drained, not at the flip
	Watch   string `json:"watch,omitempty"`  // restart: its --watch DURATION instead of rpwrap's
	Canary  string `json:"canary,omitempty"` // restart: its --canary PCT:DURATION,... instead of rpwrap's
	Binary  string `json:"binary,omitempty"` // upgrade: the binary to upgrade onto; "" for the one rpwrap was started from
}

// Response answers a Request. Error is set when the command failed; for a
// restart that was rolled back, Restart says why too.
type Response struct {
	OK      bool           `json:"ok"`
	Error   string         `json:"error,omitempty"`
	Restart *RestartResult `json:"restart,omitempty"`
	Status  *Status        `json:"status,omitempty"`
	Sockets *Sockets       `json:"sockets,omitempty"`
	Upgrade *UpgradeResult `json:"upgrade,omitempty"`
}

// maxRequest bounds a control request line.
const maxRequest = 4096

// ParseRequest decodes one control request line.
func ParseRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > maxRequest {
		return r, fmt.Errorf("control request longer than %d bytes", maxRequest)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("control request: %w", err)
	}
	switch r.Command {
	case "restart":
		_, err := r.restartOptions()
		return r, err
	case "status", "sockets", "events", "promote", "abort", "upgrade":
		return r, nil
	}
	return r, fmt.Errorf("control request: unknown command %q (want restart, status, sockets, events, promote, abort or upgrade)", r.Command)
}

type controlServer struct {
	l       *net.UnixListener
	path    string
	s       *Supervisor
	wg      sync.WaitGroup // serve, the accept loop
	clients connSet        // the clients being served
	busy    sync.WaitGroup // clients whose request has not reached the event loop or been answered (see pause)
}

// listenControl creates the control socket at path: mode 0600 in a
// directory that only rpwrap's user can write (CheckPrivateDir; created with
// mode 0700 if missing). It refuses to replace the socket of another rpwrap
// that still answers, and a file there that is not a socket.
func listenControl(path string, s *Supervisor) (*controlServer, error) {
	if err := CheckPrivateDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use by another rpwrap: give this one its own with --control PATH", path)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("control socket %s: a file that is not a socket is in the way (mode %v): remove it or give --control another PATH", path, fi.Mode())
	}
	os.Remove(path) // a stale socket of an rpwrap that is gone
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("create control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("create control socket: %w", err)
	}
	return &controlServer{l: l, path: path, s: s}, nil
}

// serve accepts clients until the socket is closed. Running out of file
// descriptors or memory does not end it: it waits and accepts again, as
// net/http does, so a restart refused for RLIMIT_NOFILE does not take
// `rpwrap ctl` down with it.
func (c *controlServer) serve() {
	var delay time.Duration
	for {
		conn, err := c.l.AcceptUnix()
		if err == nil {
			delay = 0
			c.busy.Add(1)
			settle := sync.OnceFunc(c.busy.Done)
			if !c.clients.serve(c.s, conn, func() { defer settle(); c.handle(conn, settle) }) {
				settle()
				return // wait has begun
			}
			continue
		}
		if !isTemporary(err) {
			return
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		time.Sleep(delay) // no event says that a descriptor was freed
	}
}

// isTemporary reports whether accept may succeed later: the process or the
// system ran out of descriptors or memory, or the client gave up.
func isTemporary(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// start serves clients on a goroutine of its own until close.
func (c *controlServer) start() {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.serve() }()
}

// close stops accepting and removes the socket file.
func (c *controlServer) close() {
	c.l.Close() // removes the socket file too
}

// wait ends the clients still connected and waits for their goroutines;
// call it once Run's quit channel is closed, so that a restart still
// waiting has been answered.
func (c *controlServer) wait() {
	c.clients.end(func(conn net.Conn) { conn.SetReadDeadline(time.Now()) }) // a client that never sends its request
	c.wg.Wait()
}

// handle serves one client, after checking with SO_PEERCRED that it runs as
// rpwrap's own user or as root. The request is read before a refusal is
// sent, so that the client's write does not fail (EPIPE) before it can
// read why it was refused.
func (c *controlServer) handle(conn *net.UnixConn, settle func()) {
	defer conn.Close()
	reply := func(r Response) { json.NewEncoder(conn).Encode(r) }
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(&limitReader{conn, maxRequest + 1}).ReadBytes('\n')
	if err := checkPeer(conn); err != nil {
		reply(Response{Error: err.Error()})
		return
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && len(line) == 0 {
		return
	}
	req, err := ParseRequest(line)
	if err != nil {
		reply(Response{Error: err.Error()})
		return
	}
	conn.SetReadDeadline(time.Time{})
	switch req.Command {
	case "status":
		st := c.s.Status()
		reply(Response{OK: true, Status: &st})
	case "sockets":
		v := c.s.Sockets()
		reply(Response{OK: true, Sockets: &v})
	case "events":
		c.streamEvents(conn)
	case "promote", "abort":
		cmd := c.s.Promote
		if req.Command == "abort" {
			cmd = c.s.Abort
		}
		if err := cmd(context.Background()); err != nil {
			reply(Response{Error: err.Error()})
			return
		}
		reply(Response{OK: true})
	case "upgrade":
		r, err := c.s.Upgrade(context.Background(), req.Binary, conn, settle)
		resp := Response{OK: err == nil, Upgrade: &r}
		if err != nil {
			resp.Error = err.Error()
		}
		reply(resp)
	case "restart":
		opts, _ := req.restartOptions() // checked by ParseRequest
		r, err := c.s.requestFrom(context.Background(), restartRequest{wait: opts.Wait, opts: &opts, conn: conn}, settle)
		resp := Response{OK: err == nil, Restart: &r}
		if err != nil {
			resp.Error = err.Error()
		}
		reply(resp)
	}
}

// checkPeer refuses a peer that is neither root nor rpwrap's own user.
func checkPeer(conn *net.UnixConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("read peer credentials: %w", err)
	}
	if credErr != nil {
		return fmt.Errorf("read peer credentials: %w", credErr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("permission denied: uid %d may not control this rpwrap (only uid %d and root)", cred.Uid, os.Geteuid())
	}
	return nil
}

type limitReader struct {
	c *net.UnixConn
	n int
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("control request too long")
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.c.Read(p)
	l.n -= n
	return n, err
}

// Call sends one request to the control socket at path and returns the
// response. It waits for the answer until ctx is done: a restart takes as
// long as the server needs to get ready, after the restarts queued before
// it. It fails, naming the path, when no rpwrap listens there, when ctx is
// done first (the error wraps ctx.Err(); the request, if sent, is still
// carried out), and at once when the rpwrap that listens there is stopped
// (SIGSTOP), which it checks every second.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
			return Response{}, fmt.Errorf("no rpwrap answers on %s (is it running? is --control the same?): %w", path, err)
		case errors.Is(err, syscall.EAGAIN):
			return Response{}, fmt.Errorf("rpwrap at %s accepts no more connections (its queue is full): is it stopped (kill -STOP) or hung? %w", path, err)
		}
		return Response{}, fmt.Errorf("connect to rpwrap at %s: %w", path, err)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	pid := peerPid(conn)
	if err := stoppedError(path, pid); err != nil {
		return Response{}, err
	}
	var stopped error
	done, watched := make(chan struct{}), make(chan struct{})
	go func() { // the only writer of stopped, read after watched closes
		defer close(watched)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				conn.SetDeadline(time.Now())
				return
			case <-tick.C:
				if stopped = stoppedError(path, pid); stopped != nil {
					conn.SetDeadline(time.Now())
					return
				}
			}
		}
	}()
	resp, err := exchange(conn, req)
	close(done)
	<-watched
	switch {
	case err == nil:
		return resp, nil
	case stopped != nil:
		return Response{}, stopped
	case ctx.Err() != nil:
		return Response{}, fmt.Errorf("no answer from rpwrap at %s (pid %d) in time: %w", path, pid, ctx.Err())
	}
	return Response{}, fmt.Errorf("talk to rpwrap at %s (pid %d): %w", path, pid, err)
}

// restartOptions parses a restart request's watch and canary.
func (r Request) restartOptions() (RestartOptions, error) {
	o := RestartOptions{Wait: r.Wait}
	if r.Watch != "" {
		d, err := time.ParseDuration(r.Watch)
		if err != nil || d < 0 {
			return o, fmt.Errorf("control request: watch %q: want a duration with a unit: 0, 5s, 2m", r.Watch)
		}
		o.Watch = &d
	}
	stages, err := ParseCanary(r.Canary)
	if err != nil {
		return o, fmt.Errorf("control request: %w", err)
	}
	o.Canary = stages
	return o, nil
}
