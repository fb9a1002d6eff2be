//go:build linux

package examples

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/supervisor"
)

// dnsCounts counts DNS queries over UDP: every one sent is answered or
// failed.
type dnsCounts struct {
	sent, answered, failed atomic.Int64
	mu                     sync.Mutex
	errs                   []string
}

func (d *dnsCounts) query(c net.Conn) {
	d.sent.Add(1)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if err := dnsExchange(c, false); err != nil {
		d.failed.Add(1)
		d.mu.Lock()
		if len(d.errs) < 5 {
			d.errs = append(d.errs, err.Error())
		}
		d.mu.Unlock()
		return
	}
	d.answered.Add(1)
}

// dnsLoad queries addr until stop from 8 clients that keep one socket each
// (long-lived flows, which stay with their generation) and 4 that open a
// socket per query (a new flow each time, which goes to the newest).
func dnsLoad(t *testing.T, addr string, stop <-chan struct{}) (*dnsCounts, *sync.WaitGroup) {
	d := &dnsCounts{}
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			var c net.Conn
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c == nil || i >= 8 {
					var err error
					if c, err = net.Dial("udp", addr); err != nil {
						t.Error(err)
						return
					}
					defer c.Close()
				}
				d.query(c)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return d, &wg
}

// dnsmasq answers every query of a load of long-lived and one-query UDP
// flows across 10 restarts: the long flows stay with the generation that
// answered them first until they are moved, and dnsmasq, which exits at
// once on SIGTERM, gets it only once its flows are gone and its receive
// queue is empty.
func TestDnsmasqAnswersEveryQueryAcrossRestarts(t *testing.T) {
	requireMatrixServer(t, dnsmasq)
	port := freePorts(t, 1)[0]
	tcp, udp := fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("udp://127.0.0.1:%d", port)
	dir := workDir(t)
	argv, _ := dnsmasqSetup(t, dir, []string{tcp})
	args := append([]string{"--selector", "ebpf", "--ready", "accept", "--listen", tcp, "--listen", udp,
		"--drain-timeout", "10s", "--udp-flow-idle", "300ms"}, dnsmasq.flags...)
	w := startRpwrap(t, dir, nil, append(append(args, "--"), argv...)...)
	stop := make(chan struct{})
	d, wg := dnsLoad(t, fmt.Sprintf("127.0.0.1:%d", port), stop)
	time.Sleep(300 * time.Millisecond)
	for i := range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
		resp, err := supervisor.Call(ctx, w.control, supervisor.Request{Command: "restart"})
		cancel()
		if err != nil || !resp.OK {
			t.Fatalf("restart %d: %v %s", i+1, err, resp.Error)
		}
		time.Sleep(300 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("dnsmasq, 10 restarts: %d queries sent, %d answered, %d unanswered %v", d.sent.Load(), d.answered.Load(), d.failed.Load(), d.errs)
	if d.failed.Load() != 0 || d.answered.Load() != d.sent.Load() || d.sent.Load() < 1000 {
		t.Errorf("%d of %d queries unanswered (want 0 of at least 1000)", d.failed.Load(), d.sent.Load())
	}
}
