//go:build linux

package intercept

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/rpwrap/rpwrap/internal/testutil"
	"golang.org/x/sys/unix"
)

// In a container with Docker's default seccomp profile, pidfd_getfd fails
// with EPERM unless the container has CAP_SYS_PTRACE, and root lacks
// CAP_SYS_ADMIN, so the shim's seccomp(2) needs PR_SET_NO_NEW_PRIVS. The
// test binary re-runs itself that way: a filter that answers pidfd_getfd
// with EPERM as Docker's profile does, then setpriv(1) drops CAP_SYS_ADMIN
// and CAP_SYS_PTRACE from the bounding set (no_new_privs stays off, as in
// `docker run`), and the tests named below run there again. Their checks
// follow pidfdGetfdDenied.

// pidfdGetfdDenied is true in the test binary that runs under that filter.
var pidfdGetfdDenied bool

var dockerLikeTests = []string{
	"TestFirstBindOfManagedAddressGetsRpwrapsSocket",
	"TestSecondBindOfManagedAddressFailsWithEADDRINUSE",
	"TestWildcardBindOfManagedPortIsLeftToKernelAndLogged",
	"TestJVMServesOnRpwrapsIPv4SocketAfterAnIPv4MappedBind",
	"TestHAProxyServesOnRpwrapsSocket",
	"TestApacheServesOnRpwrapsSocket",
	"TestNginxServesOnRpwrapsSocket",
}

func TestBindInterceptionWorksUnderDockersDefaultSeccompProfile(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		testutil.SkipOrFail(t, "setpriv not installed (apt-get install util-linux)")
	}
	cmd := execSelf("docker-seccomp", "-test.run=^("+strings.Join(dockerLikeTests, "|")+")$", "-test.count=1", "-test.v")
	cmd.Env = append(cmd.Env, testutil.StrictEnv+"=1") // a skip there is a failure here
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tests under a Docker-like seccomp filter: %v\n%s", err, out)
	}
	for _, name := range dockerLikeTests {
		if !strings.Contains(string(out), "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass under a Docker-like seccomp filter:\n%s", name, out)
		}
	}
}

// runDockerLike installs the filter and re-executes the test binary through
// setpriv with fewer capabilities, in mode "docker".
func runDockerLike() int {
	runtime.LockOSThread()
	if err := denyPidfdGetfd(); err != nil {
		fmt.Fprintln(os.Stderr, "docker-like:", err)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "docker-like:", err)
		return 1
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		fmt.Fprintln(os.Stderr, "docker-like:", err)
		return 1
	}
	env := append(withoutVar(os.Environ(), childEnv), childEnv+"=docker")
	argv := append([]string{setpriv, "--bounding-set", "-sys_admin,-sys_ptrace", "--", exe}, os.Args[1:]...)
	err = unix.Exec(setpriv, argv, env)
	fmt.Fprintln(os.Stderr, "docker-like: exec setpriv:", err)
	return 127
}

// denyPidfdGetfd makes pidfd_getfd fail with EPERM in every thread of this
// process and in everything it executes, as Docker's default profile does.
func denyPidfdGetfd() error {
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK  = unix.BPF_RET | unix.BPF_K
	)
	filter := []unix.SockFilter{
		{Code: ldAbs, K: 4},
		{Code: jeqK, K: nativeAuditArch, Jt: 0, Jf: 3},
		{Code: ldAbs, K: 0},
		{Code: jeqK, K: unix.SYS_PIDFD_GETFD, Jt: 0, Jf: 1},
		{Code: retK, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(filter)
	if errno != 0 {
		return os.NewSyscallError("seccomp", errno)
	}
	return nil
}

// checkDockerLike verifies, in mode "docker", that the environment is what
// it claims: pidfd_getfd refused, no CAP_SYS_ADMIN, no CAP_SYS_PTRACE, no
// no_new_privs.
func checkDockerLike() error {
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	if fd, err := unix.PidfdGetfd(pidfd, 0, 0); err != unix.EPERM {
		unix.Close(fd)
		return fmt.Errorf("pidfd_getfd = %v, want EPERM", err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	var capEff uint64
	var nnp int
	for _, l := range strings.Split(string(status), "\n") {
		fmt.Sscanf(l, "CapEff: %x", &capEff)
		fmt.Sscanf(l, "NoNewPrivs: %d", &nnp)
	}
	if capEff&(1<<unix.CAP_SYS_ADMIN|1<<unix.CAP_SYS_PTRACE) != 0 || nnp != 0 {
		return fmt.Errorf("CapEff %#x NoNewPrivs %d, want neither CAP_SYS_ADMIN nor CAP_SYS_PTRACE, and no_new_privs off", capEff, nnp)
	}
	return nil
}
