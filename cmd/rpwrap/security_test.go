//go:build linux

package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/testutil"
)

const nobody = 65534

// The control socket is mode 0600, and a client running as another user
// is refused: without privileges by the file mode (connect: permission
// denied), and with CAP_DAC_OVERRIDE, which passes the file mode, by
// rpwrap's SO_PEERCRED check. Neither restarts anything.
func TestControlSocketRefusesOtherUsers(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify"})
	if fi, err := os.Stat(w.control); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("control socket %s: %v, %v; want a socket of mode 0600", w.control, fi.Mode(), err)
	}
	exe := publicCopy(t)
	ctl := func(caps []uintptr) (string, int) {
		cmd := exec.Command(exe, "ctl", "--control", w.control, "restart")
		cmd.Env = append(os.Environ(), asRpwrap+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}, AmbientCaps: caps}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Run()
		return out.String(), cmd.ProcessState.ExitCode()
	}
	if out, code := ctl(nil); code != 1 || !strings.Contains(out, "permission denied") {
		t.Errorf("ctl restart as nobody: exit %d, %q; want 1 and permission denied (file mode)", code, out)
	}
	want := "permission denied: uid 65534 may not control this rpwrap"
	if out, code := ctl([]uintptr{unix.CAP_DAC_OVERRIDE}); code != 1 || !strings.Contains(out, want) {
		t.Errorf("ctl restart as nobody with CAP_DAC_OVERRIDE: exit %d, %q; want 1 and %q (SO_PEERCRED)", code, out, want)
	}
	if st := w.status(); st.Restarts != 0 || st.RolledBack != 0 || len(st.Generations) != 1 {
		t.Errorf("after refused requests: %+v, want no restart", st)
	}
}

// A process of the same user that binds the same address with
// SO_REUSEPORT joins the group. With the eBPF selector it gets no
// connection, before, during and after restarts (the selector picks from
// its map, never by group index). With the classic selector rpwrap
// mirrors the group's index order, which the intruder shifts: the count is
// logged here and documented in the README.
func TestSameUserReuseportIntruderGetsNoConnection(t *testing.T) {
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", sel})
			var stolen atomic.Int64
			intruder := listenReuseport(t, w.addr)
			go serveCounting(intruder, &stolen)
			const restarts = 3
			res := underLoad(t, w, 4, func(load *loadgen.Load) {
				for i := 0; i < restarts; i++ {
					w.restart()
					waitRequests(t, load, load.Progress().Sent+100)
				}
			})
			t.Logf("%s: the intruder accepted %d of %d connections over %d restarts", sel, stolen.Load(), res.Sent, restarts)
			if sel == "ebpf" {
				requireNoLoss(t, res, 500)
				if n := stolen.Load(); n != 0 {
					t.Errorf("the intruder accepted %d connections, want 0", n)
				}
			}
		})
	}
}

// listenReuseport is a plain TCP listener with SO_REUSEPORT on addr.
func listenReuseport(t *testing.T, addr string) net.Listener {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "intruder")
	defer f.Close()
	ap, _ := net.ResolveTCPAddr("tcp4", addr)
	sa := &unix.SockaddrInet4{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To4())
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatalf("intruder bind %s: %v", addr, err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		t.Fatal(err)
	}
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// serveCounting answers every connection l accepts with a 200, so that
// load through an intruder does not fail, and counts them.
func serveCounting(l net.Listener, n *atomic.Int64) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		n.Add(1)
		go func() {
			defer c.Close()
			buf := make([]byte, 4096)
			c.Read(buf)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nintruder")
		}()
	}
}

// The server receives its listening sockets and stdio, nothing else: not
// the control socket, not a notify socket descriptor, not a BPF program or
// map, not the bind route's seccomp listener; and the successor, started
// when rpwrap holds many more descriptors, neither. The server lists the
// descriptors it inherited before the Go runtime opens any (list-fds).
func TestServerGetsOnlyItsListenersAndStdio(t *testing.T) {
	for _, route := range []string{"listen-fds", "nginx", "bind"} {
		t.Run(route, func(t *testing.T) {
			addr := freePort(t)
			dir := shortTempDir(t)
			t.Setenv(fdsDirEnv, dir)
			server := []string{testBinary(t), faultServerArg, "list-fds"}
			want := []int{0, 1, 2, 3}
			if route == "bind" {
				server = append(server, "-bind", addr)
				want = []int{0, 1, 2}
			}
			args := []string{"--listen", addr, "--pass", route, "--ready", "accept", "--selector", "ebpf", "--"}
			w := startWrapperCommand(t, append(args, server...))
			w.restart()
			listeners := listeningOn(t, addr)
			for _, gen := range []string{"1", "2"} {
				fds := parseFDListing(t, filepath.Join(dir, "fds."+gen))
				var got []int
				for fd := range fds {
					got = append(got, fd)
				}
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("generation %s holds fds %v, want %v: %v", gen, got, want, fds)
				}
				if route != "bind" && gen == "2" && !slices.Contains(listeners, strings.Trim(strings.TrimPrefix(fds[3], "socket:"), "[]")) {
					t.Errorf("generation 2's fd 3 is %s, not the socket listening on %s (%v)", fds[3], addr, listeners)
				}
			}
		})
	}
}

// parseFDListing reads list-fds output: fd -> link target.
func parseFDListing(t *testing.T, path string) map[int]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fds := map[int]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		name, target, ok := strings.Cut(line, " -> ")
		fd, err := strconv.Atoi(name)
		if !ok || err != nil {
			t.Fatalf("%s: %q", path, line)
		}
		fds[fd] = target
	}
	return fds
}

// rpwrap runs as an unprivileged user (uid 65534, no capabilities): the
// selector falls back to classic BPF, and restarts under load lose nothing.
// Its runtime directory (control and notify sockets) belongs to that user.
func TestClassicBPFRunsAsUnprivilegedUser(t *testing.T) {
	testutil.RequireRoot(t)
	exe := publicCopy(t)
	asNobody := func(cmd *exec.Cmd) {
		dir := filepath.Dir(cmd.Args[2]) // --control DIR/ctl.sock
		for _, p := range []string{dir, filepath.Join(dir, "notify.sock")} {
			if err := os.Chown(p, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
		cmd.Path = exe
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	w := startWrapperWith(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--", exe, "serve-demo"}, asNobody)
	if uid := procUID(t, w.cmd.Process.Pid); uid != "65534" {
		t.Fatalf("rpwrap runs as uid %s", uid)
	}
	if eff := capEff(t, w.cmd.Process.Pid); eff != 0 {
		t.Fatalf("rpwrap has capabilities %x", eff)
	}
	if st := w.status(); st.Selector != "cbpf" {
		t.Fatalf("selector %q as nobody, want cbpf", st.Selector)
	}
	restartsUnderLoad(t, w, 5, 500)
	if fi, err := os.Stat(w.control); err != nil || fi.Sys().(*syscall.Stat_t).Uid != nobody || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket: %v %v, want mode 0600 owned by %d", fi, err, nobody)
	}
}

// procUID is the real uid of pid (/proc/PID/status).
func procUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			return strings.Fields(v)[0]
		}
	}
	return ""
}

// Without RUNTIME_DIRECTORY and XDG_RUNTIME_DIR an unprivileged rpwrap keeps
// its sockets in $TMPDIR/rpwrap-UID, a name anyone can create first. It
// refuses that directory when another user made it, when group or others
// can write it, or when it is a symbolic link, and says which path, owner
// and mode; a --control directory gets the same check. A missing one it
// creates with mode 0700.
func TestRuntimeDirectoryOthersCanWriteIsRefused(t *testing.T) {
	testutil.RequireRoot(t)
	exe := publicCopy(t)
	const uid = 12345 // rpwrap's user here; no passwd entry needed
	tmp := shortTempDir(t)
	if err := os.Chmod(tmp, 0o1777); err != nil { // like /tmp
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "rpwrap-"+itoa(uid))
	as := func(id int, args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(id), Gid: uint32(id)}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v as uid %d: %v %s", args, id, err, out)
		}
	}
	cases := []struct {
		name    string
		prepare func()
		extra   []string
		want    []string
	}{
		{"another user's directory of mode 0777", func() { as(nobody, "mkdir", "-m", "0777", dir) }, nil,
			[]string{"runtime directory", dir, "belongs to uid 65534, not to uid 12345", "mode 0777"}},
		{"own directory of mode 0777", func() { as(uid, "mkdir", "-m", "0777", dir) }, nil,
			[]string{"runtime directory", dir, "has mode 0777", "chmod go-w " + dir}},
		{"another user's symbolic link", func() { as(nobody, "ln", "-s", filepath.Join(tmp, "elsewhere"), dir) }, nil,
			[]string{dir, "is a symbolic link (to " + filepath.Join(tmp, "elsewhere") + ")"}},
		{"shared --control directory", func() {
			as(uid, "mkdir", "-m", "0700", dir)
			as(nobody, "mkdir", "-m", "0777", filepath.Join(tmp, "shared"))
		}, []string{"--control", filepath.Join(tmp, "shared", "ctl.sock")},
			[]string{"control socket " + filepath.Join(tmp, "shared", "ctl.sock"), "belongs to uid 65534"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.RemoveAll(dir)
			os.RemoveAll(filepath.Join(tmp, "shared"))
			c.prepare()
			code, out := runAsUser(t, exe, uid, tmp, append(c.extra, "--listen", "127.0.0.1:0", "--ready", "none", "--", "/bin/true")...)
			if code != 1 {
				t.Errorf("exit %d, want 1; output %q", code, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output %q lacks %q", out, w)
				}
			}
		})
	}
	t.Run("missing directory", func(t *testing.T) {
		os.RemoveAll(dir)
		code, out := runAsUser(t, exe, uid, tmp, "--listen", "127.0.0.1:0", "--ready", "none", "--", "/bin/true")
		fi, err := os.Lstat(dir)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != uid || strings.Contains(out, "directory") {
			t.Errorf("exit %d, %s: %v %v; want a directory of mode 0700 owned by %d, accepted; output %q", code, dir, fi, err, uid, out)
		}
	})
}

// runAsUser runs exe as rpwrap with args as uid, with TMPDIR=tmp and
// neither RUNTIME_DIRECTORY nor XDG_RUNTIME_DIR, and returns its exit
// status and output.
func runAsUser(t *testing.T, exe string, uid int, tmp string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "RUNTIME_DIRECTORY" && k != "XDG_RUNTIME_DIR" && k != "TMPDIR" && k != "NOTIFY_SOCKET" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, asRpwrap+"=1", "TMPDIR="+tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(out)
}
