//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ownServer is an HTTP server of rpwrap's own (the health server, the
// metrics endpoint) on a TCP socket that is never passed to a server. Its
// socket is opened by New (close-on-exec, as every socket Go's net package
// makes) and closed by close, which Run calls last. A nil *ownServer
// serves nothing and closes as a no-op.
type ownServer struct {
	what string // "health server", "metrics endpoint"
	ln   net.Listener
	srv  *http.Server
	done chan struct{} // closed when Serve has returned; nil before start
}

// listenOwn opens the socket of the server what, asked for with flag;
// nil, nil when addr is "".
func listenOwn(what, flag, addr string) (*ownServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s (%s %s): %w: choose a free port for it, or stop what holds it (ss -ltnp)", what, flag, addr, err)
	}
	return &ownServer{what: what, ln: ln}, nil
}

// Addr is where the server listens, port 0 resolved.
func (h *ownServer) Addr() string { return h.ln.Addr().String() }

// start serves h with handler until close; lost says, in the log line of
// a server that stopped on its own, what no longer works.
func (h *ownServer) start(s *Supervisor, handler http.Handler, lost string) {
	if h == nil {
		return
	}
	h.srv = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelWarn)}
	h.done = make(chan struct{})
	s.goSafe(func() {
		defer close(h.done)
		if err := h.srv.Serve(h.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Log.Error(h.what+" stopped: "+lost, "address", h.Addr(), "err", err)
		}
	})
}

// close ends the server, its connections and its socket, and waits for
// its goroutine.
func (h *ownServer) close() {
	if h == nil {
		return
	}
	if h.done == nil {
		h.ln.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if h.srv.Shutdown(ctx) != nil { // waits for the answers being written
		h.srv.Close() // a client that does not read: close its connection
	}
	<-h.done
}
