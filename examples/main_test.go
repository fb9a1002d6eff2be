//go:build linux

package examples

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
	"golang.org/x/sys/unix"
)

// rpwrapBin is the rpwrap binary built for this run by TestMain.
var rpwrapBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rpwrap-examples")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	rpwrapBin = filepath.Join(dir, "rpwrap")
	if err := testutil.GoBuild(rpwrapBin, "../cmd/rpwrap"); err != nil {
		fmt.Fprintf(os.Stderr, "build rpwrap: %v\n", err)
		return 1
	}
	// Server processes orphaned by a dying rpwrap come to us, not to init:
	// the leak check then sees them as children, and cleanups kill them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "become child subreaper: %v\n", err)
		return 1
	}
	return testutil.VerifyNoLeaks(m)
}
