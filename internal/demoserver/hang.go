//go:build linux

package demoserver

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// hang makes the server hang the way a stuck production server does, on
// SIGUSR2: it stops accepting, answers the connections it had already
// accepted, and then stops itself with SIGSTOP. New connections pile up in
// its accept queue, as in the case rpwrap's selector exists for, while no
// request that it had accepted is lost to the experiment itself.
type hang struct {
	hung   atomic.Bool
	active atomic.Int64  // connections accepted and not yet closed
	parked atomic.Int64  // Accept calls waiting at the gate
	gate   chan struct{} // never closed: Accept blocks on it once hung
	lns    []*gatedListener
}

func newHang() *hang { return &hang{gate: make(chan struct{})} }

// listener wraps ln so that it stops accepting once the server hangs.
func (h *hang) listener(ln net.Listener) net.Listener {
	l := &gatedListener{Listener: ln, h: h, closed: make(chan struct{})}
	h.lns = append(h.lns, l)
	return l
}

type gatedListener struct {
	net.Listener
	h      *hang
	once   sync.Once
	closed chan struct{}
}

// Accept counts every connection it returns as active before returning it,
// so the hang never stops the process with an accepted connection
// unanswered.
func (l *gatedListener) Accept() (net.Conn, error) {
	for {
		if l.h.hung.Load() {
			l.h.parked.Add(1)
			select {
			case <-l.h.gate:
			case <-l.closed:
				return nil, net.ErrClosed
			}
		}
		c, err := l.Listener.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() && l.h.hung.Load() {
				continue // kicked out of accept(2) by the hang
			}
			return nil, err
		}
		l.h.active.Add(1)
		return c, nil
	}
}

func (l *gatedListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// start hangs the server: once the connections in flight are done, the
// process stops itself.
func (h *hang) start() {
	h.hung.Store(true)
	for _, l := range h.lns {
		if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
			d.SetDeadline(time.Now()) // wake Accept so that it parks at the gate
		}
	}
	for h.parked.Load() < int64(len(h.lns)) || h.active.Load() > 0 {
		time.Sleep(time.Millisecond) // counters, no event to wait for
	}
	syscall.Kill(syscall.Getpid(), syscall.SIGSTOP)
}
