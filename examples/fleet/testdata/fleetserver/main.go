// Command fleetserver is the server of the fleet test: an HTTP server on the
// socket that rpwrap passes it (LISTEN_FDS, fd 3) that answers every request
// with its release, "fleetserver v2 gen 3". The release and how it behaves
// are set at build time:
//
//	go build -ldflags "-X main.release=v2" ./testdata/fleetserver
//	go build -ldflags "-X main.release=v3 -X main.mode=exit" ...   exits 3 at start
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

var (
	release = "v0"
	mode    = "good"
)

func main() {
	if mode == "exit" {
		fmt.Fprintf(os.Stderr, "fleetserver %s: refusing to start (a release built to fail)\n", release)
		os.Exit(3)
	}
	if os.Getenv("LISTEN_FDS") != "1" || os.Getenv("LISTEN_PID") != fmt.Sprint(os.Getpid()) {
		fmt.Fprintln(os.Stderr, "fleetserver: want one socket from rpwrap (LISTEN_FDS=1 for this pid)")
		os.Exit(2)
	}
	ln, err := net.FileListener(os.NewFile(3, "listen"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetserver: fd 3:", err)
		os.Exit(2)
	}
	body := fmt.Sprintf("fleetserver %s gen %s\n", release, os.Getenv("RPWRAP_GENERATION"))
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok\n") })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan error, 1)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx) // Serve returns at once; the requests in flight end here
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "fleetserver:", err)
		os.Exit(1)
	}
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "fleetserver: shutdown:", err)
		os.Exit(1)
	}
}
