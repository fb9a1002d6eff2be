//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// deferAcceptSeconds is the TCP_DEFER_ACCEPT of deferAcceptServer's
// listener: Apache's `AcceptFilter http data` sets 30 s on Linux.
const deferAcceptSeconds = 30

// deferAcceptServer behaves as Apache does with its default AcceptFilter
// on Linux and a long download in flight: it sets TCP_DEFER_ACCEPT on the
// socket at fd 3 (a connection enters the accept queue only with its first
// bytes), serves HTTP on it (one request a connection), sends READY=1, and
// on SIGTERM closes its listener but runs on for LINGER (args[0]) before it
// exits 0, answering what it had accepted.
func deferAcceptServer(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "fault server defer-accept: want LINGER")
		return 2
	}
	linger, err := time.ParseDuration(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "fault server defer-accept: %v\n", err)
		return 2
	}
	f := os.NewFile(3, "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err == nil {
		err = setDeferAccept(ln.(*net.TCPListener), deferAcceptSeconds)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fault server defer-accept: %v\n", err)
		return 2
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "defer-accept server gen="+os.Getenv("RPWRAP_GENERATION")+" pid="+itoa(os.Getpid()))
	})}
	srv.SetKeepAlivesEnabled(false)
	go srv.Serve(ln)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	daemon.SdNotify(false, daemon.SdNotifyReady)
	<-sigs
	ln.Close()
	fmt.Fprintf(os.Stderr, "defer-accept server pid=%d: SIGTERM, closed my listener, running on for %s\n", os.Getpid(), linger)
	time.Sleep(linger) // the long download that keeps Apache's old generation up
	return 0
}

func setDeferAccept(ln *net.TCPListener, secs int) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt TCP_DEFER_ACCEPT", serr)
}

// foreignListener is another program on rpwrap's port: it listens on
// args[0] with SO_REUSEPORT (so that it may share the port with rpwrap's
// wildcard socket, under the same uid), writes "listening" to stdout, and
// answers every HTTP request with 200 "foreign" until it is killed.
func foreignListener(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "fault server foreign-listener: want ADDR")
		return 2
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "fault server foreign-listener: %v\n", err)
		return 2
	}
	fmt.Println("listening")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "foreign") })}
	srv.SetKeepAlivesEnabled(false)
	srv.Serve(ln)
	return 1
}
