//go:build linux

package intercept

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// runServer is a server that binds like HAProxy does: its own socket,
// O_NONBLOCK and FD_CLOEXEC set and options applied before bind(2).
// argv: ADDR [wait] [twice] [accept]. It reports on stdout:
//
//	bind fd=N err=ok|ERRNO port=P
//	bind2 err=ERRNO        (twice)
//	listening              (accept; then serves one connection with "hello")
func runServer(argv []string) int {
	ap := netip.MustParseAddrPort(argv[0])
	opts := argv[1:]
	if slices.Contains(opts, "wait") {
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	fd, port, err := serverSocket(ap)
	fmt.Printf("bind fd=%d err=%s port=%d\n", fd, errnoName(err), port)
	if err != nil {
		return 0
	}
	if slices.Contains(opts, "twice") {
		_, _, err := serverSocket(ap)
		fmt.Printf("bind2 err=%s\n", errnoName(err))
	}
	if slices.Contains(opts, "accept") {
		if err := serveOne(fd); err != nil {
			fmt.Println("serve:", err)
			return 1
		}
	}
	return 0
}

func serverSocket(ap netip.AddrPort) (fd, port int, err error) {
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, 0, err
	}
	unix.CloseOnExec(fd)
	if err = unix.SetNonblock(fd, true); err != nil {
		return fd, 0, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err = unix.Bind(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		return fd, 0, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fd, 0, err
	}
	return fd, sa.(*unix.SockaddrInet4).Port, nil
}

func serveOne(fd int) error {
	if err := unix.Listen(fd, 16); err != nil {
		return err
	}
	fmt.Println("listening")
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 30_000); err != nil || n == 0 {
		return fmt.Errorf("no connection within 30s: %v", err)
	}
	c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(c)
	_, err = unix.Write(c, []byte("hello\n"))
	return err
}
