//go:build linux

package supervisor

import (
	"net"
	"sync"
)

// connSet is a set of live connections and of the goroutines serving
// them, ended together when their owner stops: the control socket's
// clients, the connections rpwrap relays.
type connSet struct {
	mu    sync.Mutex
	conns map[net.Conn]bool
	ended bool
	wg    sync.WaitGroup
}

// add puts c in the set; it fails once the set has ended.
func (cs *connSet) add(c net.Conn) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.ended {
		return false
	}
	if cs.conns == nil {
		cs.conns = map[net.Conn]bool{}
	}
	cs.conns[c] = true
	return true
}

// remove takes c out of the set.
func (cs *connSet) remove(c net.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.conns, c)
}

// serve runs fn for c on a goroutine of its own, which end waits for, and
// takes c out of the set when fn returns. It fails, closing c, once the set
// has ended.
func (cs *connSet) serve(s *Supervisor, c net.Conn, fn func()) bool {
	if !cs.add(c) {
		c.Close()
		return false
	}
	cs.wg.Add(1)
	s.goSafe(func() {
		defer cs.wg.Done()
		defer cs.remove(c)
		fn()
	})
	return true
}

// end refuses new connections, calls stop on each one in the set (close
// it, or give it a deadline), and waits for their goroutines.
func (cs *connSet) end(stop func(net.Conn)) {
	cs.mu.Lock()
	cs.ended = true
	for c := range cs.conns {
		stop(c)
	}
	cs.mu.Unlock()
	cs.wg.Wait()
}
