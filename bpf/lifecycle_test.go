//go:build linux

package bpf

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

func TestEBPFIsSupportedOnThisKernel(t *testing.T) {
	testutil.RequireRoot(t)
	if err := Supported(); err != nil {
		t.Fatalf("Supported() = %v; as root on Linux >= 5.14 the eBPF flavour must work", err)
	}
	l := listenTCP(t, "tcp4", "127.0.0.1:0")
	s, err := New(l, Auto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Flavour() != EBPF {
		t.Fatalf("New(Auto) gave %s where eBPF is supported", s.Flavour())
	}
}

// Close detaches the program and frees it and its maps while the group's
// sockets stay open; the group then spreads connections by hash.
func TestCloseFreesProgramAndMaps(t *testing.T) {
	testutil.RequireRoot(t)
	g := newGroup(t, EBPF, "tcp4", "127.0.0.1:0")
	es := g.sel.(*ebpfSelector)
	progInfo, err := es.prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	progID, _ := progInfo.ID()
	var mapIDs []ebpf.MapID
	for _, m := range []*ebpf.Map{es.sockets, es.active, es.probes} {
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		mapIDs = append(mapIDs, id)
	}
	if err := g.sel.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "program to be freed", func() bool { return !exists(ebpf.NewProgramFromID(progID)) })
	for _, id := range mapIDs {
		waitFor(t, "maps to be freed", func() bool { return !exists(ebpf.NewMapFromID(id)) })
	}
	const n = 200
	if got := dialMany(t, g.addr, n); got['A']+got['B'] != n {
		t.Fatalf("after Close clients reached %v, want %d in all", got, n)
	}
	if err := g.sel.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
	if err := g.sel.Activate(g.b); !errors.Is(err, ErrClosed) {
		t.Fatalf("Activate after Close = %v, want ErrClosed", err)
	}
}

// exists closes obj when it could be opened by ID.
func exists[T interface{ Close() error }](obj T, err error) bool {
	if err != nil {
		return false
	}
	obj.Close()
	return true
}

func TestClassicCloseDetachesTheProgram(t *testing.T) {
	testutil.RequireRoot(t)
	g := newGroup(t, CBPF, "tcp4", "127.0.0.1:0")
	if err := g.sel.Close(); err != nil {
		t.Fatal(err)
	}
	err := withFD(g.la, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	})
	if !errors.Is(err, unix.ENOENT) {
		t.Fatalf("detach after Close = %v, want ENOENT (no program left)", err)
	}
}

func TestAddRejectsSocketsOutsideTheGroup(t *testing.T) {
	testutil.RequireRoot(t)
	for _, f := range flavours {
		t.Run(string(f), func(t *testing.T) {
			l := listenTCP(t, "tcp4", "127.0.0.1:0")
			sel := newSelector(t, l, f)
			mptcp := &net.ListenConfig{}
			mptcp.SetMultipathTCP(true)
			ml, err := mptcp.Listen(context.Background(), "tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ml.Close()
			for name, c := range map[string]syscall.Conn{
				"other port":    listenTCP(t, "tcp4", "127.0.0.1:0"),
				"UDP":           listenUDP(t, "udp4", l.Addr().String()),
				"MPTCP":         ml.(*net.TCPListener),
				"no reuseport":  plainListener(t),
				"not listening": boundSocket(t, l.Addr().(*net.TCPAddr).Port),
			} {
				if slot, err := sel.Add(c); err == nil {
					t.Errorf("Add(%s) = slot %d, want an error", name, slot)
				} else {
					t.Logf("Add(%s): %v", name, err)
				}
			}
			if err := sel.Activate(7); !errors.Is(err, ErrUnknownSlot) {
				t.Errorf("Activate(unknown) = %v, want ErrUnknownSlot", err)
			}
			if err := sel.Remove(7); !errors.Is(err, ErrUnknownSlot) {
				t.Errorf("Remove(unknown) = %v, want ErrUnknownSlot", err)
			}
		})
	}
}

func plainListener(t *testing.T) *net.TCPListener {
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*net.TCPListener)
}

func boundSocket(t *testing.T, port int) syscall.Conn {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "bound socket")
	t.Cleanup(func() { f.Close() })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
		t.Fatal(err)
	}
	return f
}
