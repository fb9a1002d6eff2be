//go:build linux

package docker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	build := exec.Command(goTool(), "build", "-o", rpwrapBin, "../../cmd/rpwrap")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // runs in a FROM scratch image
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build static rpwrap: %v\n", err)
		return 1
	}
	defer stopStartedDaemon()
	return testutil.VerifyNoLeaks(m)
}

// goTool is the go command that runs this test.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}
