//go:build linux

package fdpass

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

const listenFdsStart = 3 // SD_LISTEN_FDS_START

// listenVars are the variables of sd_listen_fds(3); FromSystemd unsets them.
var listenVars = []string{"LISTEN_PID", "LISTEN_PIDFDID", "LISTEN_FDS", "LISTEN_FDNAMES"}

// sdEnv is the part of the OS that FromSystemd reads, injectable for tests
// (as tableflip's env).
type sdEnv struct {
	getenv   func(string) string
	unsetenv func(string) error
	getpid   func() int
	files    func() []*os.File // the n passed fds, close-on-exec, in order
}

var osEnv = sdEnv{
	getenv:   os.Getenv,
	unsetenv: os.Unsetenv,
	getpid:   os.Getpid,
	files:    func() []*os.File { return activation.Files(false) },
}

// FromSystemd adopts the sockets systemd passed to this process (LISTEN_FDS,
// LISTEN_PID, LISTEN_FDNAMES, as sd_listen_fds(3); the fds are opened with
// go-systemd's activation.Files, which marks them close-on-exec) and unsets
// those variables and LISTEN_PIDFDID, whatever the outcome.
//
// It returns nil, nil when no sockets were passed: LISTEN_PID unset or not
// this process, or LISTEN_FDS unset or 0. Each Listener's Spec has the fd's
// name (LISTEN_FD_3 and so on when LISTEN_FDNAMES is empty), its network and
// its bound address.
//
// It fails when LISTEN_FDS is not a number, when LISTEN_FDNAMES does not hold
// one name per fd, and when a socket is not a listening TCP socket
// (SO_PROTOCOL IPPROTO_TCP, so not MPTCP) or a bound UDP socket, or lacks
// SO_REUSEPORT: "socket \"http\" (fd 3) from systemd lacks SO_REUSEPORT: add
// ReusePort=yes to the .socket unit". On failure every passed fd is closed.
func FromSystemd() ([]*Listener, error) {
	return fromSystemd(osEnv)
}

func fromSystemd(env sdEnv) (_ []*Listener, err error) {
	names, err := parseListenEnv(env)
	var files []*os.File
	if err == nil && names != nil {
		files = env.files() // reads the variables again: unset them after
	}
	for _, v := range listenVars {
		env.unsetenv(v)
	}
	if err != nil || names == nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			closeFiles(files)
		}
	}()
	if len(files) != len(names) {
		return nil, fmt.Errorf("adopt sockets from systemd: LISTEN_FDS=%d but %d fds could be opened", len(names), len(files))
	}
	return adoptAll(files, names)
}

// parseListenEnv returns the fd names that the environment announces, nil if
// it announces none.
func parseListenEnv(env sdEnv) ([]string, error) {
	pid, err := strconv.Atoi(env.getenv("LISTEN_PID"))
	if err != nil || pid != env.getpid() {
		return nil, nil // not for this process: sd_listen_fds(3) returns 0
	}
	fds := env.getenv("LISTEN_FDS")
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > maxListenFDs {
		return nil, fmt.Errorf("read sockets from systemd: LISTEN_FDS=%q is not a count of file descriptors", fds)
	}
	if n == 0 {
		return nil, nil
	}
	return fdNames(env.getenv("LISTEN_FDNAMES"), n)
}

// maxListenFDs bounds LISTEN_FDS far above what a .socket unit passes.
const maxListenFDs = 1 << 16

func fdNames(value string, n int) ([]string, error) {
	names := make([]string, n)
	if value == "" {
		for i := range names {
			names[i] = "LISTEN_FD_" + strconv.Itoa(listenFdsStart+i) // go-systemd's default
		}
		return names, nil
	}
	got := strings.Split(value, ":")
	if len(got) != n {
		return nil, fmt.Errorf("read sockets from systemd: LISTEN_FDNAMES=%q has %d names for LISTEN_FDS=%d", value, len(got), n)
	}
	return got, nil
}

func adoptAll(files []*os.File, names []string) ([]*Listener, error) {
	ls := make([]*Listener, len(files))
	for i, f := range files {
		spec, err := adoptedSpec(f, names[i])
		if err != nil {
			return nil, fmt.Errorf("socket %q (fd %d) from systemd %w", names[i], f.Fd(), err)
		}
		ls[i] = &Listener{spec: spec, file: f}
	}
	return ls, nil
}

// adoptedSpec checks that f is a socket rpwrap can steer and describes it.
// Its errors read after "socket "http" (fd 3) from systemd ".
func adoptedSpec(f *os.File, name string) (Spec, error) {
	var spec Spec
	err := control(f, func(fd int) (err error) {
		spec, err = checkAdoptable(fd, name)
		return err
	})
	return spec, err
}

func checkAdoptable(fd int, name string) (Spec, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return Spec{}, fmt.Errorf("is not a socket (%w): use ListenStream= or ListenDatagram= with an IP address", os.NewSyscallError("getsockopt SO_TYPE", err))
	}
	proto, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	spec := Spec{Name: name}
	switch {
	case typ == unix.SOCK_STREAM && proto == unix.IPPROTO_TCP:
		spec.Network = "tcp"
		if on, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); on != 1 {
			return Spec{}, fmt.Errorf("is not listening: use ListenStream= in the .socket unit, and Accept=no")
		}
	case typ == unix.SOCK_DGRAM && proto == unix.IPPROTO_UDP:
		spec.Network = "udp"
	default:
		return Spec{}, fmt.Errorf("is not a TCP or UDP socket (SO_TYPE %d, SO_PROTOCOL %d; MPTCP is %d): use ListenStream= or ListenDatagram= with an IP address",
			typ, proto, unix.IPPROTO_MPTCP)
	}
	if on, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); on != 1 {
		return Spec{}, fmt.Errorf("lacks SO_REUSEPORT: add ReusePort=yes to the .socket unit")
	}
	if spec.Addr, err = localAddr(fd); err != nil || spec.Addr.Port() == 0 {
		return Spec{}, fmt.Errorf("is not bound to an IP address and port: use ListenStream= or ListenDatagram= with an address")
	}
	return spec, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
