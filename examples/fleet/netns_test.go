//go:build linux

package fleet

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// network is the fleet's wiring: the balancer's namespace (lb) routes
// between this one (the client, and Ansible's controller) and one
// point-to-point veth per host. No bridge: bridged frames would cross the
// machine's own FORWARD chain, which a dockerd may have set to DROP.
//
//	root ns  10.N.0.1 ── 10.N.0.2  lb ns (HAProxy :80)
//	                     10.N.i.1 ── 10.N.i.2  host i (sshd :22, rpwrap :8080, health :8081)
type network struct {
	id    string // the prefix of every name: "fl" and 4 hex digits
	net   int    // N in 10.N.0.0/16
	hosts int
}

func (n *network) lbNS() string          { return n.id + "lb" }
func (n *network) hostNS(i int) string   { return fmt.Sprintf("%sh%d", n.id, i) }
func (n *network) lbAddr() string        { return fmt.Sprintf("10.%d.0.2", n.net) }
func (n *network) hostAddr(i int) string { return fmt.Sprintf("10.%d.%d.2", n.net, i) }
func (n *network) hostGW(i int) string   { return fmt.Sprintf("10.%d.%d.1", n.net, i) }
func (n *network) namespaces() []string {
	ns := []string{n.lbNS()}
	for i := 1; i <= n.hosts; i++ {
		ns = append(ns, n.hostNS(i))
	}
	return ns
}

// ip runs ip(8) with args and fails the test on error.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// inNS runs a command in namespace ns and fails the test on error.
func inNS(t *testing.T, ns string, args ...string) {
	t.Helper()
	ip(t, append([]string{"netns", "exec", ns}, args...)...)
}

// newNetwork creates the namespaces and links of a fleet of hosts hosts, on
// a 10.N.0.0/16 that no route of this machine uses. Cleanup removes them,
// after killing whatever still runs in them.
func newNetwork(t *testing.T, hosts int) *network {
	t.Helper()
	b := make([]byte, 2)
	rand.Read(b)
	n := &network{id: "fl" + hex.EncodeToString(b), net: freeNet(t), hosts: hosts}
	t.Cleanup(func() { n.remove(t) })
	for _, ns := range n.namespaces() {
		ip(t, "netns", "add", ns)
		inNS(t, ns, "ip", "link", "set", "lo", "up")
	}
	lb := n.lbNS()
	ip(t, "link", "add", n.id+"ca", "type", "veth", "peer", "name", n.id+"cb", "netns", lb)
	ip(t, "addr", "add", fmt.Sprintf("10.%d.0.1/30", n.net), "dev", n.id+"ca")
	ip(t, "link", "set", n.id+"ca", "up")
	inNS(t, lb, "ip", "addr", "add", n.lbAddr()+"/30", "dev", n.id+"cb")
	inNS(t, lb, "ip", "link", "set", n.id+"cb", "up")
	inNS(t, lb, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	ip(t, "route", "add", fmt.Sprintf("10.%d.0.0/16", n.net), "via", n.lbAddr(), "dev", n.id+"ca")
	for i := 1; i <= hosts; i++ {
		a, h := fmt.Sprintf("%sh%da", n.id, i), fmt.Sprintf("%sh%db", n.id, i)
		ip(t, "link", "add", a, "netns", lb, "type", "veth", "peer", "name", h, "netns", n.hostNS(i))
		inNS(t, lb, "ip", "addr", "add", n.hostGW(i)+"/30", "dev", a)
		inNS(t, lb, "ip", "link", "set", a, "up")
		inNS(t, n.hostNS(i), "ip", "addr", "add", n.hostAddr(i)+"/30", "dev", h)
		inNS(t, n.hostNS(i), "ip", "link", "set", h, "up")
		inNS(t, n.hostNS(i), "ip", "route", "add", "default", "via", n.hostGW(i))
	}
	return n
}

// freeNet picks N such that no address or route of this machine is in
// 10.N.0.0/16.
func freeNet(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route: %v\n%s", err, out)
	}
	addrs, _ := exec.Command("ip", "-4", "-o", "addr").CombinedOutput()
	used := string(out) + string(addrs)
	for range 50 {
		v, _ := rand.Int(rand.Reader, big.NewInt(150))
		n := 100 + int(v.Int64())
		if !strings.Contains(used, "10."+strconv.Itoa(n)+".") {
			return n
		}
	}
	t.Fatal("no free 10.N.0.0/16 for the fleet's network")
	return 0
}

// remove kills every process left in the fleet's namespaces and deletes
// them; the veths and the route go with them.
func (n *network) remove(t *testing.T) {
	for _, ns := range n.namespaces() {
		out, err := exec.Command("ip", "netns", "pids", ns).Output()
		if err != nil {
			continue // never created
		}
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				t.Logf("cleanup: pid %d still in namespace %s: killed", pid, ns)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	time.Sleep(100 * time.Millisecond) // the killed processes leave their namespaces
	for _, ns := range n.namespaces() {
		if err := exec.Command("ip", "netns", "del", ns).Run(); err != nil {
			if _, serr := exec.Command("ip", "netns", "pids", ns).Output(); serr == nil {
				t.Errorf("cleanup: ip netns del %s: %v", ns, err)
			}
		}
	}
	exec.Command("ip", "link", "del", n.id+"ca").Run() // gone with lb already, unless lb was never made
}
