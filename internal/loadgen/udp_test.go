//go:build linux

package loadgen

import (
	"context"
	"net"
	"testing"
	"time"
)

// udpEcho answers datagrams on a loopback socket; with dropEvery > 0 it
// ignores every dropEvery-th one.
func udpEcho(t *testing.T, dropEvery int) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for i := 1; ; i++ {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if dropEvery > 0 && i%dropEvery == 0 {
				continue
			}
			pc.WriteTo(buf[:n], addr)
		}
	}()
	return pc.LocalAddr().String()
}

func runUDP(t *testing.T, cfg UDPConfig) UDPResult {
	t.Helper()
	l, err := StartUDP(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l.Wait()
}

func TestUDPLoadCountsEveryDatagram(t *testing.T) {
	res := runUDP(t, UDPConfig{Target: udpEcho(t, 0), Clients: 3, Datagrams: 300})
	if res.Sent != 300 || res.Answered != 300 || res.Failed() != 0 || res.Latency.Count() != 300 {
		t.Errorf("%+v, want 300 sent and answered", res)
	}
}

func TestUDPLoadCountsLostDatagrams(t *testing.T) {
	res := runUDP(t, UDPConfig{Target: udpEcho(t, 10), Clients: 1, Datagrams: 30, Timeout: 50 * time.Millisecond})
	if res.Sent != 30 || res.Lost != 3 || res.Answered != 27 {
		t.Errorf("%+v, want 30 sent, 3 lost, 27 answered", res)
	}
}

func TestUDPLoadCountsRefused(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close() // nothing bound: ICMP port unreachable
	res := runUDP(t, UDPConfig{Target: addr, Datagrams: 5, Timeout: time.Second})
	if res.Sent != 5 || res.Refused == 0 || res.Answered != 0 || res.Failed() != 5 {
		t.Errorf("%+v, want 5 sent, none answered, refused counted", res)
	}
}

func TestUDPLoadNeedsABound(t *testing.T) {
	if _, err := StartUDP(context.Background(), UDPConfig{Target: "127.0.0.1:9"}); err == nil {
		t.Error("a UDP load without Datagrams or Duration started")
	}
}
