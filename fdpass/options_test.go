//go:build linux

package fdpass

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Options reads back what was set on the socket, as getsockopt of the same
// fd reads it, and the accept queue: its size and what waits in it.
func TestOptionsReadsWhatTheKernelHas(t *testing.T) {
	spec, err := ParseSpec("tcp://[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(spec, 17)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	set := func(level, opt, v int) {
		t.Helper()
		if err := control(l, func(fd int) error { return unix.SetsockoptInt(fd, level, opt, v) }); err != nil {
			t.Fatal(err)
		}
	}
	set(unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 5)
	set(unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 3)
	set(unix.SOL_SOCKET, unix.SO_RCVBUF, 65536)
	if err := control(l, func(fd int) error { return unix.SetNonblock(fd, true) }); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", l.Spec().Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x")) // TCP_DEFER_ACCEPT: queued only with data
	var o SocketOptions
	for range 100 { // the handshake completes on the loopback within a few ms
		if o, err = Options(l); err != nil {
			t.Fatal(err)
		}
		if *o.Queued == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := map[string]int{
		"SO_REUSEPORT": 1, "SO_REUSEADDR": 1, "IPV6_V6ONLY": sockopt(t, l, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY),
		"TCP_DEFER_ACCEPT": sockopt(t, l, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT),
		"TCP_FASTOPEN":     3, "SO_RCVBUF": sockopt(t, l, unix.SOL_SOCKET, unix.SO_RCVBUF),
		"SO_SNDBUF": sockopt(t, l, unix.SOL_SOCKET, unix.SO_SNDBUF), "O_NONBLOCK": 1, "backlog": 17, "queued": 1,
		"inode": int(l.Inode()),
	}
	got := map[string]int{
		"SO_REUSEPORT": b01(o.ReusePort), "SO_REUSEADDR": b01(o.ReuseAddr), "IPV6_V6ONLY": b01(*o.V6Only),
		"TCP_DEFER_ACCEPT": *o.DeferAccept, "TCP_FASTOPEN": *o.FastOpen, "SO_RCVBUF": o.RcvBuf, "SO_SNDBUF": o.SndBuf,
		"O_NONBLOCK": b01(o.NonBlock), "backlog": int(*o.Backlog), "queued": int(*o.Queued), "inode": int(o.Inode),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
	if *o.DeferAccept < 5 {
		t.Errorf("TCP_DEFER_ACCEPT = %d s, want at least the 5 s set", *o.DeferAccept)
	}
	if o.Network != "tcp" {
		t.Errorf("network %q, want tcp", o.Network)
	}
}

// A UDP socket on IPv4 has none of the TCP or IPv6 options, and its JSON
// leaves them out.
func TestOptionsOfAnIPv4UDPSocketOmitTCPAndIPv6Fields(t *testing.T) {
	l := listenLoopback(t, "udp://127.0.0.1:0")
	o, err := Options(l)
	if err != nil {
		t.Fatal(err)
	}
	if o.Network != "udp" || !o.ReusePort || o.ReuseAddr || o.NonBlock || o.V6Only != nil || o.DeferAccept != nil || o.Backlog != nil {
		t.Errorf("UDP socket options %+v", o)
	}
	b, _ := json.Marshal(o)
	for _, absent := range []string{"TCP_", "IPV6_V6ONLY", "backlog", "queued"} {
		if strings.Contains(string(b), absent) {
			t.Errorf("JSON %s has %s", b, absent)
		}
		if strings.Contains(o.String(), absent) {
			t.Errorf("text %q has %s", o, absent)
		}
	}
	if want := "SO_REUSEPORT=1 SO_REUSEADDR=0 SO_RCVBUF="; !strings.HasPrefix(o.String(), want) {
		t.Errorf("text %q, want it to begin with %q", o, want)
	}
}

func TestOptionsOfAClosedSocketFails(t *testing.T) {
	l := listenLoopback(t, "tcp://127.0.0.1:0")
	l.Close()
	if _, err := Options(l); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Options of a closed socket: %v, want an error that says it is closed", err)
	}
}
