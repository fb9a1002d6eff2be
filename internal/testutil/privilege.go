//go:build linux

package testutil

import (
	"os"
	"testing"
)

// StrictEnv names the environment variable that CI sets to make every test
// that would skip for lack of privileges fail instead.
const StrictEnv = "RPWRAP_TEST_STRICT"

// Strict reports whether skips for missing privileges must be failures.
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// RequireRoot skips the test when it does not run as root, or fails it when
// StrictEnv is set (as .ci/run does), so that CI never silently skips a test
// that needs the kernel.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	SkipOrFail(tb, "test needs root")
}

// SkipOrFail skips the test with reason, or fails it under StrictEnv.
func SkipOrFail(tb testing.TB, reason string) {
	tb.Helper()
	if Strict() {
		tb.Fatalf("%s (and %s=1 forbids skipping)", reason, StrictEnv)
	}
	tb.Skip(reason)
}
