//go:build linux

package supervisor

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
)

// UDP flows (Config.UDPFlows). With the eBPF selector a UDP group keeps
// each flow on the generation whose socket received its first datagram; new
// flows go to the active generation. The drain of a replaced generation
// that serves flows (holdFlows, before the steps of drain.go) goes:
//
//  1. after the flip it keeps receiving its flows, untouched, until none of
//     them has sent a datagram for Config.UDPFlowIdle, or half of its
//     drain timeout has passed, or it exits;
//  2. then rpwrap takes its socket out of the socket map (bpf.Deselect):
//     the next datagram of each of its flows goes to the active generation,
//     and nothing more lands on the old socket;
//  3. the drain goes on as for any UDP socket: the stop signal once the
//     receive queue is empty, so no datagram dies queued, whatever the
//     server does on its stop signal.
//
// If its socket closes first (it exits or crashes), the flows find the
// slot empty and move at once.

// flowPoll is how often holdFlows reads the flow table.
const flowPoll = 50 * time.Millisecond

// keepsFlows reports whether group grp keeps UDP flows.
func keepsFlows(grp *group) bool {
	_, ok := bpf.FlowCounts(grp.sel)
	return ok
}

// holdFlows lets g, replaced at tf, serve its UDP flows until they are idle
// (step 1 above), then moves them to the active generation. It reports
// false when the drain was told to end meanwhile.
func (s *Supervisor) holdFlows(g *generation, tf, deadline time.Time) bool {
	var held []int
	for i, grp := range s.groups {
		if i < len(g.slots) && keepsFlows(grp) && g.listeners[i].Inode() != 0 {
			held = append(held, i)
		}
	}
	if len(held) == 0 {
		return true
	}
	until := tf.Add(deadline.Sub(tf) / 2)
	tick := time.NewTicker(flowPoll)
	defer tick.Stop()
	for !s.flowsIdle(g, held) {
		if time.Now().After(until) {
			g.log.Warn("its UDP flows are still active at half its drain timeout: moving them to the active generation", "drain_timeout", s.cfg.DrainTimeout, "udp_flow_idle", s.cfg.UDPFlowIdle)
			break
		}
		select {
		case <-g.stopNow:
			s.moveFlows(g, held)
			s.readQueued(g)
			return false
		case <-g.done:
			return true
		case <-tick.C:
		}
	}
	s.moveFlows(g, held)
	return true
}

// readQueued gives g, told to stop early, up to Config.DrainStall to read
// the datagrams that reached it before its flows moved.
func (s *Supervisor) readQueued(g *generation) {
	for end := time.Now().Add(s.cfg.DrainStall); queued(g) > 0 && !g.exited() && time.Now().Before(end); {
		time.Sleep(drainPoll) // the kernel gives no event for an emptied queue
	}
}

// flowsIdle reports whether no flow of g in the groups held has sent a
// datagram for Config.UDPFlowIdle.
func (s *Supervisor) flowsIdle(g *generation, held []int) bool {
	for _, i := range held {
		idle, ok := bpf.FlowIdle(s.groups[i].sel, g.slots[i])
		if ok && idle < s.cfg.UDPFlowIdle {
			return false
		}
	}
	return true
}

// moveFlows takes g's sockets in the groups held out of their socket maps.
func (s *Supervisor) moveFlows(g *generation, held []int) {
	for _, i := range held {
		counts, _ := bpf.FlowCounts(s.groups[i].sel)
		n := counts[g.slots[i]]
		if err := bpf.Deselect(s.groups[i].sel, g.slots[i]); err != nil {
			g.log.Error("cannot move its UDP flows: they stay with it until it closes its socket", "listen", s.groups[i].spec, "err", err)
			continue
		}
		if n > 0 {
			g.log.Info("moved its UDP flows to the active generation", "listen", s.groups[i].spec, "flows", n)
		}
	}
}

// quicServerID is the QUIC server id of generation n: 1..255, in turn.
func quicServerID(n int) uint8 { return uint8((n-1)%bpf.MaxServerID + 1) }

// routeQUIC routes generation n's QUIC connection IDs to its slot in grp,
// when grp routes QUIC.
func routeQUIC(grp *group, n int, slot bpf.Slot) error {
	if !bpf.RoutesQUIC(grp.sel) {
		return nil
	}
	return bpf.SetServerID(grp.sel, quicServerID(n), slot)
}

// quicEnv is the variable that tells generation n its QUIC server id, or
// nothing when no group routes QUIC.
func (s *Supervisor) quicEnv(n int) []string {
	for _, grp := range s.groups {
		if bpf.RoutesQUIC(grp.sel) {
			return []string{"RPWRAP_QUIC_SERVER_ID=" + strconv.Itoa(int(quicServerID(n)))}
		}
	}
	return nil
}

// flowCounts returns, for each of gens, how many UDP flows each of its
// sockets serves, in --listen order (0 for a TCP group), or nil when no
// group keeps flows.
func (s *Supervisor) flowCounts(gens []*generation) [][]int {
	counts := make([]map[bpf.Slot]int, len(s.groups))
	any := false
	for i, grp := range s.groups {
		if c, ok := bpf.FlowCounts(grp.sel); ok {
			counts[i], any = c, true
		}
	}
	if !any {
		return nil
	}
	out := make([][]int, len(gens))
	for j, g := range gens {
		out[j] = make([]int, len(s.groups))
		for i := range s.groups {
			if i < len(g.slots) && counts[i] != nil {
				out[j][i] = counts[i][g.slots[i]]
			}
		}
	}
	return out
}

// writeFlows prints the UDP flows of each generation, when any group keeps
// flows.
func writeFlows(w io.Writer, gens []GenerationStatus) {
	for _, g := range gens {
		if g.Flows != nil {
			fmt.Fprintf(w, "generation %d UDP flows: %v (per listener)\n", g.Generation, g.Flows)
		}
	}
}
