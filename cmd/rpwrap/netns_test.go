//go:build linux

package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// inNetNSEnv marks the test binary re-run in a network namespace of its own.
const inNetNSEnv = "RPWRAP_TEST_IN_NETNS"

// rerunInNetNS runs the calling test again, alone, in a copy of the test
// binary started in a new network namespace with only loopback up, and
// reports true once it has passed or failed there: the caller returns.
// In that copy it brings loopback up and reports false: the caller runs
// its body. For counts that must be exact: no other test's connection
// reaches its ports, and /proc/net/netstat counts only its own traffic.
func rerunInNetNS(t *testing.T) bool {
	t.Helper()
	testutil.RequireRoot(t)
	if os.Getenv(inNetNSEnv) == "1" {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v %s", err, out)
		}
		return false
	}
	cmd := exec.Command(testBinary(t), "-test.run", "^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), inNetNSEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	t.Logf("in a network namespace of its own:\n%s", out)
	if err != nil {
		t.Fatalf("%s failed in its network namespace: %v", t.Name(), err)
	}
	return true
}
