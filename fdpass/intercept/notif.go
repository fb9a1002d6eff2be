//go:build linux

package intercept

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The structures of seccomp_unotify(2), as in <linux/seccomp.h>. x/sys/unix
// has the ioctl numbers but not the types.

type seccompData struct { // struct seccomp_data
	Nr                 int32
	Arch               uint32
	InstructionPointer uint64
	Args               [6]uint64
}

type seccompNotif struct { // struct seccomp_notif
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  seccompData
}

type seccompNotifResp struct { // struct seccomp_notif_resp
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

type seccompNotifAddfd struct { // struct seccomp_notif_addfd
	ID         uint64
	Flags      uint32
	Srcfd      uint32
	Newfd      uint32
	NewfdFlags uint32
}

// seccompFilterFlagWaitKillableRecv is SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
// (Linux 5.19): once rpwrap has received a notification, only a fatal signal
// interrupts the waiting bind, so a signal cannot split ADDFD from SEND.
const seccompFilterFlagWaitKillableRecv = 1 << 5

// ioctl issues one seccomp notify ioctl, retrying EINTR.
func ioctl(fd int, req uint, arg unsafe.Pointer) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		default:
			return -1, errno
		}
	}
}

func notifRecv(fd int, n *seccompNotif) error {
	*n = seccompNotif{} // the kernel wants a zeroed struct (EINVAL otherwise)
	_, err := ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
	return wrapSyscall("ioctl SECCOMP_IOCTL_NOTIF_RECV", err)
}

func notifIDValid(fd int, id uint64) error {
	_, err := ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id))
	return wrapSyscall("ioctl SECCOMP_IOCTL_NOTIF_ID_VALID", err)
}

func notifSend(fd int, r seccompNotifResp) error {
	_, err := ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
	return wrapSyscall("ioctl SECCOMP_IOCTL_NOTIF_SEND", err)
}

// notifAddfdSetfd puts srcfd at number newfd in the target, replacing what
// was there, with SETFD alone: SETFD|SEND would make bind(2) return newfd.
func notifAddfdSetfd(fd int, id uint64, srcfd, newfd int, cloexec bool) error {
	a := seccompNotifAddfd{ID: id, Flags: unix.SECCOMP_ADDFD_FLAG_SETFD, Srcfd: uint32(srcfd), Newfd: uint32(newfd)}
	if cloexec {
		a.NewfdFlags = unix.O_CLOEXEC
	}
	_, err := ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
	return wrapSyscall("ioctl SECCOMP_IOCTL_NOTIF_ADDFD", err)
}

func wrapSyscall(name string, err error) error {
	if err == nil {
		return nil
	}
	return os.NewSyscallError(name, err)
}
