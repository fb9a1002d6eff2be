//go:build linux

package fleet

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

const fleetSize = 3

// TestFleetRollout builds a fleet of three hosts (network namespaces, each
// with its own address, sshd and rpwrap running release v1) behind HAProxy
// in a fourth, puts it under load from outside, and runs rollout.yml twice
// with ansible-playbook over ssh: a good release v2 must reach every host,
// and a bad v3 (it exits at start) must stop at the first host, which rolls
// back and keeps v2 with the hosts after it. Not one request may fail
// end to end, through either rollout.
func TestFleetRollout(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"ip", "ansible-playbook", "/usr/sbin/sshd", "ssh-keygen", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.SkipOrFail(t, tool+" not installed (apt-get install iproute2 ansible openssh-server haproxy)")
		}
	}
	f := &fleet{dir: t.TempDir()}
	builds := f.build(t)
	if _, err := os.Stat("/run/sshd"); os.IsNotExist(err) { // sshd's privilege separation directory
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove("/run/sshd") })
	}
	f.key = filepath.Join(f.dir, "id_ed25519")
	keygen(t, f.key)
	f.net = newNetwork(t, fleetSize)
	for i := 1; i <= fleetSize; i++ {
		h := &host{name: fmt.Sprintf("h%d", i), ns: f.net.hostNS(i), addr: f.net.hostAddr(i), dir: filepath.Join(f.dir, fmt.Sprintf("h%d", i))}
		if err := os.Mkdir(h.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		copyFile(t, builds["v1"], h.serverPath())
		f.startSSHD(t, h)
		if i == fleetSize {
			f.startRpwrap(t, h, "--stop-delay", stopDelay.String())
		} else {
			f.startRpwrap(t, h)
		}
		f.hosts = append(f.hosts, h)
	}
	f.startHAProxy(t)
	cfg := f.writeAnsibleSetup(t)

	l := startLoad(f.lbURL(), 3)
	defer l.stop()
	time.Sleep(time.Second)

	t.Log("== rollout of a good release, v2")
	good := f.runPlaybook(t, cfg, builds["v2"])
	time.Sleep(time.Second)
	goodEnd := time.Now()
	if good.exit != 0 {
		t.Errorf("good release: ansible-playbook exit %d; want 0", good.exit)
	}
	if strings.Join(good.order, " ") != "h1 h2 h3" {
		t.Errorf("good release: hosts in the order %v; want h1 h2 h3, one at a time", good.order)
	}
	for _, h := range f.hosts {
		f.expectServes(t, h, "v2", builds["v2"])
	}

	t.Log("== rollout of a bad release, v3, that exits at start")
	bad := f.runPlaybook(t, cfg, builds["v3-exit"])
	time.Sleep(time.Second)
	badEnd := time.Now()
	if bad.exit != 2 { // ansible-playbook: 2 = a host failed
		t.Errorf("bad release: ansible-playbook exit %d; want 2 (the first host failed)", bad.exit)
	}
	if strings.Join(bad.order, " ") != "h1" {
		t.Errorf("bad release: reached %v; want h1 only", bad.order)
	}
	for _, want := range []string{"rolled back", "The rollout stops here"} {
		if !strings.Contains(bad.output, want) {
			t.Errorf("bad release: ansible's output lacks %q", want)
		}
	}
	for _, h := range f.hosts {
		f.expectServes(t, h, "v2", builds["v2"])
	}

	t.Logf("== %s taken out of the pool: SIGTERM to its rpwrap, which has --stop-delay %v", f.hosts[2].name, stopDelay)
	delayed := f.stopHost(t, f.hosts[2])
	t.Logf("== control: %s stopped the same way, without --stop-delay", f.hosts[1].name)
	control := f.stopHost(t, f.hosts[1])

	l.stop()
	rs := l.snapshot()
	f.report(t, rs, good, bad, goodEnd, badEnd)
	f.reportStop(t, rs, delayed, control)
}

// stopDelay is the last host's --stop-delay: longer than HAProxy needs to
// see /readyz fail (fall 2 checks, inter 500ms).
const stopDelay = 3 * time.Second

// stopWindow is when a host was stopped, with a second after rpwrap exited.
type stopWindow struct {
	host     string
	from, to time.Time
	took     time.Duration
}

// stopHost sends rpwrap on h SIGTERM, as systemd or the kubelet would, and
// waits until it exits with the server's status, 0.
func (f *fleet) stopHost(t *testing.T, h *host) stopWindow {
	t.Helper()
	w := stopWindow{host: h.name, from: time.Now()}
	h.rpwrap.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.rpwrap.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: rpwrap still runs 30s after SIGTERM", h.name)
	}
	w.took = time.Since(w.from)
	if h.rpwrap.err != nil {
		t.Errorf("%s: rpwrap exited with %v after SIGTERM; want 0, the server's status", h.name, h.rpwrap.err)
	}
	time.Sleep(time.Second)
	w.to = time.Now()
	return w
}

// reportStop logs the requests and failures while each host stopped: none
// may fail with --stop-delay; without it HAProxy sends connections to the
// stopped host until its check fails, and some must fail, or the load and
// its count could not see a lost request.
func (f *fleet) reportStop(t *testing.T, rs []result, delayed, control stopWindow) {
	t.Helper()
	d := count(rs, delayed.from, delayed.to)
	c := count(rs, control.from, control.to)
	t.Logf("stop with --stop-delay %v (%s): rpwrap exited %.1fs after SIGTERM; %d requests, %d failed, by host %v",
		stopDelay, delayed.host, delayed.took.Seconds(), d.requests, d.failed, d.hosts)
	t.Logf("control, stop without --stop-delay (%s): rpwrap exited %.1fs after SIGTERM; %d requests, %d failed, by host %v",
		control.host, control.took.Seconds(), c.requests, c.failed, c.hosts)
	if d.failed != 0 {
		t.Errorf("%d of %d requests failed while %s stopped with --stop-delay; want 0: %v", d.failed, d.requests, delayed.host, d.errors)
	}
	if delayed.took < stopDelay {
		t.Errorf("%s: rpwrap exited %v after SIGTERM, before its --stop-delay %v", delayed.host, delayed.took, stopDelay)
	}
	if c.failed == 0 {
		t.Errorf("control: 0 of %d requests failed while %s stopped without --stop-delay; want some (HAProxy has no retries): the count cannot see a loss", c.requests, control.host)
	}
}

// build compiles rpwrap and the server's releases.
func (f *fleet) build(t *testing.T) map[string]string {
	t.Helper()
	f.rpwrap = filepath.Join(f.dir, "rpwrap")
	if err := testutil.GoBuild(f.rpwrap, "../../cmd/rpwrap", "CGO_ENABLED=0"); err != nil {
		t.Fatal(err)
	}
	builds := map[string]string{}
	for name, ldflags := range map[string]string{
		"v1":      "-X main.release=v1",
		"v2":      "-X main.release=v2",
		"v3-exit": "-X main.release=v3 -X main.mode=exit",
	} {
		out := filepath.Join(f.dir, "release-"+name, "server")
		if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("go", "build", "-ldflags", "-s -w "+ldflags, "-o", out, "./testdata/fleetserver")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, b)
		}
		builds[name] = out
	}
	return builds
}

// expectServes checks that h's server binary is want's and that h, asked
// directly, answers with release.
func (f *fleet) expectServes(t *testing.T, h *host, release, want string) {
	t.Helper()
	got, err1 := os.ReadFile(h.serverPath())
	exp, err2 := os.ReadFile(want)
	if err1 != nil || err2 != nil || !bytes.Equal(got, exp) {
		t.Errorf("%s: %s is not release %s's binary (%v %v)", h.name, h.serverPath(), release, err1, err2)
	}
	body, err := httpGet("http://" + h.addr + ":" + serverPort + "/")
	if err != nil || !strings.HasPrefix(body, "fleetserver "+release+" ") {
		t.Errorf("%s answers %q (%v); want release %s", h.name, body, err, release)
	}
	if h.rpwrap.exited() {
		t.Errorf("%s: rpwrap exited: %v", h.name, h.rpwrap.err)
	}
}

// report logs requests, failures and duration per host and per rollout,
// and fails on any failed request.
func (f *fleet) report(t *testing.T, rs []result, good, bad *rollout, goodEnd, badEnd time.Time) {
	t.Helper()
	all := count(rs, time.Time{}, badEnd)
	t.Logf("load until the end of the rollouts: %d requests through HAProxy, %d failed; by release %v; by host %v", all.requests, all.failed, all.releases, all.hosts)
	for _, ro := range []struct {
		name string
		r    *rollout
		end  time.Time
	}{{"good release v2", good, goodEnd}, {"bad release v3", bad, badEnd}} {
		if len(ro.r.order) == 0 {
			continue
		}
		first := ro.r.start[ro.r.order[0]]
		last := ro.r.end[ro.r.order[len(ro.r.order)-1]]
		for _, h := range ro.r.order {
			c := count(rs, ro.r.start[h], ro.r.end[h])
			t.Logf("%s, host %s: rollout %.1fs, %d requests, %d failed, by release %v",
				ro.name, h, ro.r.end[h].Sub(ro.r.start[h]).Seconds(), c.requests, c.failed, c.releases)
		}
		c := count(rs, first, last)
		t.Logf("%s: %d hosts in %.1fs, %d requests, %d failed", ro.name, len(ro.r.order), last.Sub(first).Seconds(), c.requests, c.failed)
		after := count(rs, last.Add(500*time.Millisecond), ro.end)
		if after.requests == 0 || after.releases["v2"] != after.requests {
			t.Errorf("after the %s: releases served %v of %d requests; want v2 only", ro.name, after.releases, after.requests)
		}
	}
	if all.failed != 0 {
		t.Errorf("%d of %d requests failed; want 0: %v", all.failed, all.requests, all.errors)
	}
	if len(all.hosts) != fleetSize {
		t.Errorf("HAProxy answered from %v; want every host", all.hosts)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
}
