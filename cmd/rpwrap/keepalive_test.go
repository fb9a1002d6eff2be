//go:build linux

package main

import (
	"context"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
)

// Keep-alive clients move to the new generation without a lost request:
// the old one answers each connection's next request with
// "Connection: close" (the demo server's graceful stop, as a careful server
// does), and the client reconnects, to the successor.
func TestRestartUnderKeepAliveLoadLosesNoRequest(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--selector", "ebpf", "--ready", "notify"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load, err := loadgen.Start(ctx, loadgen.Config{
		Target: w.addr, Path: "/", Clients: 4, KeepAlive: true,
		Duration: 5 * time.Minute, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitRequests(t, load, 200)
	for i := 0; i < 5; i++ {
		w.restart()
		waitRequests(t, load, load.Progress().Sent+200)
	}
	load.Stop()
	res := load.Wait()
	if res.Closed != 0 {
		t.Errorf("%d keep-alive requests hit a connection the old server closed", res.Closed)
	}
	requireNoLoss(t, res, 2000)
}
