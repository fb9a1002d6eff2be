//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// The binaries, built once per test binary: rpwrap and this server.
var bins struct {
	once             sync.Once
	rpwrap, quicdemo string
	err              error
}

func binaries(t *testing.T) (rpwrap, server string) {
	t.Helper()
	testutil.RequireRoot(t)
	bins.once.Do(func() {
		dir, err := os.MkdirTemp("", "rpwquic")
		if err != nil {
			bins.err = err
			return
		}
		bins.rpwrap, bins.quicdemo = filepath.Join(dir, "rpwrap"), filepath.Join(dir, "quicdemo")
		if bins.err = testutil.GoBuild(bins.rpwrap, "../../cmd/rpwrap"); bins.err == nil {
			bins.err = testutil.GoBuild(bins.quicdemo, ".")
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.rpwrap, bins.quicdemo
}

// wrapper is rpwrap running the QUIC server on one UDP listener.
type wrapper struct {
	t       *testing.T
	control string
	addr    string
	out     *testutil.SyncBuffer
}

// startWrapper runs rpwrap with flags around this server and returns once
// its control socket answers with a serving generation.
func startWrapper(t *testing.T, flags ...string) *wrapper {
	t.Helper()
	rpwrap, server := binaries(t)
	dir, err := os.MkdirTemp("", "rpwq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &wrapper{t: t, control: filepath.Join(dir, "ctl.sock"), out: &testutil.SyncBuffer{}}
	args := append([]string{"--control", w.control, "--listen", "udp://127.0.0.1:0", "--selector", "ebpf", "--ready", "notify"}, flags...)
	cmd := exec.Command(rpwrap, append(append(args, "--"), server)...)
	cmd.Env = append(os.Environ(), "RUNTIME_DIRECTORY="+dir)
	cmd.Stdout, cmd.Stderr = w.out, w.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("rpwrap output:\n%s", w.out.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := w.call("status"); err == nil && resp.Status != nil && len(resp.Status.Generations) > 0 &&
			resp.Status.Generations[0].State == supervisor.StateActive {
			spec, err := fdpass.ParseSpec(resp.Status.Listeners[0])
			if err != nil {
				t.Fatal(err)
			}
			w.addr = spec.Addr.String()
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("rpwrap not serving within 30s; output:\n%s", w.out.String())
		}
	}
}

func (w *wrapper) call(command string) (supervisor.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return supervisor.Call(ctx, w.control, supervisor.Request{Command: command})
}

// restart restarts without waiting for the drain and returns the new
// generation.
func (w *wrapper) restart() int {
	w.t.Helper()
	resp, err := w.call("restart")
	if err != nil || !resp.OK || resp.Restart == nil {
		w.t.Fatalf("ctl restart: %v %+v; output:\n%s", err, resp, w.out.String())
	}
	return resp.Restart.Generation
}

// quicClient is one QUIC connection writing a line on one stream every
// interval and reading its echo, counting the generations that answered.
type quicClient struct {
	id      int
	conn    *quic.Conn
	str     *quic.Stream
	r       *bufio.Reader
	answers map[int]int
	first   int
	err     error // the error that ended it: a reset, a stall, or another
}

func dialQUIC(t *testing.T, id int, addr string) *quicClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ua.IP})
	if err != nil {
		t.Fatal(err)
	}
	// Connection IDs of its own, so that the server can validate a new
	// path of the client (migration).
	tr := &quic.Transport{Conn: pc, ConnectionIDLength: 8}
	t.Cleanup(func() { tr.Close() })
	conn, err := tr.Dial(ctx, ua, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}},
		&quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("QUIC connection %d: %v", id, err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatalf("QUIC connection %d: open stream: %v", id, err)
	}
	return &quicClient{id: id, conn: conn, str: str, r: bufio.NewReader(str), answers: map[int]int{}}
}

// exchange writes one line and reads its echo within 3 s; it reports false
// and sets c.err when that fails.
func (c *quicClient) exchange(seq int) bool {
	line := fmt.Sprintf("conn %d seq %d", c.id, seq)
	c.str.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(c.str, line); err != nil {
		c.err = err
		return false
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		c.err = err
		return false
	}
	gen, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(got), line+" gen="))
	if err != nil {
		c.err = fmt.Errorf("answer %q to %q", got, line)
		return false
	}
	if c.first == 0 {
		c.first = gen
	}
	c.answers[gen]++
	return true
}

// kind names what ended c: "" (nothing), "reset", "stall" or "error".
func (c *quicClient) kind() string {
	var reset *quic.StatelessResetError
	var idle *quic.IdleTimeoutError
	switch {
	case c.err == nil:
		return ""
	case errors.As(c.err, &reset):
		return "reset"
	case errors.As(c.err, &idle), errors.Is(c.err, os.ErrDeadlineExceeded):
		return "stall"
	}
	return "error"
}

// quicAcrossRestarts runs 10 QUIC connections, opened on generation 1 and
// exchanging a line every 20 ms, through 5 restarts, and after each restart
// opens 2 new ones that must be answered by the new generation only.
func quicAcrossRestarts(t *testing.T, mode string) []*quicClient {
	w := startWrapper(t, "--udp-flows", mode, "--udp-flow-idle", "2s", "--drain-timeout", "30s", "--max-draining", "8")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var long []*quicClient
	for i := range 10 {
		c := dialQUIC(t, i, w.addr)
		long = append(long, c)
		wg.Go(func() {
			for seq := 0; c.exchange(seq); seq++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	for i := range 5 {
		gen := w.restart()
		for j := range 2 {
			c := dialQUIC(t, 100*(i+1)+j, w.addr)
			for seq := range 5 {
				if !c.exchange(seq) {
					break
				}
			}
			if c.err != nil || c.answers[gen] != 5 {
				t.Errorf("new QUIC connection %d after restart %d: answers by generation %v, error %v; want 5 from generation %d", c.id, i+1, c.answers, c.err, gen)
			}
			c.conn.CloseWithError(0, "")
		}
		time.Sleep(300 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	return long
}

// Ten QUIC connections (quic-go) exchange data across five restarts with
// --udp-flows quic: none is reset or stalls, each is answered by its first
// generation only, and new connections go to the newest generation.
func TestQUICConnectionsSurviveRestarts(t *testing.T) {
	long := quicAcrossRestarts(t, "quic")
	total := 0
	for _, c := range long {
		for _, n := range c.answers {
			total += n
		}
		if c.err != nil || c.first != 1 || len(c.answers) != 1 {
			t.Errorf("QUIC connection %d: answers by generation %v, ended by %s: %v; want every answer from generation 1 and no error", c.id, c.answers, c.kind(), c.err)
		}
	}
	t.Logf("10 QUIC connections across 5 restarts: %d exchanges, all answered by generation 1", total)
}

// The control: with --udp-flows off the next generation receives the old
// connections' packets at the flip, does not know them, and resets them.
func TestQUICWithoutStickinessResetsConnections(t *testing.T) {
	long := quicAcrossRestarts(t, "off")
	ended := map[string]int{}
	for _, c := range long {
		ended[c.kind()]++
	}
	t.Logf("--udp-flows off: of 10 QUIC connections %d reset, %d stalled, %d other errors, %d unharmed", ended["reset"], ended["stall"], ended["error"], ended[""])
	if ended["reset"] == 0 {
		t.Error("no QUIC connection was reset without stickiness: the control does not show what the flow table prevents")
	}
}

// migrateAfterRestart opens a QUIC connection on generation 1, restarts,
// moves the connection to a new client socket (a new address, as after NAT
// rebinding or migration) and returns the connection after one exchange on
// the new path, or the error that stopped it.
func migrateAfterRestart(t *testing.T, mode string) (*quicClient, error) {
	w := startWrapper(t, "--udp-flows", mode, "--drain-timeout", "30s")
	c := dialQUIC(t, 1, w.addr)
	if !c.exchange(0) {
		t.Fatalf("first exchange: %v", c.err)
	}
	w.restart()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc, ConnectionIDLength: 8}
	t.Cleanup(func() { tr.Close() })
	path, err := c.conn.AddPath(tr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := path.Probe(ctx); err != nil {
		return c, fmt.Errorf("probe the new path: %w", err)
	}
	if err := path.Switch(); err != nil {
		return c, fmt.Errorf("switch to the new path: %w", err)
	}
	if !c.exchange(1) {
		return c, c.err
	}
	return c, nil
}

// A QUIC connection that moves to a new client address after a restart
// still reaches its generation with --udp-flows quic: the server id in its
// connection ID routes it. The control: with --udp-flows tuple the new
// address is a new flow, which goes to the new generation, and the move fails.
func TestQUICMigratedConnectionKeepsItsGeneration(t *testing.T) {
	c, err := migrateAfterRestart(t, "quic")
	if err != nil || c.answers[1] != 2 || len(c.answers) != 1 {
		t.Errorf("--udp-flows quic: after the move, answers by generation %v, error %v; want both from generation 1", c.answers, err)
	}
	c, err = migrateAfterRestart(t, "tuple")
	t.Logf("--udp-flows tuple: after the move, answers by generation %v, error %v", c.answers, err)
	if err == nil && c.answers[1] == 2 {
		t.Error("--udp-flows tuple: the moved connection still reached generation 1: the control does not show what the connection-ID route adds")
	}
}
