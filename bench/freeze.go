//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/rpwrap/rpwrap/internal/procfs"
	"golang.org/x/sys/unix"
)

// freezeIdle SIGSTOPs pids (an old generation's processes) at a moment
// when none of them holds an accepted connection on port: a request that
// a process had already accepted is lost whatever the restart method, so
// the hang scenario freezes the old generation between requests and
// measures only what the method does with the connections that come after.
// It retries (SIGCONT, 1 ms, SIGSTOP) up to timeout and reports whether
// the processes were frozen; false when they were gone or never idle.
func freezeIdle(pids []int, port uint16, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		if !alive(pids) {
			return false
		}
		signalAll(pids, syscall.SIGSTOP)
		// A stop takes effect on the way back to user space: only then is an
		// accept that was under way visible in the fd table.
		pollUntil(time.Second, func() bool { return allStopped(pids) })
		est, err := establishedInodes(port)
		if err == nil && !holdsAny(pids, est) {
			return true
		}
		signalAll(pids, syscall.SIGCONT)
		time.Sleep(time.Millisecond) // let the in-flight request finish, then try again
	}
	return false
}

func allStopped(pids []int) bool {
	for _, pid := range pids {
		if st, err := procfs.ReadStat(pid); err == nil && st.State != 'T' && st.State != 't' && st.State != 'Z' {
			return false
		}
	}
	return true
}

// sock_diag(7) structures, linux/inet_diag.h.
type diagSockID struct {
	SPort, DPort [2]byte
	Src, Dst     [16]byte
	If           uint32
	Cookie       [2]uint32
}

type diagReq struct {
	Family, Protocol, Ext, Pad uint8
	States                     uint32
	ID                         diagSockID
}

type diagMsg struct {
	Family, State, Timer, Retrans uint8
	ID                            diagSockID
	Expires, RQueue, WQueue, UID  uint32
	Inode                         uint32
}

const tcpEstablished = 1

// establishedInodes are the inodes of established IPv4 TCP sockets whose
// local port is port: the server side of accepted connections.
func establishedInodes(port uint16) (map[uint64]bool, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, os.NewSyscallError("socket NETLINK_SOCK_DIAG", err)
	}
	defer unix.Close(fd)
	req := diagReq{Family: unix.AF_INET, Protocol: unix.IPPROTO_TCP, States: 1 << tcpEstablished}
	binary.BigEndian.PutUint16(req.ID.SPort[:], port)
	hdr := unix.NlMsghdr{Len: uint32(unix.SizeofNlMsghdr + binary.Size(req)), Type: unix.SOCK_DIAG_BY_FAMILY,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP, Seq: 1}
	var b bytes.Buffer
	binary.Write(&b, binary.NativeEndian, hdr)
	binary.Write(&b, binary.NativeEndian, req)
	if err := unix.Sendto(fd, b.Bytes(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto NETLINK_SOCK_DIAG", err)
	}
	out := map[uint64]bool{}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, os.NewSyscallError("recvfrom NETLINK_SOCK_DIAG", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("parse sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_DONE || m.Header.Type == unix.NLMSG_ERROR {
				return out, nil
			}
			var d diagMsg
			if binary.Read(bytes.NewReader(m.Data), binary.NativeEndian, &d) == nil &&
				binary.BigEndian.Uint16(d.ID.SPort[:]) == port {
				out[uint64(d.Inode)] = true
			}
		}
	}
}
