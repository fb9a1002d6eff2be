//go:build linux

package bpf

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

func TestMain(m *testing.M) {
	// The runtime opens its netpoller (an epoll and an eventfd) on first
	// use and keeps it; open it before the leak check's first snapshot.
	if r, w, err := os.Pipe(); err == nil {
		r.SetReadDeadline(time.Now())
		r.Close()
		w.Close()
	}
	os.Exit(testutil.VerifyNoLeaks(m))
}

var flavours = []Flavour{EBPF, CBPF}

// eventTimeout bounds every wait for an event on a busy two-core machine.
const eventTimeout = 20 * time.Second

func reuseportConfig() *net.ListenConfig {
	lc := &net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	lc.SetMultipathTCP(false)
	return lc
}

// listenTCP opens a plain TCP (not MPTCP) SO_REUSEPORT listener.
func listenTCP(t testing.TB, network, addr string) *net.TCPListener {
	t.Helper()
	l, err := reuseportConfig().Listen(context.Background(), network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*net.TCPListener)
}

func listenUDP(t testing.TB, network, addr string) *net.UDPConn {
	t.Helper()
	c, err := reuseportConfig().ListenPacket(context.Background(), network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

// newSelector creates a selector of flavour f on first and closes it at
// the end of the test.
func newSelector(t testing.TB, first syscall.Conn, f Flavour) Selector {
	t.Helper()
	s, err := New(first, f)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Flavour(); got != f {
		t.Fatalf("New(%s) gave flavour %s", f, got)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func add(t testing.TB, s Selector, c syscall.Conn) Slot {
	t.Helper()
	slot, err := s.Add(c)
	if err != nil {
		t.Fatal(err)
	}
	return slot
}

func activate(t testing.TB, s Selector, slot Slot) {
	t.Helper()
	if err := s.Activate(slot); err != nil {
		t.Fatal(err)
	}
}

// serve accepts on l until it closes: it counts every connection, writes
// id to it and closes it. The test's cleanup waits for it to end.
func serve(t testing.TB, l net.Listener, id byte) *atomic.Int64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Write([]byte{id})
			c.Close()
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return &n
}

// outcome is what a client saw: the id byte of the listener that accepted
// it, or reset, or another failure.
type outcome struct {
	id    byte
	reset bool
	err   error
}

// finish reads the id byte the server wrote, then closes c with an RST
// (SO_LINGER 0) so that no TIME_WAIT holds the port.
func finish(c net.Conn) outcome {
	defer func() {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	c.SetReadDeadline(time.Now().Add(eventTimeout))
	var b [1]byte
	_, err := c.Read(b[:])
	switch {
	case err == nil:
		return outcome{id: b[0]}
	case errors.Is(err, syscall.ECONNRESET):
		return outcome{reset: true}
	}
	return outcome{err: err}
}

// dial connects once to addr from local (nil: any port) and finishes.
func dial(addr string, local *net.TCPAddr) outcome {
	d := net.Dialer{Timeout: eventTimeout, LocalAddr: local}
	if local != nil {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		}
	}
	d.SetMultipathTCP(false)
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return outcome{err: err}
	}
	return finish(c)
}

// dialMany makes n connections to addr, eight at a time, and counts the
// listener ids they reached. Any failure fails the test.
func dialMany(t testing.TB, addr string, n int) map[byte]int {
	t.Helper()
	const parallel = 8
	var mu sync.Mutex
	counts := map[byte]int{}
	var failures []error
	var next atomic.Int64
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				o := dial(addr, nil)
				mu.Lock()
				if o.err != nil || o.reset {
					failures = append(failures, fmt.Errorf("reset=%v: %v", o.reset, o.err))
				} else {
					counts[o.id]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d connections to %s failed, first: %v", len(failures), n, addr, failures[0])
	}
	return counts
}

// probePort returns a local port outside ip_local_port_range, so that no
// ordinary connection picks it, free on addr when called.
func probePort(t testing.TB, ip string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	low, err := strconv.Atoi(strings.Fields(string(b))[0])
	if err != nil || low < 2048 {
		t.Fatalf("cannot find a port below ip_local_port_range %q", b)
	}
	for range 100 {
		port := 1024 + rand.IntN(low-1024)
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port below ip_local_port_range after 100 tries")
	return 0
}

// acceptQueue returns the number of connections waiting in the accept
// queue of a TCP listener (tcpi_unacked of TCP_INFO on a listener).
func acceptQueue(t testing.TB, l syscall.Conn) int {
	t.Helper()
	var n int
	err := withFD(l, func(fd int) error {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			n = int(info.Unacked)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond until it holds or eventTimeout passes: for kernel
// states that give no event (an accept queue's depth, a freed BPF object).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(eventTimeout); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", eventTimeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling: no event for this state
	}
}

// inNetNS runs fn on a thread of its own in a new network namespace with
// loopback up, so that sysctls and sockets fn creates touch no other test.
// Sockets must be created by fn's goroutine itself; the thread ends with it.
func inNetNS(t testing.TB, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unshareNet(); err != nil {
			done <- err
			return
		}
		defer func() { done <- nil }()
		fn()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if t.Failed() { // fn failed on its own goroutine
		t.FailNow()
	}
}

func unshareNet() error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare network namespace: %w", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}
