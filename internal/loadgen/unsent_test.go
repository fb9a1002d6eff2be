package loadgen

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"
)

// A server that holds every request: two clients can send only a few of
// the requests that fall due; the rest are counted Unsent, not left out,
// so the open loop's losses are not capped by its client count.
func TestOpenLoopCountsRequestsNoClientCouldSend(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		readRequest(bufio.NewReader(c)) // then hold the connection until the test ends
	})
	res := run(t, Config{Target: addr, Clients: 2, Rate: 100, Duration: time.Second, Timeout: 200 * time.Millisecond})
	if res.Sent != 100 || res.OK != 0 || res.Failed() != 100 {
		t.Errorf("sent %d, OK %d, failed %d; want every one of the 100 due requests failed", res.Sent, res.OK, res.Failed())
	}
	if res.Timeout == 0 || res.Unsent < 50 {
		t.Errorf("timeout %d, unsent %d; want some of each, most of them unsent", res.Timeout, res.Unsent)
	}
}

// Stopped while every client is stuck: the requests due until the stop
// that no client took are counted too.
func TestOpenLoopStopCountsRequestsDueAndNotTaken(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		readRequest(bufio.NewReader(c))
	})
	l, err := Start(context.Background(), Config{Target: addr, Clients: 1, Rate: 100, Duration: time.Minute, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // pacing: let requests fall due
	l.Stop()
	res := l.Wait()
	checkConsistent(t, res)
	due := int64(l.stoppedAt.Seconds()*100) + 1
	if res.Sent != due || res.OK != 0 || res.Unsent != due-res.Timeout {
		t.Errorf("sent %d, OK %d, timeout %d, unsent %d; want %d due, all failed", res.Sent, res.OK, res.Timeout, res.Unsent, due)
	}
}
