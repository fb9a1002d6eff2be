//go:build linux

package bpf

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/rpwrap/rpwrap/internal/testutil"
)

// An eBPF selector names its program's kernel id, which the kernel knows
// as rpwrap_select; a cBPF one has none, and a closed one no longer.
func TestProgramIDNamesTheLoadedSelector(t *testing.T) {
	testutil.RequireRoot(t)
	for _, f := range flavours {
		t.Run(string(f), func(t *testing.T) {
			la := listenTCP(t, "tcp4", "127.0.0.1:0")
			sel, err := New(la, f)
			if err != nil {
				t.Fatal(err)
			}
			id, ok := ProgramID(sel)
			if f == CBPF {
				if ok {
					t.Errorf("cBPF selector has program id %d", id)
				}
				sel.Close()
				return
			}
			if !ok || id == 0 {
				t.Fatalf("eBPF selector: ProgramID() = %d, %v", id, ok)
			}
			prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
			if err != nil {
				t.Fatalf("program id %d: %v", id, err)
			}
			info, err := prog.Info()
			prog.Close()
			if err != nil {
				t.Fatalf("program id %d: %v", id, err)
			}
			if info.Name != "rpwrap_select" {
				t.Errorf("program id %d is %q, want rpwrap_select", id, info.Name)
			}
			sel.Close()
			if id, ok := ProgramID(sel); ok {
				t.Errorf("closed selector still names program id %d", id)
			}
		})
	}
}
