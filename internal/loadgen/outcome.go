package loadgen

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// outcome is how one request ended.
type outcome int

const (
	outcomeOK        outcome = iota
	outcomeRefused           // connect got ECONNREFUSED
	outcomeReset             // ECONNRESET or EPIPE
	outcomeTimeout           // Config.Timeout passed, connecting or reading
	outcomeShortRead         // the connection ended before the response did
	outcomeClosed            // a reused keep-alive connection ended before a byte of the response
	outcomeBadStatus         // a whole response, not 200
	outcomeOther             // anything else: malformed response, no route, ...
	outcomeUnsent            // open loop: due, but no client was free to send it within Config.Timeout
)

var outcomeNames = [...]string{"ok", "refused", "reset", "timeout", "short read", "closed idle", "bad status", "other", "unsent"}

func (o outcome) String() string { return outcomeNames[o] }

// requestError is how a request failed, and whether on a reused keep-alive
// connection before any byte of the response came.
type requestError struct {
	err        error
	idleClosed bool
}

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// classify maps a request's error to its outcome.
func classify(err error) outcome {
	var re *requestError
	var se statusError
	var ne net.Error
	switch {
	case err == nil:
		return outcomeOK
	case errors.As(err, &re) && re.idleClosed:
		return outcomeClosed
	case errors.Is(err, syscall.ECONNREFUSED):
		return outcomeRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return outcomeReset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return outcomeTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return outcomeShortRead
	case errors.As(err, &se):
		return outcomeBadStatus
	default:
		return outcomeOther
	}
}

// describe is err without the addresses and ports that make every message
// distinct, so that Result.Errors holds kinds of errors, not instances.
func describe(o outcome, err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return fmt.Sprintf("%v: %s: %v", o, oe.Op, oe.Err)
	}
	return fmt.Sprintf("%v: %v", o, err)
}
