//go:build linux

package fdpass

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// opError is a Listen failure: msg is for the operator, err keeps the errno
// for errors.Is.
type opError struct {
	msg string
	err error
}

func (e *opError) Error() string { return e.msg }
func (e *opError) Unwrap() error { return e.err }

// listenError explains err, a failure to create, bind or listen on spec's
// socket, in the operator's terms.
func listenError(spec Spec, err error) error {
	prefix := fmt.Sprintf("listen %s %s", spec.Network, spec.Addr)
	switch {
	case errors.Is(err, unix.EADDRINUSE):
		return &opError{msg: prefix + ": address in use by a socket without SO_REUSEPORT " + describeHolder(spec), err: err}
	case errors.Is(err, unix.EACCES):
		return &opError{msg: fmt.Sprintf("%s: permission denied: ports below %s need CAP_NET_BIND_SERVICE "+
			"(run as root, AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit, or setcap cap_net_bind_service=+ep), "+
			"or lower sysctl net.ipv4.ip_unprivileged_port_start", prefix, unprivilegedPortStart()), err: err}
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return &opError{msg: fmt.Sprintf("%s: address not available: is %s assigned to an interface of this host? (ip address show)",
			prefix, spec.Addr.Addr()), err: err}
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

func unprivilegedPortStart() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return "1024"
	}
	return strings.TrimSpace(string(b))
}

// describeHolder names the process holding spec's address:
// "(pid 812, nginx)", or "(holder unknown)".
func describeHolder(spec Spec) string {
	pid, comm, ok := findHolder(spec)
	if !ok {
		return "(holder unknown)"
	}
	return fmt.Sprintf("(pid %d, %s)", pid, comm)
}
