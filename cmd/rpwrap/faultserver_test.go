//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// faultServerArg, as argv[1], makes the test binary a server with a fault
// the demo server does not have (see runFaultServer). The check runs in
// init, before TestMain, and no other process of the test binary has this
// argv[1]: rpwrap's is a flag, the shim's the server's path.
const faultServerArg = "fault-server"

func init() {
	if len(os.Args) >= 3 && os.Args[1] == faultServerArg {
		if os.Args[2] == "list-fds" {
			os.Exit(listFDsThenServe(os.Args[3:]))
		}
		os.Exit(runFaultServer(os.Args[2], os.Args[3:]))
	}
}

// fdsDirEnv names the directory where list-fds writes its listing.
const fdsDirEnv = "RPWRAP_TEST_FDS_DIR"

// listFDsThenServe writes the descriptors this process inherited (fd ->
// link target, one a line) to $RPWRAP_TEST_FDS_DIR/fds.$RPWRAP_GENERATION,
// then execs the demo server with args in its place (same pid). It runs
// in init, before the program has opened any descriptor, and lists
// /proc/self/fd with raw system calls, so that no poller descriptor is
// added.
func listFDsThenServe(args []string) int {
	dirfd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 2
	}
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.ReadDirent(dirfd, buf)
		if err != nil || n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	var list strings.Builder
	for _, name := range names {
		target, _ := os.Readlink("/proc/self/fd/" + name)
		// A descriptor with FD_CLOEXEC was opened by this process since its
		// exec (one it inherited would have been closed by the exec): the
		// directory's own, the cgroup CPU limit files the Go runtime (1.25+)
		// keeps open to size GOMAXPROCS, the netpoller that a package's
		// init opens. Those are the lister's, not inherited.
		fd, _ := strconv.Atoi(name)
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue
		}
		list.WriteString(name + " -> " + target + "\n")
	}
	unix.Close(dirfd)
	path := os.Getenv(fdsDirEnv) + "/fds." + os.Getenv("RPWRAP_GENERATION")
	if err := os.WriteFile(path, []byte(list.String()), 0o644); err != nil {
		return 2
	}
	err = syscall.Exec("/proc/self/exe", append([]string{"rpwrap", "serve-demo"}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "exec the demo server: %v\n", err)
	return 127
}

// runFaultServer runs the server of mode with args:
//
//   - "close-listener-on-usr1" serves HTTP on the socket at fd 3 (socket
//     activation), answering every connection it accepts. SIGUSR1 makes it
//     close its listener but keep running, as a server that closes its
//     socket too early does; connections then wait in the queue of the
//     socket rpwrap still holds. SIGTERM: it answers what it accepted and
//     exits 0.
//   - "defer-accept LINGER": see deferAcceptServer.
//   - "foreign-listener ADDR": see foreignListener.
func runFaultServer(mode string, args []string) int {
	switch mode {
	case "close-listener-on-usr1":
		return closeListenerOnUSR1()
	case "defer-accept":
		return deferAcceptServer(args)
	case "foreign-listener":
		return foreignListener(args)
	}
	fmt.Fprintf(os.Stderr, "fault server: unknown mode %q\n", mode)
	return 2
}

func closeListenerOnUSR1() int {
	f := os.NewFile(3, "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fault server: %v\n", err)
		return 2
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "fault server pid="+itoa(os.Getpid()))
	})}
	srv.SetKeepAlivesEnabled(false)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM)
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				fmt.Fprintf(os.Stderr, "fault server pid=%d: closing my listener, still running\n", os.Getpid())
				ln.Close()
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if srv.Shutdown(ctx) != nil {
				return 1
			}
			return 0
		case err := <-served:
			if err != http.ErrServerClosed && !strings.Contains(err.Error(), "use of closed") {
				fmt.Fprintf(os.Stderr, "fault server: %v\n", err)
				return 1
			}
		}
	}
}
