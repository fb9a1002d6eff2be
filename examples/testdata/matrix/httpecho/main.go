// Command httpecho serves HTTP ("ok\n") on every stream socket and an echo
// on every datagram socket. Without arguments it takes its sockets from
// systemd socket activation (sd_listen_fds(3): LISTEN_PID, LISTEN_FDS, fds
// from 3); with UDP addresses as arguments it binds them itself instead
// (run with --pass bind):
//
//	httpecho                 socket activation
//	httpecho ADDR...         an echo on each UDP ADDR, bound itself
//
// On
// SIGTERM it stops gracefully: it closes its stream sockets, answers the
// next request of every connection it had accepted (then closes it), and
// stops the echo once its socket has no datagram left to read.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const listenFdsStart = 3 // SD_LISTEN_FDS_START

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "httpecho: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) > 1 {
		return bindEcho(os.Args[1:])
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 || os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return fmt.Errorf("no sockets passed (LISTEN_FDS=%q LISTEN_PID=%q, pid %d)", os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"), os.Getpid())
	}
	var conns sync.WaitGroup // connections accepted and not yet closed
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, "ok\n")
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Done()
			}
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	var lns []net.Listener
	errc := make(chan error, n)
	for fd := listenFdsStart; fd < listenFdsStart+n; fd++ {
		f := os.NewFile(uintptr(fd), "listen-fd-"+strconv.Itoa(fd))
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			return fmt.Errorf("fd %d: %w", fd, err)
		}
		wg.Add(1)
		if typ == unix.SOCK_DGRAM {
			pc, err := net.FilePacketConn(f)
			if err != nil {
				return fmt.Errorf("fd %d: %w", fd, err)
			}
			go func() { defer wg.Done(); errc <- echo(ctx, pc) }()
			continue
		}
		ln, err := net.FileListener(f)
		if err != nil {
			return fmt.Errorf("fd %d: %w", fd, err)
		}
		lns = append(lns, ln)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); !errors.Is(err, net.ErrClosed) {
				errc <- err
			}
		}()
	}
	<-ctx.Done()
	// Not Server.Shutdown: it closes, unanswered, a connection whose
	// request it reads after the shutdown began. Without keep-alives each
	// connection ends after its answer; a silent one after ReadHeaderTimeout.
	srv.SetKeepAlivesEnabled(false)
	for _, ln := range lns {
		ln.Close()
	}
	conns.Wait()
	wg.Wait()
	close(errc)
	err = nil
	for e := range errc {
		err = errors.Join(err, e)
	}
	return err
}

// echo sends every datagram back to its sender until ctx ends and no
// datagram is left to read.
func echo(ctx context.Context, pc net.PacketConn) error {
	defer pc.Close()
	buf := make([]byte, 64<<10)
	for {
		if ctx.Err() != nil {
			pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		} else {
			pc.SetReadDeadline(time.Now().Add(time.Second))
		}
		n, from, err := pc.ReadFrom(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		if err != nil {
			return err
		}
		if _, err := pc.WriteTo(buf[:n], from); err != nil {
			return err
		}
	}
}

// bindEcho binds each UDP address and echoes on it until SIGTERM.
func bindEcho(addrs []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	errc := make(chan error, len(addrs))
	for _, a := range addrs {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return err
		}
		go func() { errc <- echo(ctx, pc) }()
	}
	var err error
	for range addrs {
		err = errors.Join(err, <-errc)
	}
	return err
}
