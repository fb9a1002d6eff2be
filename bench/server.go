//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/systemd"
)

// server is one demo server process started by the bench itself (the
// strategies without rpwrap), on a socket the bench created and handed
// over through the exec shim.
type server struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
}

// startServer starts `rpwrap serve-demo args...` on l through the exec
// shim and returns once it has sent READY=1. The bench's copy of l is
// closed in every case: the server is the socket's only owner, as it would
// be without rpwrap. It fails when the server does not start or is not
// ready within readyTimeout; the process is then killed.
func startServer(ctx context.Context, bin string, args []string, l *fdpass.Listener, dir string, readyTimeout time.Duration) (*server, error) {
	defer l.Close()
	return startOn(ctx, bin, args, l, dir, readyTimeout)
}

// startOn is startServer without closing l: the shared-socket strategy
// keeps its one socket, as systemd keeps a socket unit's, and passes it to
// every generation. With l nil the server is passed no socket and binds
// its own (args say -bind). It fails as soon as the server exits before
// READY=1.
func startOn(ctx context.Context, bin string, args []string, l *fdpass.Listener, dir string, readyTimeout time.Duration) (*server, error) {
	ns, err := systemd.ListenNotify(dir)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	base := append(os.Environ(), "NOTIFY_SOCKET="+ns.Path())
	argv := append([]string{"rpwrap", "serve-demo"}, args...)
	cmd := &exec.Cmd{Path: bin, Args: argv, Env: base} // l == nil: the server binds its own socket (-bind)
	if l != nil {
		path, argv, env := fdpass.ShimCommand(bin, argv, base, []string{l.Spec().Name}, fdpass.ListenFDs)
		cmd = &exec.Cmd{Path: path, Args: argv, Env: env, ExtraFiles: []*os.File{l.File()}}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start demo server %s: %w", bin, err)
	}
	runtime.KeepAlive(l)
	s := &server{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	ns.SetPID(cmd.Process.Pid)
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel() // exited before READY=1: a failed start, no need to wait out the timeout
		case <-rctx.Done():
		}
	}()
	if _, err := ns.Ready(rctx); err != nil {
		if exited(s) {
			return nil, fmt.Errorf("start demo server: exited before it was ready (%v)", s.cmd.ProcessState)
		}
		s.kill()
		return nil, fmt.Errorf("start demo server: %w", err)
	}
	return s, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// exited tells whether the process has exited and been reaped.
func exited(s *server) bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace for the server to exit, then
// kills it. It returns once the process is reaped.
func (s *server) stop(grace time.Duration) {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(grace):
		s.kill()
	}
}

func (s *server) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}
