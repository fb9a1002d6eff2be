//go:build linux

package fdpass

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testEnv is an injected environment for FromSystemd, as tableflip's.
type testEnv map[string]string

func (e testEnv) sdEnv(files []*os.File) sdEnv {
	return sdEnv{
		getenv:   func(k string) string { return e[k] },
		unsetenv: func(k string) error { delete(e, k); return nil },
		getpid:   func() int { return 42 },
		files:    func() []*os.File { return files },
	}
}

func TestParseListenEnv(t *testing.T) {
	for _, tc := range []struct {
		env       testEnv
		wantNames []string
		wantErr   string
	}{
		{testEnv{}, nil, ""},
		{testEnv{"LISTEN_FDS": "2"}, nil, ""},
		{testEnv{"LISTEN_PID": "41", "LISTEN_FDS": "2"}, nil, ""},
		{testEnv{"LISTEN_PID": "x", "LISTEN_FDS": "2"}, nil, ""},
		{testEnv{"LISTEN_PID": "42", "LISTEN_FDS": "0"}, nil, ""},
		{testEnv{"LISTEN_PID": "42", "LISTEN_FDS": "2"}, []string{"LISTEN_FD_3", "LISTEN_FD_4"}, ""},
		{testEnv{"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:dns"}, []string{"http", "dns"}, ""},
		{testEnv{"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http::"}, nil, `LISTEN_FDNAMES="http::" has 3 names for LISTEN_FDS=2`},
		{testEnv{"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http"}, nil, "has 1 names for LISTEN_FDS=2"},
		{testEnv{"LISTEN_PID": "42", "LISTEN_FDS": "two"}, nil, `LISTEN_FDS="two" is not a count`},
		{testEnv{"LISTEN_PID": "42", "LISTEN_FDS": "-1"}, nil, `LISTEN_FDS="-1" is not a count`},
		{testEnv{"LISTEN_PID": "42", "LISTEN_FDS": "99999999"}, nil, "is not a count"},
	} {
		names, err := parseListenEnv(tc.env.sdEnv(nil))
		if !slices.Equal(names, tc.wantNames) || (tc.wantErr == "") != (err == nil) ||
			(err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("parseListenEnv(%v) = %q, %v; want %q, %q", tc.env, names, err, tc.wantNames, tc.wantErr)
		}
	}
}

func TestFromSystemdUnsetsVariablesWhateverHappens(t *testing.T) {
	for _, env := range []testEnv{
		{"LISTEN_PID": "41", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a", "LISTEN_PIDFDID": "7"},
		{"LISTEN_PID": "42", "LISTEN_FDS": "x", "LISTEN_FDNAMES": "a", "LISTEN_PIDFDID": "7", "PATH": "/bin"},
	} {
		if ls, _ := fromSystemd(env.sdEnv(nil)); ls != nil {
			t.Errorf("fromSystemd(%v) returned listeners", env)
		}
		if len(env) > 1 || (len(env) == 1 && env["PATH"] != "/bin") {
			t.Errorf("left %v, want only PATH kept", env)
		}
	}
}

// socketFile builds a socket with socket(2) and whatever setup does to it.
func socketFile(t *testing.T, domain, typ, proto int, setup func(fd int) error) *os.File {
	t.Helper()
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatal(err)
	}
	if err := setup(fd); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), "test socket")
}

func reusePort(fd int) error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }
func bindLoopback(fd int) error {
	return unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
}
func listenFD(fd int) error { return unix.Listen(fd, 8) }

func steps(fns ...func(int) error) func(int) error {
	return func(fd int) error {
		for _, fn := range fns {
			if err := fn(fd); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestFromSystemdChecksEverySocket(t *testing.T) {
	stream, dgram := unix.SOCK_STREAM, unix.SOCK_DGRAM
	for _, tc := range []struct {
		what    string
		file    func() *os.File
		network string // on success
		wantErr string
	}{
		{"reuseport TCP listener", func() *os.File {
			return socketFile(t, unix.AF_INET, stream, 0, steps(reusePort, bindLoopback, listenFD))
		}, "tcp", ""},
		{"reuseport bound UDP socket", func() *os.File {
			return socketFile(t, unix.AF_INET, dgram, 0, steps(reusePort, bindLoopback))
		}, "udp", ""},
		{"TCP listener without SO_REUSEPORT", func() *os.File {
			return socketFile(t, unix.AF_INET, stream, 0, steps(bindLoopback, listenFD))
		}, "", "lacks SO_REUSEPORT: add ReusePort=yes to the .socket unit"},
		{"TCP socket bound, not listening", func() *os.File {
			return socketFile(t, unix.AF_INET, stream, 0, steps(reusePort, bindLoopback))
		}, "", "is not listening: use ListenStream= in the .socket unit, and Accept=no"},
		{"MPTCP listener", func() *os.File {
			return socketFile(t, unix.AF_INET, stream, unix.IPPROTO_MPTCP, steps(reusePort, bindLoopback, listenFD))
		}, "", "is not a TCP or UDP socket (SO_TYPE 1, SO_PROTOCOL 262; MPTCP is 262)"},
		{"unbound UDP socket", func() *os.File {
			return socketFile(t, unix.AF_INET, dgram, 0, reusePort)
		}, "", "is not bound to an IP address and port"},
		{"pipe", func() *os.File {
			r, w, _ := os.Pipe()
			w.Close()
			return r
		}, "", "is not a socket"},
	} {
		f := tc.file()
		fd := f.Fd()
		env := testEnv{"LISTEN_PID": "42", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
		ls, err := fromSystemd(env.sdEnv([]*os.File{f}))
		if tc.wantErr != "" {
			want := fmt.Sprintf("socket \"http\" (fd %d) from systemd %s", fd, tc.wantErr)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("%s: %v, want %q", tc.what, err, want)
			}
			if _, statErr := f.Stat(); statErr == nil {
				t.Errorf("%s: the passed file was left open after the error", tc.what)
				f.Close()
			}
			continue
		}
		if err != nil || len(ls) != 1 || ls[0].Spec().Network != tc.network || ls[0].Spec().Name != "http" || ls[0].Spec().Addr.Port() == 0 {
			t.Errorf("%s: %v, %v", tc.what, ls, err)
		}
		for _, l := range ls {
			l.Close()
		}
	}
}

func TestFromSystemdAdoptsPassedSockets(t *testing.T) {
	web, dns := listenLoopback(t, "http=127.0.0.1:0"), listenLoopback(t, "dns=udp://[::1]:0")
	res := runAdopt(t, []string{"http", "dns"}, web.File(), dns.File())
	want := adoptResult{
		Names:     []string{"http", "dns"},
		Specs:     []string{web.Spec().String(), dns.Spec().String()},
		Inodes:    []uint64{web.Inode(), dns.Inode()},
		CloseExec: []bool{true, true},
	}
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Errorf("child adopted %+v, want %+v", res, want)
	}
}

func TestFromSystemdRejectsSocketWithoutReusePort(t *testing.T) {
	plain := socketFile(t, unix.AF_INET, unix.SOCK_STREAM, 0, steps(bindLoopback, listenFD))
	defer plain.Close()
	res := runAdopt(t, []string{"http"}, plain)
	want := `socket "http" (fd 3) from systemd lacks SO_REUSEPORT: add ReusePort=yes to the .socket unit`
	if res.Err != want || res.EnvLeft != nil {
		t.Errorf("child said %q (variables left: %v), want %q", res.Err, res.EnvLeft, want)
	}
}

// runAdopt starts the adopt role through the shim with files at fds 3...
func runAdopt(t *testing.T, names []string, files ...*os.File) adoptResult {
	t.Helper()
	cmd := shimCmd(os.Args[0], []string{"adopt", "-test.run=^$"}, append(os.Environ(), roleEnv+"=adopt"), names, ListenFDs, files...)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("adopt child: %v", err)
	}
	var res adoptResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("adopt child printed %q: %v", out.String(), err)
	}
	return res
}

func FuzzFromSystemdEnv(f *testing.F) {
	f.Add("42", "2", "http:dns")
	f.Add("42", "1", "")
	f.Add("42", "3", "a::")
	f.Add("41", "1", "x")
	f.Add("42", "+1", "x")
	f.Fuzz(func(t *testing.T, pid, fds, fdnames string) {
		env := testEnv{"LISTEN_PID": pid, "LISTEN_FDS": fds, "LISTEN_FDNAMES": fdnames}
		names, err := parseListenEnv(env.sdEnv(nil))
		if err != nil || names == nil {
			return
		}
		p, _ := strconv.Atoi(pid)
		if n, _ := strconv.Atoi(fds); p != 42 || len(names) != n {
			t.Fatalf("LISTEN_PID=%q LISTEN_FDS=%q LISTEN_FDNAMES=%q gave %d names", pid, fds, fdnames, len(names))
		}
		for _, name := range names {
			if strings.ContainsRune(name, ':') {
				t.Fatalf("name %q holds ':'", name)
			}
		}
	})
}
