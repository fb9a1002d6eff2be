//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// ebpfSelector steers by map: slot i is entry i of the socket map.
type ebpfSelector struct {
	slots
	sockets  *ebpf.Map // REUSEPORT_SOCKARRAY: slot -> socket
	active   *ebpf.Map // ARRAY, one entry: the active slot
	probes   *ebpf.Map // HASH: source port -> slot
	counters *ebpf.Map // PERCPU_ARRAY: slot*numRoutes+route -> selections (counters.go)
	canary   *ebpf.Map // ARRAY, one entry: the canary slot, its weight and counts (canary.go)
	prog     *ebpf.Program
	flow     flowMaps             // UDP flow table and QUIC server ids; none for TCP or flows off
	layout   string               // fingerprint of the program's code (see handover.go)
	presets  map[string]*ebpf.Map // maps handed over, for load to take (see handover.go)
	taken    []string             // the names of the maps load took from presets
}

// Supported reports why the EBPF flavour cannot be used here, or nil if it
// can. The error wraps ErrNotSupported and names what is missing: the
// SK_REUSEPORT program type or REUSEPORT_SOCKARRAY map (Linux 4.19), the
// SELECT_OR_MIGRATE attach type (Linux 5.14), or the permission to load BPF
// programs (CAP_BPF). The answer is computed once per process.
func Supported() error { return supported() }

var supported = sync.OnceValue(func() error {
	if err := features.HaveProgramType(ebpf.SkReuseport); err != nil {
		return fmt.Errorf("%w: SK_REUSEPORT programs: %w", ErrNotSupported, err)
	}
	if err := features.HaveMapType(ebpf.ReusePortSockArray); err != nil {
		return fmt.Errorf("%w: REUSEPORT_SOCKARRAY maps: %w", ErrNotSupported, err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "rpwrap_probe",
		Type:         ebpf.SkReuseport,
		AttachType:   ebpf.AttachSkReuseportSelectOrMigrate,
		Instructions: migrateProbe(),
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		return fmt.Errorf("%w: SK_REUSEPORT program with attach type SELECT_OR_MIGRATE (needs Linux 5.14 and CAP_BPF): %w", ErrNotSupported, err)
	}
	return prog.Close()
})

func newEBPF(first syscall.Conn, group sockInfo, flows FlowMode) (_ Selector, err error) {
	s := &ebpfSelector{slots: slots{group: group, conns: map[Slot]syscall.Conn{}}}
	if group.proto == unix.IPPROTO_UDP {
		s.flow.mode = flows
	}
	defer func() {
		if err != nil {
			s.free()
		}
	}()
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("create eBPF reuseport selector on %s: %w", group, err)
	}
	if _, err := s.Add(first); err != nil {
		return nil, err
	}
	err = withFD(first, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, s.prog.FD())
	})
	if err != nil {
		return nil, fmt.Errorf("attach eBPF program to reuseport group %s (SO_ATTACH_REUSEPORT_EBPF): %w", group, err)
	}
	return s, nil
}

// load creates the maps and the program.
func (s *ebpfSelector) load() (err error) {
	if s.sockets, err = s.newMap("rpwrap_sockets", ebpf.ReusePortSockArray, 8, MaxSlots); err != nil {
		return err
	}
	if s.active, err = s.newMap("rpwrap_active", ebpf.Array, 4, 1); err != nil {
		return err
	}
	if s.probes, err = s.newMap("rpwrap_probes", ebpf.Hash, 4, MaxProbes); err != nil {
		return err
	}
	if s.canary, err = s.newMap("rpwrap_canary", ebpf.Array, canaryValueSize, 1); err != nil {
		return err
	}
	if s.counters, err = s.newCounters(); err != nil {
		return err
	}
	if err := s.flow.load(s.mapFor); err != nil {
		return err
	}
	insns := selectorProgram(s.sockets.FD(), s.active.FD(), s.probes.FD(), s.canary.FD(), s.counters.FD(),
		s.flow.route(s.sockets.FD(), s.active.FD()))
	s.layout = layoutOf(insns)
	s.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "rpwrap_select",
		Type:         ebpf.SkReuseport,
		AttachType:   ebpf.AttachSkReuseportSelectOrMigrate,
		Instructions: insns,
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		return fmt.Errorf("load SK_REUSEPORT program: %w", err)
	}
	return nil
}

// newMap creates a map, or takes the one of that name and shape that an
// adoption handed over (see presetMap).
func (s *ebpfSelector) newMap(name string, t ebpf.MapType, valueSize, entries uint32) (*ebpf.Map, error) {
	return s.mapFor(&ebpf.MapSpec{Name: name, Type: t, KeySize: 4, ValueSize: valueSize, MaxEntries: entries})
}

func newMap(name string, t ebpf.MapType, valueSize, entries uint32) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: t, KeySize: 4, ValueSize: valueSize, MaxEntries: entries})
	if err != nil {
		return nil, fmt.Errorf("create %s map %s: %w", t, name, err)
	}
	return m, nil
}

// free closes whatever load created; Close of a nil object is a no-op.
func (s *ebpfSelector) free() error {
	return errors.Join(s.prog.Close(), s.flow.free(), s.counters.Close(), s.canary.Close(), s.probes.Close(), s.active.Close(), s.sockets.Close())
}

func (s *ebpfSelector) Flavour() Flavour { return EBPF }

func (s *ebpfSelector) Add(sock syscall.Conn) (Slot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	slot, ok := freeSlot(s.conns)
	if !ok {
		return 0, fmt.Errorf("add socket to reuseport group %s: %w: %d sockets", s.group, ErrFull, MaxSlots)
	}
	err := withFD(sock, func(fd int) error {
		if err := checkFD(fd, s.group); err != nil {
			return err
		}
		if err := s.resetCountersLocked(slot); err != nil {
			return err
		}
		return s.sockets.Update(uint32(slot), uint64(fd), ebpf.UpdateNoExist)
	})
	if err != nil {
		return 0, fmt.Errorf("add socket to reuseport group %s: %w", s.group, err)
	}
	s.conns[slot] = sock
	return slot, nil
}

// freeSlot returns the lowest slot not in use.
func freeSlot(used map[Slot]syscall.Conn) (Slot, bool) {
	for s := Slot(0); s < MaxSlots; s++ {
		if _, ok := used[s]; !ok {
			return s, true
		}
	}
	return 0, false
}

func (s *ebpfSelector) Activate(slot Slot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(slot); err != nil {
		return fmt.Errorf("activate slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	if err := s.active.Put(uint32(0), uint32(slot)); err != nil {
		return fmt.Errorf("activate slot %d of reuseport group %s: write active map: %w", slot, s.group, err)
	}
	s.cur = slot
	return nil
}

func (s *ebpfSelector) Remove(slot Slot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(slot); err != nil {
		return fmt.Errorf("remove slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	// The kernel empties the slot when the socket's last reference goes;
	// delete it anyway for a socket that is still open.
	if err := s.sockets.Delete(uint32(slot)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("remove slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	if err := s.forgetFlowsLocked(slot); err != nil {
		return fmt.Errorf("remove slot %d of reuseport group %s: %w", slot, s.group, err)
	}
	delete(s.conns, slot)
	return nil
}

func (s *ebpfSelector) SetProbe(srcPort uint16, slot Slot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(slot); err != nil {
		return fmt.Errorf("route probe port %d to slot %d of reuseport group %s: %w", srcPort, slot, s.group, err)
	}
	if err := s.probes.Put(uint32(srcPort), uint32(slot)); err != nil {
		if errors.Is(err, unix.E2BIG) {
			err = fmt.Errorf("%w: %d probe routes", ErrFull, MaxProbes)
		}
		return fmt.Errorf("route probe port %d to slot %d of reuseport group %s: %w", srcPort, slot, s.group, err)
	}
	return nil
}

func (s *ebpfSelector) ClearProbe(srcPort uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.probes.Delete(uint32(srcPort)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clear probe route of port %d in reuseport group %s: %w", srcPort, s.group, err)
	}
	return nil
}

func (s *ebpfSelector) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	return errors.Join(detachAny(s.conns), s.free())
}

// ProgramID returns the kernel's id of the selector's SK_REUSEPORT program,
// the one `bpftool prog show id N` shows. ok is false when the kernel does
// not tell it or the selector is closed.
func (s *ebpfSelector) ProgramID() (id uint32, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, false
	}
	info, err := s.prog.Info()
	if err != nil {
		return 0, false
	}
	pid, ok := info.ID()
	return uint32(pid), ok
}
