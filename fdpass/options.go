//go:build linux

package fdpass

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// SocketOptions are the options of one socket that matter when it is
// handed from one generation to the next, named as the kernel names them
// (socket(7), tcp(7), ipv6(7)). A field that does not apply to the socket
// (TCP options of a UDP socket, IPV6_V6ONLY of an IPv4 one) is nil and
// left out of the JSON.
type SocketOptions struct {
	Network     string  `json:"network"` // tcp or udp
	Inode       uint64  `json:"inode"`   // the N of socket:[N] in /proc/PID/fd
	ReusePort   bool    `json:"SO_REUSEPORT"`
	ReuseAddr   bool    `json:"SO_REUSEADDR"`
	RcvBuf      int     `json:"SO_RCVBUF"`
	SndBuf      int     `json:"SO_SNDBUF"`
	NonBlock    bool    `json:"O_NONBLOCK"` // of the open file description rpwrap shares with the server
	V6Only      *bool   `json:"IPV6_V6ONLY,omitempty"`
	DeferAccept *int    `json:"TCP_DEFER_ACCEPT,omitempty"` // seconds, as getsockopt rounds them
	FastOpen    *int    `json:"TCP_FASTOPEN,omitempty"`     // the SYN queue for Fast Open; 0: off
	Backlog     *uint32 `json:"backlog,omitempty"`          // tcpi_sacked of TCP_INFO: the accept queue's size
	Queued      *uint32 `json:"queued,omitempty"`           // tcpi_unacked of TCP_INFO: connections waiting now
}

// Options reads the options of sock with getsockopt(2) and fcntl(2)
// F_GETFL, on the socket itself (rpwrap's copy shares them with every
// other holder). It fails when sock is closed ("use of closed file") or when the
// kernel refuses one of the reads; the error names the option.
func Options(sock syscall.Conn) (SocketOptions, error) {
	var o SocketOptions
	err := control(sock, func(fd int) (err error) {
		o, err = readOptions(fd)
		return err
	})
	if err != nil {
		return SocketOptions{}, fmt.Errorf("read socket options: %w", err)
	}
	return o, nil
}

func readOptions(fd int) (SocketOptions, error) {
	var o SocketOptions
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return o, os.NewSyscallError("fstat", err)
	}
	o.Inode = st.Ino
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return o, os.NewSyscallError("fcntl F_GETFL", err)
	}
	o.NonBlock = flags&unix.O_NONBLOCK != 0
	r := &optionReader{fd: fd}
	o.Network = "udp"
	if r.int(unix.SOL_SOCKET, unix.SO_TYPE, "SO_TYPE") == unix.SOCK_STREAM {
		o.Network = "tcp"
	}
	o.ReusePort = r.int(unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT") != 0
	o.ReuseAddr = r.int(unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR") != 0
	o.RcvBuf = r.int(unix.SOL_SOCKET, unix.SO_RCVBUF, "SO_RCVBUF")
	o.SndBuf = r.int(unix.SOL_SOCKET, unix.SO_SNDBUF, "SO_SNDBUF")
	if r.int(unix.SOL_SOCKET, unix.SO_DOMAIN, "SO_DOMAIN") == unix.AF_INET6 {
		v := r.int(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY") != 0
		o.V6Only = &v
	}
	if o.Network == "tcp" {
		deferAccept := r.int(unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT")
		fastOpen := r.int(unix.IPPROTO_TCP, unix.TCP_FASTOPEN, "TCP_FASTOPEN")
		o.DeferAccept, o.FastOpen = &deferAccept, &fastOpen
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return o, os.NewSyscallError("getsockopt TCP_INFO", err)
		}
		o.Backlog, o.Queued = &info.Sacked, &info.Unacked
	}
	return o, r.err
}

// optionReader reads int options of one socket and keeps the first error,
// naming the option.
type optionReader struct {
	fd  int
	err error
}

func (r *optionReader) int(level, opt int, name string) int {
	v, err := unix.GetsockoptInt(r.fd, level, opt)
	if err != nil && r.err == nil {
		r.err = os.NewSyscallError("getsockopt "+name, err)
	}
	return v
}

// String lists the options as NAME=VALUE, booleans as 0 or 1, leaving out
// those that do not apply: "SO_REUSEPORT=1 SO_REUSEADDR=1
// TCP_DEFER_ACCEPT=0 TCP_FASTOPEN=0 backlog=4096 queued=0 SO_RCVBUF=131072
// SO_SNDBUF=16384 O_NONBLOCK=0".
func (o SocketOptions) String() string {
	s := fmt.Sprintf("SO_REUSEPORT=%d SO_REUSEADDR=%d", b01(o.ReusePort), b01(o.ReuseAddr))
	if o.V6Only != nil {
		s += fmt.Sprintf(" IPV6_V6ONLY=%d", b01(*o.V6Only))
	}
	if o.DeferAccept != nil && o.FastOpen != nil {
		s += fmt.Sprintf(" TCP_DEFER_ACCEPT=%d TCP_FASTOPEN=%d", *o.DeferAccept, *o.FastOpen)
	}
	if o.Backlog != nil && o.Queued != nil {
		s += fmt.Sprintf(" backlog=%d queued=%d", *o.Backlog, *o.Queued)
	}
	return s + fmt.Sprintf(" SO_RCVBUF=%d SO_SNDBUF=%d O_NONBLOCK=%d", o.RcvBuf, o.SndBuf, b01(o.NonBlock))
}

func b01(b bool) int {
	if b {
		return 1
	}
	return 0
}
