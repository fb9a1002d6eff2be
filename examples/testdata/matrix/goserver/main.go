// Command goserver is a Go HTTP server as most are written: it binds its
// own port with net/http's ListenAndServe and stops gracefully on SIGTERM
// (Server.Shutdown). rpwrap runs it with --pass bind.
//
//	goserver ADDR
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: goserver ADDR")
		os.Exit(2)
	}
	srv := &http.Server{Addr: os.Args[1], Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	stopped := make(chan error, 1)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stopped <- srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "goserver: %v\n", err)
		os.Exit(1)
	}
	if err := <-stopped; err != nil {
		fmt.Fprintf(os.Stderr, "goserver: shutdown: %v\n", err)
		os.Exit(1)
	}
}
