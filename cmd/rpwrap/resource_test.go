//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/testutil"
	"github.com/rpwrap/rpwrap/supervisor"
)

// rpwrap runs out of file descriptors during a restart (its RLIMIT_NOFILE
// is lowered from outside with prlimit(2), leaving 0, 1 or 2 descriptors
// free: the new socket, the successor's notify socket or the fork's pipe
// fails): the restart is rolled back with a message naming the limit, the
// predecessor keeps serving, no descriptor leaks, and once the limit is
// raised again the control socket answers and a restart succeeds.
func TestOutOfFileDescriptorsDuringRestartRollsBack(t *testing.T) {
	for _, free := range []uint64{0, 1, 2} {
		t.Run(itoa(int(free))+" free", func(t *testing.T) {
			w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", "ebpf"})
			rpwrap := w.cmd.Process.Pid
			pid := w.activePid()
			res := underLoad(t, w, 4, func(load *loadgen.Load) {
				fds := countFDs(t, rpwrap)
				limit := lowestFreeFD(t, rpwrap) + free
				old := setNofile(t, rpwrap, limit)
				w.cmd.Process.Signal(syscall.SIGHUP)
				w.waitOutput("too many open files (RLIMIT_NOFILE=" + strconv.FormatUint(limit, 10) + ")")
				var answer chan error
				if free == 0 { // no descriptor for a control client either
					answer = askWhileOutOfFDs(t, w)
				}
				setNofile(t, rpwrap, old.Cur)
				if answer != nil {
					if err := <-answer; err != nil {
						t.Errorf("control client connected while out of descriptors: %v", err)
					}
				}
				st := w.status()
				if len(st.Generations) != 1 || st.Generations[0].Pid != pid || st.RolledBack != 1 {
					t.Errorf("after the rollback: %+v, want only the predecessor %d", st, pid)
				}
				if got := countFDs(t, rpwrap); got > fds {
					t.Errorf("rpwrap holds %d descriptors after the rollback, %d before", got, fds)
				}
				w.restart()
				waitRequests(t, load, load.Progress().Sent+100)
			})
			requireNoLoss(t, res, 400)
		})
	}
}

// askWhileOutOfFDs connects to w's control socket and sends a status
// request while rpwrap cannot accept it (EMFILE). It returns a channel that
// receives the outcome once the caller has raised the limit again.
func askWhileOutOfFDs(t *testing.T, w *wrapper) chan error {
	t.Helper()
	c, err := net.Dial("unix", w.control) // completes in the kernel's backlog
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(`{"command":"status"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	// Give rpwrap's accept(2) time to fail with EMFILE at least once: a
	// failed accept has no event to wait for.
	time.Sleep(300 * time.Millisecond)
	answer := make(chan error, 1)
	go func() {
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		var resp supervisor.Response
		err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp)
		if err == nil && !resp.OK {
			err = errorString(resp.Error)
		}
		answer <- err
	}()
	return answer
}

type errorString string

func (e errorString) Error() string { return string(e) }

// lowestFreeFD is the descriptor number pid's next open would get.
func lowestFreeFD(t *testing.T, pid int) uint64 {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	used := map[uint64]bool{}
	for _, e := range ents {
		if n, err := strconv.ParseUint(e.Name(), 10, 32); err == nil {
			used[n] = true
		}
	}
	var n uint64
	for used[n] {
		n++
	}
	return n
}

// setNofile sets the soft RLIMIT_NOFILE of pid and returns the old limit.
func setNofile(t *testing.T, pid int, cur uint64) unix.Rlimit {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: cur, Max: old.Max}, nil); err != nil {
		t.Fatal(err)
	}
	return old
}

// Without CAP_BPF, CAP_SYS_ADMIN, CAP_PERFMON and CAP_NET_ADMIN (dropped
// from the bounding set with setpriv, so rpwrap runs as root without them),
// the automatic selector falls back to classic BPF, says so in exactly one
// log line, and restarts under load lose nothing.
func TestWithoutBPFCapabilitiesFallsBackToClassicBPF(t *testing.T) {
	testutil.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		testutil.SkipOrFail(t, "setpriv (util-linux) not installed")
	}
	dropCaps := func(cmd *exec.Cmd) {
		cmd.Args = append([]string{"setpriv", "--inh-caps", "-all", "--bounding-set", "-bpf,-sys_admin,-perfmon,-net_admin", "--", cmd.Path}, cmd.Args[1:]...)
		cmd.Path = setpriv
	}
	exe := testBinary(t)
	w := startWrapperWith(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--", exe, "serve-demo"}, dropCaps)
	if eff := capEff(t, w.cmd.Process.Pid); eff&(1<<unix.CAP_BPF|1<<unix.CAP_SYS_ADMIN|1<<unix.CAP_NET_ADMIN) != 0 {
		t.Fatalf("rpwrap still has CAP_BPF, CAP_SYS_ADMIN or CAP_NET_ADMIN (CapEff %x)", eff)
	}
	if st := w.status(); st.Selector != "cbpf" {
		t.Fatalf("selector %q without BPF capabilities, want cbpf", st.Selector)
	}
	restartsUnderLoad(t, w, 5, 500)
	if n := strings.Count(w.out.String(), "eBPF selector not available"); n != 1 {
		t.Errorf("%d log lines about the fallback, want exactly 1; output:\n%s", n, w.out.String())
	}
}

// capEff is the effective capability set of pid (/proc/PID/status).
func capEff(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no CapEff in /proc/PID/status")
	return 0
}

// rpwrap killed with SIGKILL, in the middle of a restart and after many
// restarts and a burst of control requests have made its runtime start
// threads: no server survives it (PR_SET_PDEATHSIG, set from the thread
// that lives as long as rpwrap), and no socket stays bound to the port.
func TestSIGKILLedRpwrapLeavesNoServerAndNoSocket(t *testing.T) {
	exe := testBinary(t)
	w := startWrapperCommand(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", "ebpf",
		"--", "/bin/sh", "-c", fromGeneration(7, "-ready-delay", "30s"), exe})
	rpwrap := w.cmd.Process.Pid
	threads := countThreads(t, rpwrap)
	res := underLoad(t, w, 4, func(load *loadgen.Load) {
		for i := 0; i < 5; i++ {
			w.restart()
			burstOfStatusRequests(t, w, 50)
		}
	})
	requireNoLoss(t, res, 400)
	t.Logf("rpwrap's threads: %d after start, %d after 5 restarts and 250 control requests", threads, countThreads(t, rpwrap))
	pred := w.activePid()
	go supervisor.Call(context.Background(), w.control, supervisor.Request{Command: "restart"})
	var succ int
	waitUntil(t, "generation 7 starting", func() bool {
		st := w.status()
		if len(st.Generations) == 2 {
			succ = st.Generations[1].Pid
		}
		return succ != 0
	})
	if processGone(pred) {
		t.Fatalf("the serving generation %d died before rpwrap did", pred)
	}
	w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
	requireAllGone(t, pred, succ)
	waitUntil(t, "no socket on "+w.addr, func() bool { return len(listeningOn(t, w.addr)) == 0 })
	requirePortFree(t, w.addr)
}

// burstOfStatusRequests sends n concurrent status requests to w.
func burstOfStatusRequests(t *testing.T, w *wrapper, n int) {
	t.Helper()
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := supervisor.Call(ctx, w.control, supervisor.Request{Command: "status"})
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Errorf("status: %v", err)
		}
	}
}

func countThreads(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
