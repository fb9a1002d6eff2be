//go:build linux

package fdpass

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// LookupConn tells a connection waiting in the accept queue (inode 0), an
// accepted one (the inode of the accepted socket), one the server closed
// (inode 0, no longer established) and one that does not exist (ENOENT:
// not the listener the kernel answers with instead), for IPv4 and IPv6.
func TestLookupConnFollowsAConnectionThroughItsLife(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			l, err := Listen(mustSpec(t, addr), 16)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			server := l.Spec().Addr
			c, err := net.Dial("tcp", server.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			client := netip.MustParseAddrPort(c.LocalAddr().String())

			got, err := LookupConn(server, client)
			if err != nil || got.Inode != 0 || got.State != TCPEstablished {
				t.Fatalf("queued: %+v, %v; want established with inode 0", got, err)
			}
			fd, _, err := acceptRaw(t, l)
			if err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			unix.Fstat(fd, &st)
			if got, err = LookupConn(server, client); err != nil || got.Inode != st.Ino {
				t.Fatalf("accepted: %+v, %v; want inode %d", got, err, st.Ino)
			}
			unix.Close(fd)
			time.Sleep(10 * time.Millisecond) // the FIN reaches the client
			if got, err = LookupConn(server, client); err != nil && !errors.Is(err, syscall.ENOENT) || err == nil && (got.Inode != 0 || got.State == TCPEstablished) {
				t.Fatalf("closed by the server: %+v, %v; want not established with inode 0, or gone", got, err)
			}
			never := netip.AddrPortFrom(client.Addr(), 1)
			if got, err := LookupConn(server, never); !errors.Is(err, syscall.ENOENT) {
				t.Fatalf("a connection that never existed: %+v, %v; want ENOENT", got, err)
			}
		})
	}
}

func mustSpec(t *testing.T, s string) Spec {
	t.Helper()
	spec, err := ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func acceptRaw(t *testing.T, l *Listener) (int, unix.Sockaddr, error) {
	t.Helper()
	var nfd int
	var sa unix.Sockaddr
	var aerr error
	err := control(l, func(fd int) error {
		nfd, sa, aerr = unix.Accept4(fd, unix.SOCK_CLOEXEC)
		return aerr
	})
	return nfd, sa, err
}
