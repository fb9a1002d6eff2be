//go:build linux

package fdpass

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Sentinel errors of LookPath and of the exec shim, with the shell's exit
// codes (sh(1), tini): 127 and 126.
var (
	ErrNotFound      = errors.New("command not found")
	ErrNotExecutable = errors.New("command not executable")
)

// defaultPath is what execvp(3) searches when PATH is unset.
const defaultPath = "/bin:/usr/bin"

// CommandError is a command that cannot be run. Err is ErrNotFound or
// ErrNotExecutable; ExitCode gives the matching shell exit code.
type CommandError struct {
	Cmd    string // as the user gave it
	Err    error  // ErrNotFound or ErrNotExecutable
	Detail string // "in PATH=/usr/bin:/bin", "is a directory", ...
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("rpwrap: %s: %v %s", e.Cmd, e.Err, e.Detail)
}

func (e *CommandError) Unwrap() error { return e.Err }

// ExitCode is 127 for ErrNotFound and 126 for ErrNotExecutable.
func (e *CommandError) ExitCode() int {
	if errors.Is(e.Err, ErrNotFound) {
		return 127
	}
	return 126
}

// LookPath resolves cmd as the shell does: a name with a slash is used as it
// is, any other is searched in $PATH (execvp(3)'s /bin:/usr/bin when unset;
// an empty entry is the current directory) and the first executable regular
// file wins. It fails with a *CommandError wrapping ErrNotFound ("rpwrap:
// httpd: command not found in PATH=/usr/bin:/bin", exit 127) or, when only
// files that cannot be executed (or directories) were found,
// ErrNotExecutable (exit 126).
func LookPath(cmd string) (string, error) {
	if cmd == "" {
		return "", &CommandError{Cmd: `""`, Err: ErrNotFound, Detail: "(empty command name)"}
	}
	if strings.ContainsRune(cmd, '/') {
		if err := checkExecutable(cmd); err != nil {
			return "", err
		}
		return cmd, nil
	}
	path, ok := os.LookupEnv("PATH")
	if !ok {
		path = defaultPath
	}
	var firstErr error
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		candidate := filepath.Join(dir, cmd)
		err := checkExecutable(candidate)
		if err == nil {
			return candidate, nil
		}
		if firstErr == nil && errors.Is(err, ErrNotExecutable) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", &CommandError{Cmd: cmd, Err: ErrNotFound, Detail: "in PATH=" + path}
}

// checkExecutable returns nil when file is a regular file this process may
// execute.
func checkExecutable(file string) error {
	st, err := os.Stat(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			return &CommandError{Cmd: file, Err: ErrNotFound, Detail: "(no such file)"}
		}
		return &CommandError{Cmd: file, Err: ErrNotExecutable, Detail: fmt.Sprintf("(%v)", errors.Unwrap(err))}
	}
	if st.IsDir() {
		return &CommandError{Cmd: file, Err: ErrNotExecutable, Detail: "(is a directory)"}
	}
	if err := unix.Faccessat(unix.AT_FDCWD, file, unix.X_OK, unix.AT_EACCESS); err != nil {
		return &CommandError{Cmd: file, Err: ErrNotExecutable,
			Detail: fmt.Sprintf("(mode %v, %v): chmod +x it, or check the mount is not noexec", st.Mode().Perm(), err)}
	}
	return nil
}
