//go:build linux

package fdpass

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// What the parent expects the server to see, passed in its environment.
const (
	wantArg0Env  = "RPWRAP_TEST_WANT_ARG0"
	wantNamesEnv = "RPWRAP_TEST_WANT_NAMES"
	wantNginxEnv = "RPWRAP_TEST_WANT_NGINX"
)

// serverRole plays a socket-activated server started through the shim: it
// checks what it inherited, then serves one connection on each listener,
// answering "PID NAME\n". It lists its fds first, with raw system calls, so
// that nothing the Go runtime opens later is counted.
func serverRole() int {
	fds, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "server: list fds:", err)
		return 1
	}
	names := strings.Split(os.Getenv(wantNamesEnv), ":")
	problems := checkInherited(fds, names)
	if len(problems) > 0 {
		fmt.Fprintln(os.Stderr, "server: "+strings.Join(problems, "\nserver: "))
		return 1
	}
	for i, name := range names {
		if err := serveOne(listenFdsStart+i, name); err != nil {
			fmt.Fprintln(os.Stderr, "server:", err)
			return 1
		}
	}
	return 0
}

func checkInherited(fds []int, names []string) []string {
	var problems []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	check(os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()), "LISTEN_PID=%q, my pid is %d", os.Getenv("LISTEN_PID"), os.Getpid())
	check(os.Getenv("LISTEN_FDS") == strconv.Itoa(len(names)), "LISTEN_FDS=%q, want %d", os.Getenv("LISTEN_FDS"), len(names))
	check(os.Getenv("LISTEN_FDNAMES") == strings.Join(names, ":"), "LISTEN_FDNAMES=%q, want %q", os.Getenv("LISTEN_FDNAMES"), strings.Join(names, ":"))
	check(os.Getenv("NGINX") == os.Getenv(wantNginxEnv), "NGINX=%q, want %q", os.Getenv("NGINX"), os.Getenv(wantNginxEnv))
	check(os.Args[0] == os.Getenv(wantArg0Env), "argv[0]=%q, want %q", os.Args[0], os.Getenv(wantArg0Env))
	for _, kv := range os.Environ() {
		check(!strings.HasPrefix(kv, "LISTEN_PIDFDID=") && !strings.HasPrefix(kv, shimPrefix), "inherited %s", kv)
	}
	want := []int{0, 1, 2}
	for i := range names {
		want = append(want, listenFdsStart+i)
		problems = append(problems, checkListening(listenFdsStart+i)...)
		fl, err := unix.FcntlInt(uintptr(listenFdsStart+i), unix.F_GETFL, 0)
		nonblock := err == nil && fl&unix.O_NONBLOCK != 0
		wantNonblock := os.Getenv(wantNginxEnv) != "" // nginx expects it; the others get rpwrap's blocking socket
		check(nonblock == wantNonblock, "fd %d: O_NONBLOCK %v, want %v", listenFdsStart+i, nonblock, wantNonblock)
	}
	check(slices.Equal(fds, want), "open fds %v, want %v", describeFDs(fds), want)
	return problems
}

func checkListening(fd int) []string {
	var problems []string
	for _, opt := range []struct {
		name      string
		opt, want int
	}{
		{"SO_ACCEPTCONN", unix.SO_ACCEPTCONN, 1},
		{"SO_REUSEPORT", unix.SO_REUSEPORT, 1},
		{"SO_PROTOCOL", unix.SO_PROTOCOL, unix.IPPROTO_TCP},
	} {
		if got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt.opt); err != nil || got != opt.want {
			problems = append(problems, fmt.Sprintf("fd %d: %s = %d (%v), want %d", fd, opt.name, got, err, opt.want))
		}
	}
	return problems
}

// openFDs lists /proc/self/fd, leaving out the fd that reads it.
func openFDs() ([]int, error) {
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	var fds []int
	buf := make([]byte, 8192)
	for {
		n, err := unix.ReadDirent(dir, buf)
		if err != nil || n == 0 {
			slices.Sort(fds)
			return fds, err
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		for _, name := range names {
			if fd, err := strconv.Atoi(name); err == nil && fd != dir {
				fds = append(fds, fd)
			}
		}
	}
}

func serveOne(fd int, name string) error {
	// The nginx route hands over non-blocking sockets: wait for the client.
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(pfd, -1); err != unix.EINTR {
			break
		}
	}
	conn, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err != nil {
		return fmt.Errorf("accept on fd %d: %w", fd, err)
	}
	defer unix.Close(conn)
	_, err = unix.Write(conn, []byte(fmt.Sprintf("%d %s\n", os.Getpid(), name)))
	return err
}

func describeFDs(fds []int) []string {
	var out []string
	for _, fd := range fds {
		target, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		out = append(out, fmt.Sprintf("%d=%s", fd, target))
	}
	return out
}
