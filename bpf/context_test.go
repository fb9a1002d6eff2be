//go:build linux

package bpf

import (
	"encoding/binary"
	"net"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

const mdLen = 16 // __u32 len in struct sk_reuseport_md

// recorderProgram stores, for the last packet it saw, the first four bytes
// of its data (key 0), data_end-data (key 1) and ctx->len (key 2).
func recorderProgram(m int) asm.Instructions {
	store := func(key int32, r asm.Register) asm.Instructions {
		return asm.Instructions{
			asm.StoreImm(asm.RFP, stackKey, int64(key), asm.Word),
			asm.LoadMapPtr(asm.R1, m),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, stackKey),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.StoreMem(asm.R0, 0, r, asm.Word),
		}
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, mdLen, asm.Word),
	}
	insns = append(insns, store(2, asm.R7)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.DWord),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R7, asm.R3),
		asm.Sub.Reg(asm.R7, asm.R2),
	)
	insns = append(insns, store(1, asm.R7)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.DWord),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 4),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R7, asm.R2, 0, asm.Word),
	)
	insns = append(insns, store(0, asm.R7)...)
	return append(insns, asm.Mov.Imm(asm.R0, skPass).WithSymbol("out"), asm.Return())
}

// record attaches the recorder to the group of sock and returns a function
// that reads what it recorded.
func record(t *testing.T, sock syscall.Conn) func() (first [4]byte, dataLen, ctxLen uint32) {
	m, err := newMap("rpwrap_record", ebpf.Array, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SkReuseport, AttachType: ebpf.AttachSkReuseportSelectOrMigrate,
		Instructions: recorderProgram(m.FD()), License: "Dual MIT/GPL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	err = withFD(sock, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, prog.FD())
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { detach(sock) })
	return func() (first [4]byte, dataLen, ctxLen uint32) {
		var v [3]uint32
		for k := range v {
			if err := m.Lookup(uint32(k), &v[k]); err != nil {
				t.Fatal(err)
			}
		}
		binary.NativeEndian.PutUint32(first[:], v[0])
		return first, v[1], v[2]
	}
}

// The program reads the probe's source port at offset 0 of the packet
// data: check on this kernel that the data of an SK_REUSEPORT context
// starts at the transport header, for a TCP SYN and a UDP datagram.
func TestContextDataStartsAtTheTransportHeader(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("tcp", func(t *testing.T) {
		l := listenTCP(t, "tcp4", "127.0.0.1:0")
		read := record(t, l)
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		first, dataLen, ctxLen := read()
		t.Logf("TCP SYN: first bytes %x, data_end-data %d, len %d", first, dataLen, ctxLen)
		checkPorts(t, first, c.LocalAddr().(*net.TCPAddr).Port, c.RemoteAddr().(*net.TCPAddr).Port)
		if dataLen < 20 || dataLen > 60 {
			t.Errorf("data_end-data = %d, want a TCP header length (20..60)", dataLen)
		}
	})
	t.Run("udp", func(t *testing.T) {
		u := listenUDP(t, "udp4", "127.0.0.1:0")
		read := record(t, u)
		c, err := net.DialUDP("udp4", nil, u.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		if _, err := u.Read(buf); err != nil {
			t.Fatal(err)
		}
		first, dataLen, ctxLen := read()
		t.Logf("UDP: first bytes %x, data_end-data %d, len %d", first, dataLen, ctxLen)
		checkPorts(t, first, c.LocalAddr().(*net.UDPAddr).Port, u.LocalAddr().(*net.UDPAddr).Port)
		if dataLen != 8+5 || ctxLen != 8+5 {
			t.Errorf("data_end-data = %d, len = %d, want %d (UDP header and payload)", dataLen, ctxLen, 8+5)
		}
	})
}

func checkPorts(t *testing.T, first [4]byte, src, dst int) {
	t.Helper()
	gotSrc, gotDst := binary.BigEndian.Uint16(first[:2]), binary.BigEndian.Uint16(first[2:])
	if int(gotSrc) != src || int(gotDst) != dst {
		t.Errorf("data starts with ports %d -> %d, want %d -> %d", gotSrc, gotDst, src, dst)
	}
}
