//go:build linux

package demoserver

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// sockets are what the server serves on: TCP listeners (HTTP) and UDP
// sockets (echo).
type sockets struct {
	lns []net.Listener
	pcs []net.PacketConn
}

func (s sockets) close() {
	closeListeners(s.lns)
	closePacketConns(s.pcs)
}

func (s sockets) String() string {
	addrs := listenerAddrs(s.lns)
	for _, pc := range s.pcs {
		if addrs != "" {
			addrs += ", "
		}
		addrs += "udp " + pc.LocalAddr().String()
	}
	return addrs
}

// socketType is SO_TYPE of f (SOCK_STREAM, SOCK_DGRAM), read without
// putting f in blocking mode as f.Fd() would.
func socketType(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var typ int
	var serr error
	if err := rc.Control(func(fd uintptr) { typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE) }); err != nil {
		return 0, err
	}
	return typ, serr
}

// echoer answers every datagram on its socket with the same bytes.
type echoer struct {
	pc   net.PacketConn
	done chan struct{}
}

// startEcho echoes on pc, waiting delay before each answer (a server slow
// to read), until stop.
func startEcho(pc net.PacketConn, delay time.Duration, tag []byte) *echoer {
	e := &echoer{pc: pc, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		buf := make([]byte, 64<<10)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if delay > 0 {
				time.Sleep(delay)
			}
			pc.WriteTo(append(buf[:n], tag...), addr) // a lost answer is the client's to count
		}
	}()
	return e
}

// udpTag is what -udp-tag appends to each echo: " gen=N".
func udpTag(o options, gen string) []byte {
	if !o.udpTag {
		return nil
	}
	return []byte(" gen=" + gen)
}

// linger goes on echoing for -udp-linger after a stop signal.
func linger(o options, echoers []*echoer, stderr io.Writer) {
	if o.udpLinger <= 0 || len(echoers) == 0 {
		return
	}
	fmt.Fprintf(stderr, "demo server pid=%d: stopping; echoing on for %v\n", os.Getpid(), o.udpLinger)
	time.Sleep(o.udpLinger)
}

// stop stops reading, answers the datagram in hand, and closes the socket:
// datagrams still queued on it are lost.
func (e *echoer) stop() {
	e.pc.SetReadDeadline(time.Now())
	<-e.done
	e.pc.Close()
}

func closePacketConns(pcs []net.PacketConn) {
	for _, pc := range pcs {
		pc.Close()
	}
}

// setBacklog calls listen(2) again on every TCP listener with backlog, as a
// server with a "ListenBacklog" setting of its own does on the socket it was
// given.
func setBacklog(lns []net.Listener, backlog int) error {
	for _, ln := range lns {
		tl, ok := ln.(*net.TCPListener)
		if !ok {
			continue
		}
		rc, err := tl.SyscallConn()
		if err != nil {
			return err
		}
		var lerr error
		if err := rc.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), backlog) }); err != nil {
			return err
		}
		if lerr != nil {
			return fmt.Errorf("listen(%s, %d): %w", ln.Addr(), backlog, os.NewSyscallError("listen", lerr))
		}
	}
	return nil
}
