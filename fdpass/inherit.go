//go:build linux

package fdpass

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Inherit makes a Listener of fd, a socket that rpwrap passed on to itself
// across an in-place upgrade (execve(2)), after checking that it is still
// the socket described: a TCP listener or bound UDP socket with
// SO_REUSEPORT on spec's network and address, with the inode recorded when
// it was passed (a descriptor number reused by another file fails). The
// Listener owns fd from then on and makes it close-on-exec again; on error
// fd is left open for the caller.
func Inherit(fd int, spec Spec, inode uint64) (*Listener, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("inherited socket %s (fd %d): %w", spec, fd, os.NewSyscallError("fstat", err))
	}
	if st.Ino != inode {
		return nil, fmt.Errorf("inherited socket %s (fd %d): inode %d, want %d: not the socket that was passed", spec, fd, st.Ino, inode)
	}
	got, err := checkAdoptable(fd, spec.Name)
	if err != nil {
		return nil, fmt.Errorf("inherited socket %s (fd %d) %w", spec, fd, err)
	}
	if got.Network != spec.Network || got.Addr != spec.Addr {
		return nil, fmt.Errorf("inherited socket %s (fd %d) is %s %s", spec, fd, got.Network, got.Addr)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("inherited socket %s (fd %d): %w", spec, fd, os.NewSyscallError("fcntl F_SETFD", err))
	}
	return &Listener{spec: spec, file: os.NewFile(uintptr(fd), spec.String())}, nil
}

// Released is a Listener for spec whose socket rpwrap let go of already,
// as after Close: Inode reports 0 and every call on the socket fails.
func Released(spec Spec) *Listener {
	r, w, err := os.Pipe()
	if err != nil {
		return &Listener{spec: spec, file: os.NewFile(^uintptr(0), spec.String())}
	}
	w.Close()
	r.Close()
	return &Listener{spec: spec, file: r}
}
