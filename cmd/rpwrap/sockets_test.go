//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/supervisor"
	"golang.org/x/sys/unix"
)

func (w *wrapper) sockets() supervisor.Sockets {
	w.t.Helper()
	resp := w.call("sockets")
	if resp.Sockets == nil {
		w.t.Fatalf("ctl sockets: %+v", resp)
	}
	return *resp.Sockets
}

// serverSocket is the socket bound to addr that process pid holds, taken
// with pidfd_getfd(2) into this process: the kernel's own view, read
// without rpwrap. The caller closes the returned fd.
func serverSocket(t *testing.T, pid int, addr netip.AddrPort) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(pidfd)
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		link, _ := os.Readlink(filepath.Join(dir, e.Name()))
		n, _ := strconv.Atoi(e.Name())
		if !strings.HasPrefix(link, "socket:") {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if err != nil {
			continue // closed meanwhile
		}
		if sa, err := unix.Getsockname(fd); err == nil && sockaddrPort(sa) == addr.Port() {
			if typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); typ == unix.SOCK_STREAM {
				return fd
			}
		}
		unix.Close(fd)
	}
	t.Fatalf("pid %d holds no TCP socket on %s", pid, addr)
	return -1
}

func sockaddrPort(sa unix.Sockaddr) uint16 {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(sa.Port)
	case *unix.SockaddrInet6:
		return uint16(sa.Port)
	}
	return 0
}

// kernelOptions reads fd's options the way an operator would with
// getsockopt, field by field, in the names of the JSON.
func kernelOptions(t *testing.T, fd int, v6 bool) map[string]int {
	t.Helper()
	get := func(level, opt int) int {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			t.Fatalf("getsockopt %d/%d: %v", level, opt, err)
		}
		return v
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		t.Fatal(err)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	m := map[string]int{
		"SO_REUSEPORT": get(unix.SOL_SOCKET, unix.SO_REUSEPORT), "SO_REUSEADDR": get(unix.SOL_SOCKET, unix.SO_REUSEADDR),
		"TCP_DEFER_ACCEPT": get(unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT), "TCP_FASTOPEN": get(unix.IPPROTO_TCP, unix.TCP_FASTOPEN),
		"SO_RCVBUF": get(unix.SOL_SOCKET, unix.SO_RCVBUF), "SO_SNDBUF": get(unix.SOL_SOCKET, unix.SO_SNDBUF),
		"O_NONBLOCK": b01(flags&unix.O_NONBLOCK != 0), "backlog": int(info.Sacked), "queued": int(info.Unacked), "inode": int(st.Ino),
	}
	if v6 {
		m["IPV6_V6ONLY"] = get(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
	}
	return m
}

// viewOptions is the same map from what ctl sockets reported.
func viewOptions(o *fdpass.SocketOptions) map[string]int {
	m := map[string]int{
		"SO_REUSEPORT": b01(o.ReusePort), "SO_REUSEADDR": b01(o.ReuseAddr), "TCP_DEFER_ACCEPT": *o.DeferAccept,
		"TCP_FASTOPEN": *o.FastOpen, "SO_RCVBUF": o.RcvBuf, "SO_SNDBUF": o.SndBuf, "O_NONBLOCK": b01(o.NonBlock),
		"backlog": int(*o.Backlog), "queued": int(*o.Queued), "inode": int(o.Inode),
	}
	if o.V6Only != nil {
		m["IPV6_V6ONLY"] = b01(*o.V6Only)
	}
	return m
}

func b01(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ctl sockets reports, for each listener and generation, what getsockopt
// on the server's own socket reads: SO_REUSEPORT, the TCP_DEFER_ACCEPT the
// server set on its IPv6 listener (and not on the IPv4 one), IPV6_V6ONLY,
// the --backlog, the buffers, O_NONBLOCK and the inode; the active slot is
// the active generation's, and the eBPF program id names rpwrap's program.
func TestCtlSocketsMatchesTheKernel(t *testing.T) {
	const backlog = 77
	for _, sel := range []string{"ebpf", "cbpf"} {
		t.Run(sel, func(t *testing.T) {
			w := startWrapperCommand(t, []string{"--listen", "[::1]:0", "--listen", "127.0.0.1:0", "--backlog", strconv.Itoa(backlog),
				"--selector", sel, "--ready", "notify", "--", testBinary(t), faultServerArg, "defer-accept", "0s"})
			checkSocketsView(t, w, sel, 1, backlog)
			w.restart()
			checkSocketsView(t, w, sel, 2, backlog)
		})
	}
}

// checkSocketsView checks ctl sockets with the active generation gen alone.
func checkSocketsView(t *testing.T, w *wrapper, sel string, gen, backlog int) {
	t.Helper()
	st, v := w.status(), w.sockets()
	if len(v.Listeners) != 2 || v.Listeners[0].Listen != st.Listeners[0] || v.Listeners[1].Listen != st.Listeners[1] {
		t.Fatalf("sockets view listeners %+v, want %v in --listen order", v.Listeners, st.Listeners)
	}
	for i, l := range v.Listeners {
		if len(l.Generations) != 1 || l.Generations[0].Generation != gen || l.Generations[0].Options == nil {
			t.Fatalf("listener %s: generations %+v, want generation %d alone", l.Listen, l.Generations, gen)
		}
		g := l.Generations[0]
		if g.State != supervisor.StateActive || g.Slot == nil || !g.Active || *g.Slot != l.ActiveSlot {
			t.Errorf("listener %s: generation %d %s slot %v active %v, active slot %d", l.Listen, gen, g.State, g.Slot, g.Active, l.ActiveSlot)
		}
		checkProgram(t, l, sel)
		spec, err := fdpass.ParseSpec(l.Listen)
		if err != nil {
			t.Fatal(err)
		}
		fd := serverSocket(t, g.Pid, spec.Addr)
		kernel := kernelOptions(t, fd, spec.Addr.Addr().Is6())
		unix.Close(fd)
		got := viewOptions(g.Options)
		t.Logf("generation %d %s: view %v", gen, l.Listen, g.Options)
		if fmt.Sprint(got) != fmt.Sprint(kernel) {
			t.Errorf("generation %d %s:\nctl sockets %v\nkernel      %v", gen, l.Listen, got, kernel)
		}
		wantDefer := i == 0 // the server sets it on fd 3, the first listener
		if (kernel["TCP_DEFER_ACCEPT"] > 0) != wantDefer || kernel["SO_REUSEPORT"] != 1 || kernel["backlog"] != backlog {
			t.Errorf("generation %d %s: kernel reads %v; want TCP_DEFER_ACCEPT set %v, SO_REUSEPORT 1, backlog %d", gen, l.Listen, kernel, wantDefer, backlog)
		}
		if _, has := got["IPV6_V6ONLY"]; has != spec.Addr.Addr().Is6() {
			t.Errorf("%s: IPV6_V6ONLY reported %v", l.Listen, has)
		}
	}
}

func checkProgram(t *testing.T, l supervisor.ListenerSocket, sel string) {
	t.Helper()
	if l.Selector != sel {
		t.Errorf("%s: selector %s, want %s", l.Listen, l.Selector, sel)
	}
	if sel == "cbpf" {
		if l.Program != "cbpf (classic, no id)" || l.ProgramID != 0 {
			t.Errorf("%s: program %q id %d", l.Listen, l.Program, l.ProgramID)
		}
		return
	}
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(l.ProgramID))
	if err != nil {
		t.Fatalf("%s: program id %d: %v", l.Listen, l.ProgramID, err)
	}
	defer prog.Close()
	if info, err := prog.Info(); err != nil || info.Name != "rpwrap_select" {
		t.Errorf("%s: program id %d is not rpwrap's selector: %+v %v", l.Listen, l.ProgramID, info, err)
	}
}

// The text of ctl sockets names each listener, its selector and each
// generation's slot and socket.
func TestCtlSocketsText(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--listen", "udp://127.0.0.1:0", "--selector", "cbpf"})
	code, out, errOut := runCLI(t, nil, "ctl", "--control", w.control, "sockets")
	if code != 0 {
		t.Fatalf("ctl sockets: exit %d, %s", code, errOut)
	}
	t.Logf("ctl sockets:\n%s", out)
	st := w.status()
	for _, want := range []string{
		st.Listeners[0] + "  selector cbpf (classic, no id), active slot 0\n",
		st.Listeners[1] + "  selector cbpf (classic, no id), active slot 0\n",
		fmt.Sprintf("  generation 1 (pid %d, active), slot 0 (active), socket:[", st.Generations[0].Pid),
		"    SO_REUSEPORT=1 SO_REUSEADDR=1 TCP_DEFER_ACCEPT=0 TCP_FASTOPEN=0 backlog=4096 queued=0 SO_RCVBUF=",
		"    SO_REUSEPORT=1 SO_REUSEADDR=0 SO_RCVBUF=",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ctl sockets lacks %q:\n%s", want, out)
		}
	}
}

// ctl status names rpwrap (pid, version, executable) and, per generation,
// the server binary it was started from: a restart after the binary was
// replaced shows the new file's inode and mtime, one before shows the old.
func TestCtlStatusShowsWhichBinaryEachGenerationRuns(t *testing.T) {
	bin := filepath.Join(shortTempDir(t), "server")
	copyFile(t, testBinary(t), bin)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--stop-signal", "INT", "--", bin, "serve-demo"})
	st := w.status()
	if p := st.Rpwrap; p == nil || p.Pid != w.cmd.Process.Pid || p.Version != version || p.Executable != testBinary(t) {
		t.Errorf("status rpwrap %+v, want pid %d, version %s, executable %s", p, w.cmd.Process.Pid, version, testBinary(t))
	}
	if c := st.Config; c == nil || c.StopSignal != "INT" || c.Route != "listen-fds" || c.Path != bin || c.Backlog != 4096 {
		t.Errorf("status config %+v", c)
	}
	first := fileIdentity(t, bin)
	w.restart()
	if g := w.status().Generations; len(g) != 1 || g[0].Binary.Inode != first.Ino || g[0].Binary.Path != bin {
		t.Errorf("generation 2, started before the binary was replaced: %+v, want %s inode %d", g, bin, first.Ino)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	copyFile(t, testBinary(t), bin+".new")
	if err := os.Chtimes(bin+".new", old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	second := fileIdentity(t, bin)
	w.restart()
	st = w.status()
	if len(st.Generations) != 1 || st.Generations[0].Generation != 3 {
		t.Fatalf("generations %+v, want 3 alone", st.Generations)
	}
	if got := st.Generations[0].Binary; got.Inode != second.Ino || got.ModTime == nil || !got.ModTime.Equal(old) {
		t.Errorf("generation 3 binary %+v, want inode %d (was %d) and mtime %s", got, second.Ino, first.Ino, old)
	}
	code, out, _ := runCLI(t, nil, "ctl", "--control", w.control, "status")
	t.Logf("ctl status:\n%s", out)
	for _, want := range []string{
		fmt.Sprintf("rpwrap:    pid %d, version %s, %s\n", w.cmd.Process.Pid, version, testBinary(t)),
		fmt.Sprintf("generation 3 binary: %s (dev %d:%d, inode %d, mtime %s)\n", bin, unix.Major(second.Dev), unix.Minor(second.Dev), second.Ino, old.Local().Format(time.RFC3339)),
		"stop:      SIGINT, SIGKILL after 30s",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("ctl status (exit %d) lacks %q:\n%s", code, want, out)
		}
	}
}

// fileIdentity stats path.
func fileIdentity(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
