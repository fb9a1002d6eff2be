//go:build linux

package intercept

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrNoNotifyFd is returned by Receive when the child closed its end of the
// socket without sending a seccomp notify fd (it died or exec'd first).
var ErrNoNotifyFd = errors.New("child sent no seccomp notify fd")

// Receive reads the seccomp notify fd that the child's InstallAndSend sent
// over conn, the parent's end of the socketpair, and returns it close-on-exec.
// It blocks until the child sends or closes its end. It fails with
// ErrNoNotifyFd when the child sent nothing, and with an error naming what
// arrived when the fd is not a seccomp notify fd.
func Receive(conn *os.File) (*os.File, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("receive seccomp notify fd: %w", err)
	}
	var (
		buf     [1]byte
		oob     = make([]byte, unix.CmsgSpace(4*4))
		n, oobn int
		recvErr error
	)
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, recvErr = unix.Recvmsg(int(fd), buf[:], oob, unix.MSG_CMSG_CLOEXEC)
		return recvErr != unix.EAGAIN && recvErr != unix.EINTR
	})
	if err == nil {
		err = wrapSyscall("recvmsg", recvErr)
	}
	if err != nil {
		return nil, fmt.Errorf("receive seccomp notify fd: %w", err)
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		return nil, fmt.Errorf("receive seccomp notify fd: %w", err)
	}
	if n == 0 || len(fds) == 0 {
		closeAll(fds)
		return nil, fmt.Errorf("receive seccomp notify fd: %w", ErrNoNotifyFd)
	}
	closeAll(fds[1:])
	return checkNotifyFd(fds[0])
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// checkNotifyFd makes sure fd is what the child was meant to send.
func checkNotifyFd(fd int) (*os.File, error) {
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || target != "anon_inode:seccomp notify" {
		unix.Close(fd)
		return nil, fmt.Errorf("receive seccomp notify fd: got %q instead: %w", target, ErrNoNotifyFd)
	}
	return os.NewFile(uintptr(fd), "seccomp-notify"), nil
}
