//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/testutil"
)

// The life cycle's unit tests run a real Supervisor (real sockets on
// 127.0.0.1, a real cBPF selector) on a fake operating system: each
// generation's server is a fakeProc that does what the test planned.

// fakePidBase is above any pid_max (at most 2^22): no real process has
// these pids, so what still reads /proc for them finds nothing.
const fakePidBase = 5_000_000

// fakeOS implements system with fakeProcs.
type fakeOS struct {
	s *Supervisor

	mu    sync.Mutex
	plans map[int]*fakeProc   // by generation number
	gens  map[int]*generation // every generation start was asked for
}

// fakeProc is one generation's server. The fields above the line are its
// plan, set before it starts; the zero plan is a server that is ready at
// once, holds its sockets, and exits 0 on the stop signal.
type fakeProc struct {
	startErr   error         // start fails with it
	startGate  chan struct{} // start waits until it is closed
	checkGate  chan struct{} // the readiness check waits until it is closed or times out
	checkErr   error         // the readiness check fails with it
	exitAt     string        // "check" (before ready), "guard" or "relisten" (after ready): it exits there
	exitStatus unix.WaitStatus
	guardErr   error // guard fails with it
	guardWaits bool  // guard waits until its context ends, then fails
	relistErr  error // relisten fails with it
	recheckErr error // every --watch-check fails with it
	ignoreStop bool  // the stop signal does not end it
	stopStatus unix.WaitStatus

	starting chan struct{} // closed when start is called
	checking chan struct{} // closed when its readiness check begins
	exited   chan struct{} // closed when it has exited
	exitc    chan Exit
	pid      int
	once     sync.Once
	mu       sync.Mutex
	signals  []syscall.Signal // what it received, SIGKILL for killGroup
}

func exitCode(c int) unix.WaitStatus              { return unix.WaitStatus(c << 8) }
func killedBy(sig syscall.Signal) unix.WaitStatus { return unix.WaitStatus(sig) }

// plan returns generation n's fakeProc, made on first use.
func (f *fakeOS) plan(n int) *fakeProc {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fp := f.plans[n]; fp != nil {
		return fp
	}
	fp := &fakeProc{starting: make(chan struct{}), checking: make(chan struct{}), exited: make(chan struct{}), exitc: make(chan Exit, 1)}
	f.plans[n] = fp
	return fp
}

func (f *fakeOS) gen(n int) *generation {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gens[n]
}

func (f *fakeOS) start(g *generation, _ procSpec) (*process, <-chan Exit, error) {
	fp := f.plan(g.n)
	f.mu.Lock()
	f.gens[g.n] = g
	f.mu.Unlock()
	close(fp.starting)
	if fp.startGate != nil {
		<-fp.startGate
	}
	if fp.startErr != nil {
		return nil, nil, fp.startErr
	}
	fp.pid = fakePidBase + g.n
	return &process{pid: fp.pid, pidfd: -1, ctl: fp}, fp.exitc, nil
}

func (f *fakeOS) check(ctx context.Context, g *generation) error {
	fp := f.plan(g.n)
	close(fp.checking)
	if fp.exitAt == "check" {
		fp.exit(fp.exitStatus)
		<-ctx.Done() // a real probe is refused until waitReady gives up
		return errors.New("connection refused")
	}
	if fp.checkGate != nil {
		select {
		case <-fp.checkGate:
		case <-ctx.Done():
			return errors.New("probe not accepted")
		}
	}
	return fp.checkErr
}

func (f *fakeOS) guard(ctx context.Context, g *generation, _ bool) error {
	fp := f.plan(g.n)
	switch {
	case fp.exitAt == "guard":
		fp.exit(fp.exitStatus)
		<-g.done
		return fmt.Errorf("%s does not hold the socket rpwrap passed", g)
	case fp.guardWaits:
		<-ctx.Done()
		return fmt.Errorf("%s did not bind its address", g)
	}
	return fp.guardErr
}

func (f *fakeOS) relisten(g *generation) error {
	fp := f.plan(g.n)
	if fp.exitAt == "relisten" {
		fp.exit(fp.exitStatus)
		<-g.done
	}
	if fp.relistErr != nil {
		return fp.relistErr
	}
	return f.s.relisten(g) // the sockets are real
}

func (f *fakeOS) alive(g *generation) bool        { return !f.plan(g.n).hasExited() }
func (f *fakeOS) holdsSockets(g *generation) bool { return !f.plan(g.n).hasExited() }

// exit ends the fake server with st, once.
func (fp *fakeProc) exit(st unix.WaitStatus) {
	fp.once.Do(func() {
		close(fp.exited)
		fp.exitc <- Exit{Pid: fp.pid, Status: st}
	})
}

func (fp *fakeProc) hasExited() bool {
	select {
	case <-fp.exited:
		return true
	default:
		return false
	}
}

func (fp *fakeProc) signal(sig syscall.Signal) error {
	fp.mu.Lock()
	fp.signals = append(fp.signals, sig)
	fp.mu.Unlock()
	if sig == syscall.SIGTERM && !fp.ignoreStop {
		fp.exit(fp.stopStatus)
	}
	return nil
}

func (fp *fakeProc) killGroup() error {
	if !fp.hasExited() {
		fp.mu.Lock()
		fp.signals = append(fp.signals, syscall.SIGKILL)
		fp.mu.Unlock()
	}
	fp.exit(killedBy(syscall.SIGKILL))
	return nil
}

func (fp *fakeProc) received() []syscall.Signal {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return slices.Clone(fp.signals)
}

// fakeSelector is a real selector that counts its slots and fails
// Activate on demand.
type fakeSelector struct {
	bpf.Selector

	mu          sync.Mutex
	live        map[bpf.Slot]bool
	addErr      error   // the next Add fails with it
	failFlips   []error // the next Activate calls fail with these in turn (nil: pass)
	activations []bpf.Slot
	leftAtClose []bpf.Slot // slots still in use when it was closed
	closed      bool
}

func (f *fakeSelector) Add(sock syscall.Conn) (bpf.Slot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.addErr; err != nil {
		f.addErr = nil
		return 0, err
	}
	s, err := f.Selector.Add(sock)
	if err == nil {
		f.live[s] = true
	}
	return s, err
}

func (f *fakeSelector) Join(join func() (bpf.Member, error)) (bpf.Slot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.addErr; err != nil {
		f.addErr = nil
		m, jerr := join()
		if jerr != nil {
			return 0, jerr
		}
		return 0, errors.Join(err, m.Close())
	}
	s, err := f.Selector.Join(join)
	if err == nil {
		f.live[s] = true
	}
	return s, err
}

func (f *fakeSelector) Leave(s bpf.Slot, leave func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.Selector.Leave(s, leave)
	if err == nil {
		delete(f.live, s)
	}
	return err
}

func (f *fakeSelector) Activate(s bpf.Slot) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.activations = append(f.activations, s)
	if len(f.failFlips) > 0 {
		err := f.failFlips[0]
		f.failFlips = f.failFlips[1:]
		if err != nil {
			return err
		}
	}
	return f.Selector.Activate(s)
}

func (f *fakeSelector) Remove(s bpf.Slot) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.live, s)
	return f.Selector.Remove(s)
}

func (f *fakeSelector) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		for s := range f.live {
			f.leftAtClose = append(f.leftAtClose, s)
		}
	}
	f.closed = true
	return f.Selector.Close()
}

// slots lists the slots in use, sorted.
func (f *fakeSelector) slots() []bpf.Slot {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bpf.Slot
	for s := range f.live {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func (f *fakeSelector) flips() []bpf.Slot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.activations)
}

// rig is one Supervisor on a fakeOS, run by a test.
type rig struct {
	t      *testing.T
	s      *Supervisor
	os     *fakeOS
	sels   []*fakeSelector
	log    *testutil.SyncBuffer
	cancel context.CancelFunc
	code   chan int
	base   testutil.Snapshot
	nGo    int
}

// newRig builds a Supervisor on groups TCP addresses of 127.0.0.1 with a
// fake operating system; tune changes its Config. plan, when given, plans
// the fake servers before anything runs.
func newRig(t *testing.T, groups int, tune func(*Config)) *rig {
	t.Helper()
	warm := make(chan os.Signal, 1) // the signal package's goroutine lives for good: start it before counting
	signal.Notify(warm, syscall.SIGWINCH)
	signal.Stop(warm)
	r := &rig{t: t, log: &testutil.SyncBuffer{}, code: make(chan int, 1), nGo: runtime.NumGoroutine(), base: testutil.Take()}
	cfg := Config{
		Path: "/nonexistent/server", Argv: []string{"server"},
		Selector: bpf.CBPF, Ready: Ready{Kind: ReadyAccept},
		ReadyTimeout: 5 * time.Second, StopTimeout: 200 * time.Millisecond, DrainTimeout: time.Minute,
		RuntimeDir: t.TempDir(),
		Log:        slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for i := range groups {
		cfg.Listen = append(cfg.Listen, fdpass.Spec{Name: fmt.Sprint("l", i), Network: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:0")})
	}
	if tune != nil {
		tune(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	r.os = &fakeOS{s: s, plans: map[int]*fakeProc{}, gens: map[int]*generation{}}
	s.sys = r.os
	for _, grp := range s.groups {
		fs := &fakeSelector{Selector: grp.sel, live: map[bpf.Slot]bool{grp.sel.Active(): true}}
		grp.sel = fs
		r.sels = append(r.sels, fs)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("supervisor log:\n%s", r.log.String())
		}
	})
	return r
}

// run starts Run; with ready, it waits until the first generation serves.
func (r *rig) run(ctx context.Context, ready bool) {
	r.t.Helper()
	ctx, r.cancel = context.WithCancel(ctx)
	go func() { r.code <- r.s.Run(ctx) }()
	if !ready {
		return
	}
	select {
	case <-r.s.Ready():
	case c := <-r.code:
		r.code <- c
		r.t.Fatalf("Run returned %d before the first generation was ready", c)
	case <-time.After(10 * time.Second):
		r.t.Fatal("first generation not ready after 10s")
	}
}

// restart asks for a restart, at the flip or (wait) after the drain.
func (r *rig) restart(wait bool) (RestartResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if wait {
		return r.s.RestartAndDrain(ctx)
	}
	return r.s.Restart(ctx)
}

// wait returns Run's exit status.
func (r *rig) wait() int {
	r.t.Helper()
	select {
	case c := <-r.code:
		return c
	case <-time.After(20 * time.Second):
		buf := make([]byte, 1<<20)
		r.t.Fatalf("Run did not return within 20s; goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		return 0
	}
}

// stop cancels Run's context, as SIGTERM does, and returns its exit status.
func (r *rig) stop() int {
	r.cancel()
	return r.wait()
}

// state is generation n's state; "" if it never reached start.
func (r *rig) state(n int) State {
	g := r.os.gen(n)
	if g == nil {
		return ""
	}
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return g.state
}

// states lists the live generations as "n:state".
func (r *rig) states() []string {
	var out []string
	for _, g := range r.s.Status().Generations {
		out = append(out, fmt.Sprintf("%d:%s", g.Generation, g.State))
	}
	return out
}

func (r *rig) wantStates(want ...string) {
	r.t.Helper()
	if got := r.states(); !slices.Equal(got, want) {
		r.t.Errorf("live generations %v, want %v", got, want)
	}
}

// wantFinal checks the final state of generation n.
func (r *rig) wantFinal(n int, want State) {
	r.t.Helper()
	if got := r.state(n); got != want {
		r.t.Errorf("generation %d is %q, want %q", n, got, want)
	}
}

// retired waits until generation n is retired.
func (r *rig) retired(n int) {
	r.t.Helper()
	g := r.os.gen(n)
	select {
	case <-g.retired:
	case <-time.After(10 * time.Second):
		r.t.Fatalf("generation %d not retired after 10s (state %s)", n, r.state(n))
	}
}

// wantSlots checks that each selector's slots in use are exactly those of
// the given live generations.
func (r *rig) wantSlots(live ...int) {
	r.t.Helper()
	for i, sel := range r.sels {
		var want []bpf.Slot
		for _, n := range live {
			want = append(want, r.os.gen(n).slots[i])
		}
		slices.Sort(want)
		if got := sel.slots(); !slices.Equal(got, want) {
			r.t.Errorf("group %d: slots in use %v, want %v (generations %v)", i, got, want, live)
		}
	}
}

// clean checks, once Run has returned, that nothing is left: every
// generation retired with its sockets closed, every selector slot freed
// and the selector closed, no file descriptor, child or goroutine more
// than before newRig.
func (r *rig) clean() {
	r.t.Helper()
	r.os.mu.Lock()
	gens := make([]*generation, 0, len(r.os.gens))
	for _, g := range r.os.gens {
		gens = append(gens, g)
	}
	r.os.mu.Unlock()
	for _, g := range gens {
		if g.proc != nil {
			select {
			case <-g.retired:
			default:
				r.t.Errorf("generation %d was never retired (state %s)", g.n, g.state)
			}
		}
		for _, l := range g.listeners {
			if l.Inode() != 0 {
				r.t.Errorf("generation %d: socket %s still open", g.n, l.Spec())
			}
		}
	}
	for i, sel := range r.sels {
		if !sel.closed || len(sel.leftAtClose) > 0 {
			r.t.Errorf("group %d: selector closed %v with slots %v in use", i, sel.closed, sel.leftAtClose)
		}
	}
	var leak error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		leak = r.base.Leaked(testutil.Take())
		if n := runtime.NumGoroutine(); n > r.nGo && leak == nil {
			leak = fmt.Errorf("%d goroutines, %d before", n, r.nGo)
		}
		if leak == nil || time.Now().After(deadline) {
			break
		}
	}
	if leak != nil {
		buf := make([]byte, 1<<20)
		r.t.Errorf("left behind: %v\n%s", leak, buf[:runtime.Stack(buf, true)])
	}
}

// wantErr checks that err is set and contains want.
func wantErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error %v, want one containing %q", what, err, want)
	}
}

// eventually waits until cond holds, up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
	}
}
