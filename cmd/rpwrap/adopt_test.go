//go:build linux

package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/testutil"
)

// asSocketActivated makes cmd start the way systemd starts a service of a
// .socket unit: through the exec shim, so that LISTEN_PID is rpwrap's pid,
// with the sockets at fds 3.. and their names in LISTEN_FDNAMES.
func asSocketActivated(t *testing.T, files []*os.File, names []string) func(*exec.Cmd) {
	return func(cmd *exec.Cmd) {
		path, args, envv := fdpass.ShimCommand(cmd.Path, cmd.Args, cmd.Env, names, fdpass.ListenFDs)
		cmd.Path, cmd.Args, cmd.Env, cmd.ExtraFiles = path, args, envv, files
	}
}

// runToExit runs rpwrap once with args, its control socket in a fresh
// directory, prepare (if any) applied to the command, and returns its exit
// status and everything it wrote: for a start that must be refused.
func runToExit(t *testing.T, prepare func(*exec.Cmd), args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(testBinary(t), append([]string{"--control", shortTempDir(t) + "/ctl.sock"}, args...)...)
	cmd.Env = append(os.Environ(), asRpwrap+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if prepare != nil {
		prepare(cmd)
	}
	cmd.Run()
	return cmd.ProcessState.ExitCode(), out.String()
}

// rpwrap run from a .socket unit adopts the sockets systemd passed, by name,
// serves on them, and restarts onto new sockets in the same groups.
func TestAdoptsSocketsFromSystemd(t *testing.T) {
	testutil.RequireRoot(t)
	spec, _ := fdpass.ParseSpec("127.0.0.1:0")
	l, err := fdpass.Listen(spec, 0) // what systemd makes of ReusePort=yes
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	args := []string{"--ready", "notify", "--", testBinary(t), "serve-demo"}
	w := startWrapperWith(t, args, asSocketActivated(t, []*os.File{l.File()}, []string{"http"}))
	if st := w.status(); len(st.Listeners) != 1 || !strings.HasPrefix(st.Listeners[0], "http=") {
		t.Fatalf("listeners %v, want the socket named http", st.Listeners)
	}
	if w.addr != l.Spec().Addr.String() {
		t.Fatalf("serving %s, want systemd's %s", w.addr, l.Spec().Addr)
	}
	restartsUnderLoad(t, w, 3, 500)
	if !stillListening(t, l) {
		t.Errorf("systemd's socket no longer listens after the restarts: the next start of the service would get a dead socket")
	}
}

// stillListening reports SO_ACCEPTCONN of l.
func stillListening(t *testing.T, l *fdpass.Listener) bool {
	t.Helper()
	rc, err := l.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on int
	var gerr error
	if err := rc.Control(func(fd uintptr) { on, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return on == 1
}

// With the classic selector, sockets from systemd are refused at start,
// with the way out in the message: systemd keeps its copy, so the socket
// would stay in the group after its generation, and the classic program
// numbers the members.
func TestRefusesSystemdSocketsWithTheClassicSelector(t *testing.T) {
	testutil.RequireRoot(t)
	spec, _ := fdpass.ParseSpec("127.0.0.1:0")
	l, err := fdpass.Listen(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	code, out := runToExit(t, asSocketActivated(t, []*os.File{l.File()}, []string{"http"}), "--selector", "cbpf", "--", "/bin/true")
	if code != 1 || !strings.Contains(out, "CAP_BPF") {
		t.Errorf("exit %d, output %q; want exit 1 and advice to give CAP_BPF", code, out)
	}
	if !stillListening(t, l) {
		t.Errorf("systemd's socket no longer listens after rpwrap refused it")
	}
}

// A socket from systemd without SO_REUSEPORT cannot take part in a restart:
// rpwrap refuses it and says which unit setting fixes that.
func TestRefusesSystemdSocketWithoutReusePort(t *testing.T) {
	testutil.RequireRoot(t)
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // a plain TCP socket, as systemd makes, without ReusePort=yes
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	code, out := runToExit(t, asSocketActivated(t, []*os.File{f}, []string{"http"}), "--", "/bin/true")
	if code != 1 || !strings.Contains(out, "ReusePort=yes") {
		t.Errorf("exit %d, output %q; want exit 1 and advice to set ReusePort=yes", code, out)
	}
}
