//go:build linux

package fdpass

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The accepted side of a connection is among the established sockets of
// the listener's port; the dialling side (another local port) is not.
func TestEstablishedInodesHasTheAcceptedConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("listener address %v is not TCP", ln.Addr())
	}
	port := uint16(addr.Port)
	got, err := EstablishedInodes(port)
	if err != nil {
		t.Fatal(err)
	}
	if accepted, dialled := inodeOf(t, s), inodeOf(t, c); !got[accepted] || got[dialled] || len(got) != 1 {
		t.Errorf("established on port %d: %v; want only the accepted side %d (not the dialling side %d)", port, got, accepted, dialled)
	}
}

func inodeOf(t *testing.T, c net.Conn) uint64 {
	t.Helper()
	tc, ok := c.(*net.TCPConn)
	if !ok {
		t.Fatalf("%T is not a TCP connection", c)
	}
	f, err := tc.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", link, err)
	}
	return n
}
