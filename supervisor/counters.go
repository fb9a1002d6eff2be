//go:build linux

package supervisor

import (
	"slices"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/procfs"
)

// What the data path tells per generation: the eBPF program's counters of
// the connections (TCP) and datagrams (UDP) it gave each generation's
// sockets (bpf.Counts), and the established connections its processes hold.
// A generation's counts are read from its slots while rpwrap holds its
// sockets; when it lets go of one (the slot may be reused) they are kept
// in Supervisor.finished, for the last finishedSize generations.

// finishedSize is how many generations' counts are kept once they let go
// of their sockets: the rpwrap_steered_total series of older ones end.
const finishedSize = 32

// finishedCounts are the final counts of a generation, per listener in
// --listen order; a listener whose socket it still holds has ok false.
type finishedCounts struct {
	n      int
	counts []bpf.Counts
	ok     []bool
}

// CountersUnavailable is Status.CountersNote under cBPF.
const CountersUnavailable = "cbpf: the classic selector has no maps, so nothing counts per socket what it selected: " +
	"connections and datagrams per generation, probes and fallbacks cannot be shown (rpwrap_steered_total is absent); " +
	"the kernel's own counters (kernel) and the accept queues are"

// KernelCounters are the network namespace's TcpExt counters since boot
// (/proc/net/netstat; nstat -az shows them too).
type KernelCounters struct {
	ListenOverflows      uint64 `json:"listen_overflows"`
	ListenDrops          uint64 `json:"listen_drops"`
	TCPMigrateReqSuccess uint64 `json:"tcp_migrate_req_success"`
	TCPMigrateReqFailure uint64 `json:"tcp_migrate_req_failure"`
}

// kernelCounters reads them; nil when /proc/net/netstat cannot be read.
func kernelCounters() *KernelCounters {
	ext, err := procfs.ReadTCPExt()
	if err != nil {
		return nil
	}
	return &KernelCounters{ext.ListenOverflows, ext.ListenDrops, ext.TCPMigrateReqSuccess, ext.TCPMigrateReqFailure}
}

// liveCounts reads every group's counters: per group, by slot; nil for a
// group whose selector keeps none (cBPF) or cannot be read.
func (s *Supervisor) liveCounts() []map[bpf.Slot]bpf.Counts {
	out := make([]map[bpf.Slot]bpf.Counts, len(s.groups))
	for i, grp := range s.groups {
		if c, err := bpf.ReadCounters(grp.sel); err == nil {
			out[i] = c
		}
	}
	return out
}

// countsOf is what listener i gave g: from its slot while rpwrap holds
// the socket, else from what was kept when it let go. ok is false when
// nothing counts (cBPF).
func (s *Supervisor) countsOf(g *generation, i int, live []map[bpf.Slot]bpf.Counts) (bpf.Counts, bool) {
	s.mu.Lock()
	for _, f := range s.finished {
		if f.n == g.n && i < len(f.ok) && f.ok[i] {
			s.mu.Unlock()
			return f.counts[i], true
		}
	}
	s.mu.Unlock()
	if i >= len(g.slots) || live[i] == nil || g.listeners[i].Inode() == 0 {
		return bpf.Counts{}, false
	}
	c, ok := live[i][g.slots[i]]
	return minus(c, g.countBase, i), ok
}

// minus subtracts base[i], what the slot had counted for the generations
// whose sockets g inherited (a respawn).
func minus(c bpf.Counts, base []bpf.Counts, i int) bpf.Counts {
	if i >= len(base) {
		return c
	}
	b := base[i]
	return bpf.Counts{Probe: c.Probe - b.Probe, Active: c.Active - b.Active, Scan: c.Scan - b.Scan, Migrated: c.Migrated - b.Migrated,
		Stray: c.Stray - b.Stray}
}

// keepCounts records what listener i gave g, read from its slot before
// the slot is freed (its socket is closed: nothing is selected there any
// more) or passed on to a respawned generation.
func (s *Supervisor) keepCounts(g *generation, i int) {
	grp := s.groups[i]
	live, err := bpf.ReadCounters(grp.sel)
	if err != nil || i >= len(g.slots) {
		return
	}
	c, ok := live[g.slots[i]]
	if !ok {
		return
	}
	c = minus(c, g.countBase, i)
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.finishedLocked(g.n)
	f.counts[i], f.ok[i] = c, true
}

// finishedLocked returns g's entry, adding it (and dropping the oldest
// past finishedSize) when there is none.
func (s *Supervisor) finishedLocked(n int) *finishedCounts {
	for _, f := range s.finished {
		if f.n == n {
			return f
		}
	}
	f := &finishedCounts{n: n, counts: make([]bpf.Counts, len(s.groups)), ok: make([]bool, len(s.groups))}
	s.finished = append(s.finished, f)
	if len(s.finished) > finishedSize {
		s.finished = s.finished[len(s.finished)-finishedSize:]
	}
	return f
}

// inherit is called by a respawn before ng is published: ng serves on the
// sockets of dead, whose counts end here and are where ng's begin.
func (s *Supervisor) inherit(dead, ng *generation) {
	ng.countBase = make([]bpf.Counts, len(s.groups))
	for i := range s.groups {
		s.keepCounts(dead, i)
		live, err := bpf.ReadCounters(s.groups[i].sel)
		if err == nil && i < len(ng.slots) {
			ng.countBase[i] = live[ng.slots[i]]
		}
	}
}

// established counts, per listener, the established connections that
// the processes of the generation whose main process is pid hold.
func established(pid int, groups []*group) []int {
	held := procfs.SocketInodes(procfs.Tree(pid))
	out := make([]int, len(groups))
	for i, grp := range groups {
		if grp.spec.Network != "tcp" {
			continue
		}
		est, err := fdpass.EstablishedInodes(grp.spec.Addr.Port())
		if err != nil {
			continue
		}
		for ino := range est {
			if held[ino] {
				out[i]++
			}
		}
	}
	return out
}

// GenerationCounts is what the eBPF selector gave one generation, per
// listener in --listen order; a listener with no count (the generation
// never had a socket there) is left zero.
type GenerationCounts struct {
	Generation int          `json:"generation"`
	Selected   []bpf.Counts `json:"selected"`
}

// steeredByGeneration collects the counts of the generations that let go
// of their sockets (the last finishedSize) and of the live ones gens, by
// generation number in ascending order; nil under cBPF.
func (s *Supervisor) steeredByGeneration(gens []*generation) []GenerationCounts {
	if s.Flavour() != bpf.EBPF {
		return nil
	}
	byGen := map[int]*GenerationCounts{}
	at := func(n int) *GenerationCounts {
		if byGen[n] == nil {
			byGen[n] = &GenerationCounts{Generation: n, Selected: make([]bpf.Counts, len(s.groups))}
		}
		return byGen[n]
	}
	s.mu.Lock()
	for _, f := range s.finished {
		for i := range f.counts {
			if f.ok[i] {
				at(f.n).Selected[i] = f.counts[i]
			}
		}
	}
	s.mu.Unlock()
	live := s.liveCounts()
	for _, g := range gens {
		for i := range g.listeners {
			if c, ok := s.countsOf(g, i, live); ok {
				at(g.n).Selected[i] = c
			}
		}
	}
	out := make([]GenerationCounts, 0, len(byGen))
	for _, gc := range byGen {
		out = append(out, *gc)
	}
	slices.SortFunc(out, func(a, b GenerationCounts) int { return a.Generation - b.Generation })
	return out
}
