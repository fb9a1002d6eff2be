//go:build linux

package demoserver

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Exit codes of Main besides a flag's own.
const (
	exitOK      = 0
	exitFailed  = 1 // serving failed, or a graceful stop ran out of time
	exitUsage   = 2 // bad flags, or no sockets passed
	exitCrashed = 3 // -crash-after-ready fired
)

// Main runs the demo server with the command-line flags args (without the
// program or subcommand name) and returns the process's exit status: 0 after
// a stop signal, 2 for bad flags or when no sockets were passed (LISTEN_PID
// unset or not this process, LISTEN_FDS absent or 0, an fd that is not a
// listening socket), 1 when serving fails or a graceful stop times out, 3 when
// -crash-after-ready fires, and CODE for -exit-at-start CODE. It writes one
// line to stderr when it starts serving and one for every reason it stops.
// Main installs signal handlers for the whole process, so the caller should
// exit with its result.
func Main(args []string) int {
	return run(args, os.Stderr)
}

func run(args []string, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo server: %v\n", err)
		return exitUsage
	}
	if opts.exitAtStart >= 0 {
		fmt.Fprintf(stderr, "demo server pid=%d: exiting %d at start, as -exit-at-start asks\n", os.Getpid(), opts.exitAtStart)
		return opts.exitAtStart
	}
	var socks sockets
	if opts.bind != "" {
		socks, err = bindListener(opts.bind, opts.reusePort)
	} else {
		socks, err = activatedListeners()
	}
	if err == nil && opts.listenBacklog > 0 {
		if err = setBacklog(socks.lns, opts.listenBacklog); err != nil {
			socks.close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo server: %v\n", err)
		return exitUsage
	}
	defer closePacketConns(socks.pcs)
	return serve(opts, socks, stderr)
}

// stopSignals are the signals that stop the server; SIGTERM only when it is
// not ignored.
func stopSignals(opts options) []os.Signal {
	sigs := []os.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGWINCH}
	if !opts.ignoreTerm {
		sigs = append(sigs, syscall.SIGTERM)
	}
	return sigs
}

// serve runs the server on lns until a stop signal, a crash or a failure,
// and returns the exit status.
func serve(opts options, socks sockets, stderr io.Writer) int {
	lns := socks.lns
	if opts.ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, stopSignals(opts)...)
	defer signal.Stop(sigc)

	gen := generation()
	var conns sync.WaitGroup // every connection the server has accepted and not yet closed
	h := newHang()
	hangc := make(chan os.Signal, 1)
	signal.Notify(hangc, syscall.SIGUSR2)
	defer signal.Stop(hangc)
	srv := &http.Server{
		Handler:           warmUp(opts, closeWhenStopping(newMux(gen, os.Getpid()))),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       30 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Done()
				h.active.Add(-1)
			}
		},
	}
	fmt.Fprintf(stderr, "demo server gen=%s pid=%d serving on %s\n", gen, os.Getpid(), socks)
	if sig, stopped := waitStart(opts.readyDelay, sigc); stopped {
		socks.close()
		fmt.Fprintf(stderr, "demo server pid=%d: %v before serving, exiting\n", os.Getpid(), sig)
		return exitOK
	}
	errc := make(chan error, len(lns))
	for i, ln := range lns {
		lns[i] = h.listener(ln)
		go func() { errc <- srv.Serve(lns[i]) }()
	}
	var echoers []*echoer
	for _, pc := range socks.pcs {
		echoers = append(echoers, startEcho(pc, opts.udpReadDelay, udpTag(opts, gen)))
	}
	go func() {
		<-hangc // SIGUSR2, caught from the start so that it never kills
		h.start()
	}()
	crash := notifyReady(opts, stderr)
	if opts.crashWarmUp > 0 {
		crash = time.After(opts.crashWarmUp)
	}
	select {
	case sig := <-sigc:
		linger(opts, echoers, stderr)
		for _, e := range echoers {
			e.stop() // what is still queued on them is lost
		}
		return stop(srv, lns, errc, &conns, opts, sig, stderr)
	case err := <-errc:
		srv.Close()
		fmt.Fprintf(stderr, "demo server pid=%d: serve: %v\n", os.Getpid(), err)
		return exitFailed
	case <-crash:
		if opts.crashWarmUp > 0 {
			fmt.Fprintf(stderr, "demo server pid=%d: crashing %v into the warm-up, with the requests it accepted unanswered, as -crash-in-warm-up asks\n", os.Getpid(), opts.crashWarmUp)
			return exitCrashed
		}
		fmt.Fprintf(stderr, "demo server pid=%d: crashing %v after ready, as -crash-after-ready asks\n", os.Getpid(), opts.crashAfterReady)
		return exitCrashed
	}
}

// waitStart waits out -ready-delay; connections meanwhile wait in the
// sockets' accept queues. It reports the signal that cut it short, if any.
func waitStart(delay time.Duration, sigc <-chan os.Signal) (os.Signal, bool) {
	if delay <= 0 {
		return nil, false
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil, false
	case sig := <-sigc:
		return sig, true
	}
}

// notifyReady sends READY=1 as sd_notify(3) describes, unless -never-ready,
// and returns a channel that fires when -crash-after-ready is due (nil when
// it is off). Without NOTIFY_SOCKET nothing is sent. A failed send is
// reported on stderr and otherwise ignored: the supervisor will time out.
func notifyReady(opts options, stderr io.Writer) <-chan time.Time {
	if !opts.neverReady && opts.crashWarmUp <= 0 {
		if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			fmt.Fprintf(stderr, "demo server pid=%d: send READY=1 to NOTIFY_SOCKET=%s: %v\n", os.Getpid(), os.Getenv("NOTIFY_SOCKET"), err)
		}
	}
	if opts.crashAfterReady <= 0 {
		return nil
	}
	return time.After(opts.crashAfterReady)
}

// stop ends the server after sig: gracefully (stop accepting, let requests
// in flight finish within -shutdown-timeout) or at once.
//
// A graceful stop does not use http.Server.Shutdown: Shutdown drops, without
// an answer, a connection that was accepted just before it but whose request
// is read just after it. Instead the server stops accepting, answers every
// connection it has accepted (with keep-alive off, each closes after its
// response) and exits when the last one is closed.
func stop(srv *http.Server, lns []net.Listener, served <-chan error, conns *sync.WaitGroup, opts options, sig os.Signal, stderr io.Writer) int {
	pid := os.Getpid()
	if !opts.graceful {
		srv.Close()
		fmt.Fprintf(stderr, "demo server pid=%d: %v, closed every connection at once (-graceful=false)\n", pid, sig)
		return exitOK
	}
	fmt.Fprintf(stderr, "demo server pid=%d: %v, no longer accepting, finishing requests in flight\n", pid, sig)
	closeListeners(lns)
	for range lns {
		<-served // each Serve loop has tracked every connection it accepted
	}
	// Keep-alive connections: answer each one's next request with
	// "Connection: close", so that its client reconnects (to the new
	// generation) without a lost request. Closing them idle at once races
	// with a request the client is sending; only those still idle after
	// idleGrace are closed.
	stopping.Store(true)
	drained := make(chan struct{})
	go func() { conns.Wait(); close(drained) }()
	t := time.NewTimer(opts.shutdownTimeout)
	defer t.Stop()
	grace := time.NewTimer(idleGrace)
	defer grace.Stop()
	for {
		select {
		case <-drained:
			return exitOK
		case <-grace.C:
			srv.SetKeepAlivesEnabled(false) // closes the connections still idle
			continue
		case <-t.C:
			srv.Close()
			fmt.Fprintf(stderr, "demo server pid=%d: requests still in flight after %v, closed them\n", pid, opts.shutdownTimeout)
			return exitFailed
		}
	}
}

// idleGrace is how long a stopping server waits for the next request on an
// idle keep-alive connection before it closes the connection.
const idleGrace = time.Second

// stopping is set once a graceful stop has begun.
var stopping atomic.Bool

// closeWhenStopping makes every response of a stopping server end its
// connection.
func closeWhenStopping(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stopping.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// generation is RPWRAP_GENERATION, or 0 when rpwrap did not set it.
func generation() string {
	if g := os.Getenv("RPWRAP_GENERATION"); g != "" {
		return g
	}
	return "0"
}
