//go:build linux

package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// rawServer accepts connections on 127.0.0.1 and hands each to serve in
// its own goroutine; it closes everything at the end of the test.
func rawServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.1: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// readRequest reads one request head from r, and reports whether it came.
func readRequest(r *bufio.Reader) bool {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return false
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return true
		}
	}
}

// httpServer is a net/http server on 127.0.0.1 running handler, which
// counts the connections it accepts.
func httpServer(t *testing.T, handler http.HandlerFunc) (addr string, conns *countConns) {
	t.Helper()
	srv := httptest.NewUnstartedServer(handler)
	conns = &countConns{}
	srv.Config.ConnState = conns.track
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), conns
}

type countConns struct {
	mu  sync.Mutex
	new int
}

func (c *countConns) track(_ net.Conn, s http.ConnState) {
	if s == http.StateNew {
		c.mu.Lock()
		c.new++
		c.mu.Unlock()
	}
}

func (c *countConns) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.new
}

func okHandler(w http.ResponseWriter, r *http.Request) {
	w.Write([]byte("hello\n"))
}
