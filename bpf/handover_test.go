//go:build linux

package bpf

import (
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// passed is h with every descriptor duplicated, as an exec passes them,
// and sel forgotten, as an exec leaves the old process's objects.
func passed(t *testing.T, sel Selector) Handover {
	t.Helper()
	h, err := Export(sel)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range h.Objects {
		fd, err := unix.FcntlInt(uintptr(o.FD), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		h.Objects[i].FD = fd
	}
	Forget(sel)
	return h
}

// steadily dials addr until stop is closed and counts where the
// connections went; any failure is counted too.
func steadily(addr string, stop chan struct{}) (counts func() map[byte]int64, failed *atomic.Int64) {
	var mu sync.Mutex
	got := map[byte]int64{}
	failed = &atomic.Int64{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				o := dial(addr, nil)
				mu.Lock()
				if o.err != nil || o.reset {
					failed.Add(1)
				} else {
					got[o.id]++
				}
				mu.Unlock()
			}
		})
	}
	return func() map[byte]int64 { wg.Wait(); return got }, failed
}

func handoverGroup(t *testing.T, f Flavour) (Selector, map[Slot]syscall.Conn, string) {
	a := listenTCP(t, "tcp4", "127.0.0.1:0")
	b := listenTCP(t, "tcp4", a.Addr().String())
	sel := newSelector(t, a, f)
	sb := add(t, sel, b)
	activate(t, sel, sb)
	serve(t, a, 'a')
	serve(t, b, 'b')
	return sel, map[Slot]syscall.Conn{0: a, sb: b}, a.Addr().String()
}

// Adopted by a binary with the same program, the selector keeps its
// program (same id) and maps, and steering never pauses.
func TestAdoptKeepsTheProgram(t *testing.T) {
	if err := Supported(); err != nil {
		t.Fatalf("Supported() = %v", err)
	}
	sel, conns, addr := handoverGroup(t, EBPF)
	id, _ := ProgramID(sel)
	stop := make(chan struct{})
	counts, failed := steadily(addr, stop)
	time.Sleep(50 * time.Millisecond) // connections before, during and after
	adopted, reloaded, err := Adopt(passed(t, sel), conns)
	if err != nil {
		t.Fatal(err)
	}
	defer adopted.Close()
	time.Sleep(50 * time.Millisecond)
	close(stop)
	got := counts()
	if now, _ := ProgramID(adopted); reloaded || now != id {
		t.Errorf("adopted: reloaded %v, program %d, want the same program %d", reloaded, now, id)
	}
	if failed.Load() != 0 || got['a'] != 0 || got['b'] == 0 {
		t.Fatalf("across the adoption: %d failed, %v (want all on b)", failed.Load(), got)
	}
	activate(t, adopted, 0)
	if c := dialMany(t, addr, 40); c['a'] != 40 {
		t.Fatalf("after Activate on the adopted selector: %v", c)
	}
}

// When this binary's program differs (here: a map it needs was not
// passed), Adopt loads its own program, fills its maps and attaches it,
// replacing the old one for the whole group at once: no connection is
// lost or steered elsewhere meanwhile.
func TestAdoptReplacesADifferentProgramAtOnce(t *testing.T) {
	if err := Supported(); err != nil {
		t.Fatalf("Supported() = %v", err)
	}
	for _, change := range []string{"map missing", "layout differs"} {
		t.Run(change, func(t *testing.T) {
			sel, conns, addr := handoverGroup(t, EBPF)
			id, _ := ProgramID(sel)
			h := passed(t, sel)
			if change == "map missing" {
				for i, o := range h.Objects {
					if o.Name == "rpwrap_probes" {
						unix.Close(o.FD)
						h.Objects = append(h.Objects[:i], h.Objects[i+1:]...)
						break
					}
				}
			} else {
				h.Layout = ""
			}
			stop := make(chan struct{})
			counts, failed := steadily(addr, stop)
			time.Sleep(50 * time.Millisecond)
			adopted, reloaded, err := Adopt(h, conns)
			if err != nil {
				t.Fatal(err)
			}
			defer adopted.Close()
			time.Sleep(50 * time.Millisecond)
			close(stop)
			got := counts()
			if now, _ := ProgramID(adopted); !reloaded || now == id {
				t.Errorf("adopted: reloaded %v, program %d, want a new program (old %d)", reloaded, now, id)
			}
			if failed.Load() != 0 || got['a'] != 0 || got['b'] == 0 {
				t.Fatalf("across the replacement: %d failed, %v (want all on b)", failed.Load(), got)
			}
			activate(t, adopted, 0)
			if c := dialMany(t, addr, 40); c['a'] != 40 {
				t.Fatalf("after Activate on the adopted selector: %v", c)
			}
		})
	}
}

// A classic selector is adopted from its slots and kernel order.
func TestAdoptClassic(t *testing.T) {
	sel, conns, addr := handoverGroup(t, CBPF)
	adopted, _, err := Adopt(passed(t, sel), conns)
	if err != nil {
		t.Fatal(err)
	}
	defer adopted.Close()
	if c := dialMany(t, addr, 40); c['b'] != 40 {
		t.Fatalf("after adoption: %v", c)
	}
	activate(t, adopted, 0)
	if c := dialMany(t, addr, 40); c['a'] != 40 {
		t.Fatalf("after Activate on the adopted selector: %v", c)
	}
}
