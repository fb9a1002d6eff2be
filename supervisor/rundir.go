//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// CheckPrivateDir makes sure that path is a directory that only rpwrap's
// own user (or root) can change, because whoever can write to it can remove
// or replace the control and notify sockets rpwrap keeps there. A missing
// directory is created with mode 0700 (its parents with 0700 too).
//
// It returns nil when path is, or now is, such a directory. It fails, naming
// the path, its owner and mode and what to do, when path is a symbolic link
// (never followed: its maker chose where it points), is not a directory,
// belongs to a user other than the effective uid and root, or can be
// written by group or others (mode 0777, or /tmp's 1777).
func CheckPrivateDir(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("create directory %s: %w", filepath.Dir(path), err)
		}
		if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create directory %s: %w", path, err)
		}
		fi, err = os.Lstat(path)
	}
	if err != nil {
		return fmt.Errorf("check directory %s: %w", path, err)
	}
	return checkPrivate(path, fi)
}

// checkPrivate applies CheckPrivateDir's rules to what Lstat said of path.
func checkPrivate(path string, fi fs.FileInfo) error {
	const fix = "remove it if nothing in it is yours, or use a directory of your own (--control PATH, RUNTIME_DIRECTORY, XDG_RUNTIME_DIR)"
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := os.Readlink(path)
		return fmt.Errorf("directory %s is a symbolic link (to %s): rpwrap does not follow one to the place of its sockets; %s", path, target, fix)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (mode %v): %s", path, fi.Mode(), fix)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("check directory %s: no owner in its file information", path)
	}
	uid := os.Geteuid()
	if int(st.Uid) != uid && st.Uid != 0 {
		return fmt.Errorf("directory %s belongs to uid %d, not to uid %d that rpwrap runs as (mode %04o): that user could remove or replace rpwrap's sockets; %s",
			path, st.Uid, uid, st.Mode&0o7777, fix)
	}
	if perm := st.Mode & 0o7777; perm&0o022 != 0 {
		what := fix
		if int(st.Uid) == uid && perm&0o1000 == 0 {
			what = "run chmod go-w " + path + " if it is yours, or " + fix
		}
		return fmt.Errorf("directory %s has mode %04o (owner uid %d): group or others can write it, and so remove or replace rpwrap's sockets; %s",
			path, perm, st.Uid, what)
	}
	return nil
}
