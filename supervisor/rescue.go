//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/fdpass"
)

// rescue saves the connections queued on the TCP sockets of g, a
// predecessor that no longer accepts, when the kernel cannot migrate them:
// with the classic-BPF selector (and net.ipv4.tcp_migrate_req=0) closing
// the socket would reset them. rpwrap accepts each one from its own copy of
// the socket and relays it to the serving generation, through a connection
// that the selector sends to the active socket. Only these few connections
// pass through rpwrap, and the server sees them come from the loopback
// address. It returns how many it relayed.
func (s *Supervisor) rescue(g *generation) int {
	n := 0
	for i, l := range g.listeners {
		n += s.rescueListener(g, i, l)
	}
	return n
}

// rescueListener relays what is queued on l, g's socket of group i, if it
// is a TCP socket, and returns how many connections it relayed.
func (s *Supervisor) rescueListener(g *generation, i int, l *fdpass.Listener) int {
	if l.Spec().Network != "tcp" {
		return 0
	}
	n := 0
	var target fmt.Stringer
	for {
		q, _, err := fdpass.QueueDepth(l)
		if err != nil || q == 0 {
			break
		}
		if target == nil { // only when there is something to relay: it costs two sock_diag dumps
			target = probeTarget(s.groups[i].spec.Addr, s.foreignAddrs(i))
		}
		c, err := acceptNow(l)
		if err != nil {
			s.genLog(g).Warn("rescue queued connection", "err", err)
			break
		}
		s.relays.start(s, c, target)
		n++
	}
	if n > 0 {
		s.genLog(g).Info("relayed the connections queued on its socket to the serving generation", "connections", n)
	}
	return n
}

// acceptNow accepts one connection from l without waiting: the socket is
// shared with the predecessor, whose blocking mode is its own, so the
// accept is bounded by SO_RCVTIMEO instead, which is put back right after
// (the predecessor may still accept from the socket).
func acceptNow(l *fdpass.Listener) (net.Conn, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var aerr error
	err = rc.Control(func(fd uintptr) {
		old, gerr := unix.GetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO)
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		if serr := unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); serr != nil || gerr != nil {
			aerr = errors.Join(serr, gerr) // a blocking accept could wait forever
			return
		}
		defer unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO, old)
		for {
			nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC)
			if aerr != unix.EINTR {
				return
			}
		}
	})
	if err == nil {
		err = aerr
	}
	if err != nil {
		return nil, os.NewSyscallError("accept4", err)
	}
	f := os.NewFile(uintptr(nfd), "rescued")
	defer f.Close()
	return net.FileConn(f)
}

// relays tracks the connections rpwrap relays, so that none outlives Run.
type relays struct{ connSet }

// start relays c to target on a goroutine of its own.
func (r *relays) start(s *Supervisor, c net.Conn, target fmt.Stringer) {
	r.serve(s, c, func() { relay(c, target, r) })
}

// closeAll ends every relay and waits for their goroutines.
func (r *relays) closeAll() { r.end(func(c net.Conn) { c.Close() }) }

// relay copies between c and a new connection to target until both
// directions are done.
func relay(c net.Conn, target fmt.Stringer, r *relays) {
	defer c.Close()
	var d net.Dialer
	d.SetMultipathTCP(false)
	d.Timeout = 5 * time.Second
	up, err := d.Dial("tcp", target.String())
	if err != nil {
		return
	}
	if !r.add(up) { // rpwrap is stopping
		up.Close()
		return
	}
	defer func() { up.Close(); r.remove(up) }()
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-done
}
