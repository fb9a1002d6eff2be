//go:build linux

package examples

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/supervisor"
	"golang.org/x/sys/unix"
)

func TestApacheRestartsUnderLoadLoseNoRequest(t *testing.T)  { testRestartsUnderLoad(t, apache) }
func TestNginxRestartsUnderLoadLoseNoRequest(t *testing.T)   { testRestartsUnderLoad(t, nginx) }
func TestHAProxyRestartsUnderLoadLoseNoRequest(t *testing.T) { testRestartsUnderLoad(t, hapx) }

// restarts is how many times each server is restarted under load.
const restarts = 10

// testRestartsUnderLoad runs s under rpwrap with its route, starts a slow
// download, then restarts s ten times with `rpwrap ctl restart` under a load
// of 4 clients, each request on a new connection: every request gets a whole
// 200, and the download, which began before the first restart and was held
// until its flip (most of the file still to come), gets every byte from the
// old generation while it drains.
func testRestartsUnderLoad(t *testing.T, s server) {
	requireServer(t, s)
	dir, addr := workDir(t), freeAddr(t)
	argv, env := s.setup(t, dir, addr)
	args := append([]string{"--listen", addr, "--ready", "accept"}, s.flags...)
	w := startRpwrap(t, dir, env, append(append(args, "--"), argv...)...)

	if s.name == "nginx" {
		requireNonblockingFD3(t, w)
	}
	load := startLoad(t, addr, "/", 4)
	waitRequests(t, load, 200)
	slow := startSlowGet(t, "http://"+addr+slowPath)
	<-slow.started
	for i := range restarts {
		var r supervisor.RestartResult
		if i == 0 {
			r = restartResumingAtFlip(t, w, slow)
		} else {
			r = w.restart()
		}
		if r.Generation != i+2 {
			t.Fatalf("restart %d made generation %d, want %d", i+1, r.Generation, i+2)
		}
		t.Logf("restart %d: generation %d ready in %v, flip %v, drain %v",
			i+1, r.Generation, r.Ready.Round(time.Millisecond), r.Flip, r.Drain.Round(time.Millisecond))
		waitRequests(t, load, load.Progress().Sent+50) // some load on every generation
	}
	waitRequests(t, load, load.Progress().Sent+200)
	load.Stop()
	requireNoLoss(t, load.Wait(), 1000)

	got := <-slow.done
	if got.err != nil {
		t.Fatalf("slow download: %v", got.err)
	}
	if diff := sameBytes(got.body, randomBytes(slowSize)); diff != "" {
		t.Errorf("slow download across restart 1: %s", diff)
	}
	if got.pausedAt < 4096 || got.pausedAt >= slowSize/2 {
		t.Errorf("slow download had %d of %d bytes at the flip, want most of it still to come", got.pausedAt, slowSize)
	}
	if st := w.status(); st.Restarts != restarts || st.RolledBack != 0 {
		t.Errorf("status: %d restarts, %d rolled back; want %d and 0", st.Restarts, st.RolledBack, restarts)
	}
}

// slowGet is a download in flight.
type slowGet struct {
	started chan struct{} // closed once the first bytes of the body came
	resume  chan struct{} // close to read the rest
	done    chan slowResult
}

type slowResult struct {
	body     []byte
	pausedAt int // bytes received before resume
	err      error
}

// restartResumingAtFlip runs `rpwrap ctl restart` and lets slow read the
// rest of its download once the successor is active: the flip is behind
// it, the predecessor drains and must serve the download to its end.
func restartResumingAtFlip(t *testing.T, w *wrapped, slow *slowGet) supervisor.RestartResult {
	t.Helper()
	gen := w.status().Generations[0].Generation
	done := make(chan supervisor.Response, 1)
	go func() { done <- w.ctl("restart") }()
	deadline := time.Now().Add(eventTimeout)
	for {
		if _, st := w.generation(gen + 1); st == supervisor.StateActive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation %d not active within %v", gen+1, eventTimeout)
		}
		time.Sleep(10 * time.Millisecond) // polling rpwrap's status; bounded above
	}
	close(slow.resume)
	resp := <-done
	if !resp.OK || resp.Restart == nil {
		t.Fatalf("rpwrap ctl restart: %s", resp.Error)
	}
	return *resp.Restart
}

// startSlowGet downloads url on a connection of its own with a small
// receive buffer, so that the server, not the kernel, holds the rest of the
// file while the download pauses: it reads 4 KiB, then waits for resume.
func startSlowGet(t *testing.T, url string) *slowGet {
	g := &slowGet{started: make(chan struct{}), resume: make(chan struct{}), done: make(chan slowResult, 1)}
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<10) })
		return errors.Join(err, serr)
	}}
	client := &http.Client{Timeout: 2 * eventTimeout, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dialer.DialContext}}
	t.Cleanup(func() {
		select {
		case <-g.resume:
		default:
			close(g.resume)
		}
	})
	go func() {
		var res slowResult
		defer func() { g.done <- res }()
		started := false
		defer func() {
			if !started {
				close(g.started)
			}
		}()
		resp, err := client.Get(url)
		if err != nil {
			res.err = err
			return
		}
		defer resp.Body.Close()
		buf := make([]byte, 4096)
		n, err := io.ReadFull(resp.Body, buf)
		res.body = append(res.body, buf[:n]...)
		started = true
		close(g.started)
		if err != nil {
			res.err = err
			return
		}
		<-g.resume
		res.pausedAt = len(res.body)
		rest, err := io.ReadAll(resp.Body)
		res.body, res.err = append(res.body, rest...), err
	}()
	t.Cleanup(func() { client.CloseIdleConnections() })
	return g
}

// requireNonblockingFD3 checks that every nginx process of generation 1
// holds its inherited socket (fd 3) with O_NONBLOCK. nginx assumes that an
// inherited listening socket is non-blocking (its old master set it so) and
// never sets the flag itself; on a blocking one, a worker that loses the race
// for a connection blocks in accept(2): it serves none of its accepted
// connections meanwhile, and after a flip, when no connection comes to the old
// socket any more, it never wakes for the graceful stop (rpwrap SIGKILLs it
// after --drain-timeout, and requests it held time out).
func requireNonblockingFD3(t *testing.T, w *wrapped) {
	t.Helper()
	pid, _ := w.generation(1)
	for _, p := range tree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", p))
		if err != nil {
			t.Fatalf("nginx process %d: %v", p, err)
		}
		var flags int
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				fmt.Sscanf(strings.TrimSpace(v), "%o", &flags)
			}
		}
		if flags&unix.O_NONBLOCK == 0 {
			t.Errorf("nginx process %d (%s) holds its inherited socket (fd 3) without O_NONBLOCK (flags %#o): "+
				"the nginx route must pass it non-blocking", p, comm(p), flags)
		}
	}
}
