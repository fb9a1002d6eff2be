//go:build linux

package docker

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// rpwrapBin is the static rpwrap binary built for this run by TestMain:
// it is copied into every image, and it is also the demo server
// (`rpwrap serve-demo`).
var rpwrapBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rpwrap-docker")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	rpwrapBin = filepath.Join(dir, "rpwrap")
	if err := testutil.GoBuild(rpwrapBin, "../../cmd/rpwrap", "CGO_ENABLED=0"); err != nil { // runs in a FROM scratch image
		fmt.Fprintf(os.Stderr, "build static rpwrap: %v\n", err)
		return 1
	}
	defer stopStartedDaemon()
	return testutil.VerifyNoLeaks(m)
}
