//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// explainFDLimit adds rpwrap's RLIMIT_NOFILE to err when err is EMFILE (this
// process has no descriptor left), so that the operator sees which limit to
// raise: "... too many open files (RLIMIT_NOFILE=64): raise ...". Other
// errors are returned as they are.
func explainFDLimit(err error) error {
	if !errors.Is(err, syscall.EMFILE) {
		return err
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil {
		return err
	}
	return &limitError{err: err, cur: lim.Cur}
}

// limitError is an EMFILE failure with the limit that caused it.
type limitError struct {
	err error
	cur uint64
}

func (e *limitError) Error() string {
	return fmt.Sprintf("%v (RLIMIT_NOFILE=%d): raise rpwrap's limit on open files (LimitNOFILE= in its unit, ulimit -n, or prlimit --nofile)", e.err, e.cur)
}

func (e *limitError) Unwrap() error { return e.err }
