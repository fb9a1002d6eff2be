//go:build linux

package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/loadtest"
	"github.com/rpwrap/rpwrap/supervisor"
)

// eventTimeout bounds every wait for an event: generous, the machine is shared.
const eventTimeout = 60 * time.Second

// container is a running container whose ENTRYPOINT is rpwrap.
type container struct {
	t    *testing.T
	d    *daemon
	spec runSpec
	name string
	id   string
}

// runSpec says what container to run.
type runSpec struct {
	image  string
	rpwrap string   // rpwrap's path inside the image
	addr   string   // where it serves, on the host's loopback (--network host)
	path   string   // a path that answers 200
	extra  []string // docker run flags on top of the defaults
	cmd    []string // the image's CMD, if not its own
}

// startContainer runs s.image detached with the host's network and
// Docker's default capabilities and seccomp profile (plus whatever
// s.extra adds), and waits until it answers GET s.path with a 200.
// Cleanup removes it.
func startContainer(t *testing.T, d *daemon, s runSpec) *container {
	t.Helper()
	c := &container{t: t, d: d, spec: s, name: fmt.Sprintf("rpwrap-test-%d-%d", os.Getpid(), time.Now().UnixNano())}
	args := append([]string{"run", "-d", "--name", c.name, "--network", "host"}, s.extra...)
	args = append(append(args, s.image), s.cmd...)
	c.id = strings.TrimSpace(d.run(t, args...))
	t.Cleanup(func() { d.try(time.Minute, "rm", "-f", c.name) })
	c.waitServing()
	return c
}

// waitServing waits until GET spec.path answers 200, and fails the test with the
// container's log when the container exits first.
func (c *container) waitServing() {
	c.t.Helper()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for deadline := time.Now().Add(eventTimeout); ; {
		if resp, err := client.Get("http://" + c.spec.addr + c.spec.path); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if st := c.state(); st.Status != "running" {
			c.t.Fatalf("container exited (status %d) before serving on %s; its log:\n%s", st.ExitCode, c.spec.addr, c.logs())
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("container not serving on %s within %v; its log:\n%s", c.spec.addr, eventTimeout, c.logs())
		}
		time.Sleep(100 * time.Millisecond) // polling the server; bounded above
	}
}

// containerState is the part of `docker inspect` .State the tests read.
type containerState struct {
	Status   string
	Running  bool
	ExitCode int
	Pid      int
}

func (c *container) state() containerState {
	c.t.Helper()
	var st containerState
	out := c.d.run(c.t, "inspect", "--format", "{{json .State}}", c.name)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		c.t.Fatalf("docker inspect %s: %v: %q", c.name, err, out)
	}
	return st
}

// logs is the container's output: rpwrap's log and the server's.
func (c *container) logs() string {
	out, err := c.d.tryCombined(time.Minute, "logs", c.name)
	if err != nil {
		return fmt.Sprintf("(docker logs: %v)\n%s", err, out)
	}
	return out
}

// restart runs `docker exec CONTAINER rpwrap ctl --json restart` and
// requires it to succeed.
func (c *container) restart() supervisor.RestartResult {
	c.t.Helper()
	out, err := c.d.try(3*eventTimeout, "exec", c.name, c.spec.rpwrap, "ctl", "--json", "restart")
	var resp supervisor.Response
	if jerr := json.Unmarshal([]byte(out), &resp); jerr != nil {
		c.t.Fatalf("rpwrap ctl restart in %s: %v, %v; its log:\n%s", c.name, err, jerr, c.logs())
	}
	if !resp.OK || resp.Restart == nil || err != nil {
		c.t.Fatalf("rpwrap ctl restart in %s: %s (%v); its log:\n%s", c.name, resp.Error, err, c.logs())
	}
	return *resp.Restart
}

var selectorRE = regexp.MustCompile(`msg=listening .*selector=(\w+)`)

// requireSelector checks the selector that rpwrap logged at start.
func (c *container) requireSelector(want string) {
	c.t.Helper()
	m := selectorRE.FindStringSubmatch(c.logs())
	if m == nil {
		c.t.Fatalf("rpwrap logged no selector at start; its log:\n%s", c.logs())
	}
	if m[1] != want {
		c.t.Errorf("rpwrap chose the %s selector, want %s; its log:\n%s", m[1], want, c.logs())
	}
}

// loadRow is what one row measured.
type loadRow struct {
	restarts int
	res      loadgen.Result
}

// restartUnderLoad restarts the container's server n times with docker
// exec ... ctl restart under a closed-loop load from the host (clients
// workers, a new connection per request), and requires that every
// request got a whole 200.
func (c *container) restartUnderLoad(n, clients int) loadRow {
	c.t.Helper()
	load, err := loadgen.Start(context.Background(), loadgen.Config{
		Target: c.spec.addr, Path: c.spec.path, Clients: clients, Duration: 5 * time.Minute, Timeout: 10 * time.Second,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { load.Stop(); load.Wait() })
	loadtest.WaitSent(c.t, load, 100, eventTimeout)
	for i := range n {
		r := c.restart()
		if r.Generation != i+2 {
			c.t.Fatalf("restart %d made generation %d, want %d", i+1, r.Generation, i+2)
		}
		c.t.Logf("restart %d: generation %d ready in %v, flip %v, drain %v",
			i+1, r.Generation, r.Ready.Round(time.Millisecond), r.Flip, r.Drain.Round(time.Millisecond))
		loadtest.WaitSent(c.t, load, load.Progress().Sent+50, eventTimeout) // some load on every generation
	}
	loadtest.WaitSent(c.t, load, load.Progress().Sent+100, eventTimeout)
	load.Stop()
	res := load.Wait()
	loadtest.RequireNoLoss(c.t, res, int64(100+50*n+100))
	c.t.Logf("row: %d restarts, %d requests sent, %d failed", n, res.Sent, res.Failed())
	return loadRow{restarts: n, res: res}
}

var stoppedRE = regexp.MustCompile(`msg=stopped .*exit="exit status (\d+)"`)

// stop runs docker stop, requires the container's exit status to be the
// server's as rpwrap logged it (and want, unless want < 0), removes the
// container and requires that nothing of it is left: no container, no
// process on the host, the port free.
func (c *container) stop(want int) {
	c.t.Helper()
	c.d.run(c.t, "stop", "--time", "60", c.name)
	st, logs := c.state(), c.logs()
	m := stoppedRE.FindAllStringSubmatch(logs, -1)
	if len(m) == 0 {
		c.t.Fatalf("rpwrap logged no server exit status; its log:\n%s", logs)
	}
	server, _ := strconv.Atoi(m[len(m)-1][1])
	if st.ExitCode != server || (want >= 0 && st.ExitCode != want) {
		c.t.Errorf("container exit status %d, server's %d, want both %d; its log:\n%s", st.ExitCode, server, want, logs)
	}
	c.t.Logf("docker stop: container exit status %d, the server's %d", st.ExitCode, server)
	c.d.run(c.t, "rm", c.name)
	if out := c.d.run(c.t, "ps", "-a", "-q", "--no-trunc", "--filter", "id="+c.id); strings.TrimSpace(out) != "" {
		c.t.Errorf("container %s still listed after docker rm: %s", c.name, out)
	}
	if pids := processesOf(c.id); len(pids) > 0 {
		c.t.Errorf("processes of container %s left on the host: %v", c.name, pids)
	}
	requirePortFree(c.t, c.spec.addr)
}

// processesOf lists the host's processes in the cgroups of container id.
func processesOf(id string) []string {
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err == nil && strings.Contains(string(b), id) {
			comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
			left = append(left, e.Name()+" ("+strings.TrimSpace(string(comm))+")")
		}
	}
	return left
}

// requirePortFree binds addr without SO_REUSEPORT: any socket left on it
// makes that fail.
func requirePortFree(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Errorf("port %s not free after the container stopped: %v", addr, err)
		return
	}
	l.Close()
}

// freeAddr is a free port on 127.0.0.1.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
