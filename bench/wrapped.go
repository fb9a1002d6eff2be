//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rpwrap/rpwrap/supervisor"
)

// wrapped is rpwrap itself, a separate process as an operator runs it,
// restarted through its control socket (what `rpwrap ctl restart` does).
type wrapped struct {
	bin      string
	selector string // "ebpf" or "cbpf"
	// atFlip: a restart returns at the flip, with the predecessor still
	// draining (ctl restart without --wait), so the next one can follow
	// while it drains: the storm.
	atFlip bool
	udp    bool // --listen udp://, the flow table at its default
}

func (w wrapped) Name() string { return "rpwrap-" + w.selector }

type wrappedInstance struct {
	cmd     *exec.Cmd
	done    chan struct{}
	dir     string
	control string
	addr    string

	sc        scenario
	flagsFile string // the demo server's flags for the next generation; "" for other commands
	atFlip    bool   // restarts answer at the flip, not once the predecessor is drained
}

func (w wrapped) Start(ctx context.Context, sc scenario) (instance, error) {
	dir, err := os.MkdirTemp("", "rpb-")
	if err != nil {
		return nil, fmt.Errorf("create bench directory: %w", err)
	}
	// rpwrap runs one command for every generation; the demo server's
	// flags come from a file that the bench rewrites before each restart,
	// as a deploy would replace a configuration file.
	flagsFile := filepath.Join(dir, "demo.flags")
	if err := writeFlags(flagsFile, sc.firstArgs()); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := []string{"--listen", listenSpec(w.udp), "--selector", w.selector, "--ready", "notify",
		"--drain-timeout", sc.grace().String(), "--drain-stall", "200ms",
		"--log-level", "error", "--", "/bin/sh", "-c", `exec "$0" serve-demo $(cat "$1")`, w.bin, flagsFile}
	in, err := startRpwrap(ctx, w.bin, dir, args, nil)
	if err != nil {
		return nil, err
	}
	in.sc, in.flagsFile, in.atFlip = sc, flagsFile, w.atFlip
	return in, nil
}

// writeFlags writes the demo server's flags, separated by spaces, to path.
func writeFlags(path string, flags []string) error {
	if err := os.WriteFile(path, []byte(strings.Join(flags, " ")+"\n"), 0o644); err != nil {
		return fmt.Errorf("write the demo server's flags: %w", err)
	}
	return nil
}

// startRpwrap runs `rpwrap --control DIR/ctl.sock args...` with env added,
// and returns once its first generation is active. dir is the instance's
// and is removed by Close.
func startRpwrap(ctx context.Context, bin, dir string, args, env []string) (*wrappedInstance, error) {
	in := &wrappedInstance{dir: dir, control: filepath.Join(dir, "ctl.sock"), done: make(chan struct{})}
	in.cmd = exec.Command(bin, append([]string{"--control", in.control}, args...)...)
	in.cmd.Env = append(append(os.Environ(), "RUNTIME_DIRECTORY="+dir), env...)
	in.cmd.Stderr = os.Stderr
	if err := in.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start rpwrap %s: %w", bin, err)
	}
	pid := in.cmd.Process.Pid
	tracked.Store(pid, struct{}{})
	go func() { in.cmd.Wait(); tracked.Delete(pid); close(in.done) }()
	if err := in.waitActive(ctx, 30*time.Second); err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

// waitActive polls the control socket until a generation is active (the
// control socket has no event for that) and learns the address.
func (in *wrappedInstance) waitActive(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-in.done:
			return errors.New("rpwrap exited before its first generation was ready; its log is above")
		default:
		}
		if st, err := in.status(ctx); err == nil && len(st.Listeners) > 0 {
			for _, g := range st.Generations {
				if g.State == supervisor.StateActive {
					in.addr = listenerAddr(st.Listeners[0])
					return nil
				}
			}
		}
		time.Sleep(20 * time.Millisecond) // polling a state that has no event
	}
	return fmt.Errorf("rpwrap: no active generation within %s", timeout)
}

// listenerAddr takes host:port out of a listener spec string such as
// "http=tcp://127.0.0.1:41234".
func listenerAddr(spec string) string {
	if _, rest, ok := strings.Cut(spec, "="); ok {
		spec = rest
	}
	if _, rest, ok := strings.Cut(spec, "://"); ok {
		spec = rest
	}
	return spec
}

func (in *wrappedInstance) status(ctx context.Context) (*supervisor.Status, error) {
	resp, err := supervisor.Call(ctx, in.control, supervisor.Request{Command: "status"})
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, fmt.Errorf("rpwrap status: %s", resp.Error)
	}
	return resp.Status, nil
}

func (in *wrappedInstance) Addr() string    { return in.addr }
func (in *wrappedInstance) WrapperPid() int { return in.cmd.Process.Pid }

func (in *wrappedInstance) ServingPid() int {
	st, err := in.status(context.Background())
	if err != nil {
		return 0
	}
	for _, g := range st.Generations {
		if g.State == supervisor.StateActive {
			return g.Pid
		}
	}
	return 0
}

func (in *wrappedInstance) Restart(ctx context.Context) (timings, error) {
	if in.flagsFile != "" {
		if err := writeFlags(in.flagsFile, in.sc.successorArgs()); err != nil {
			return timings{}, err
		}
	}
	start := time.Now()
	resp, err := supervisor.Call(ctx, in.control, supervisor.Request{Command: "restart", Wait: !in.atFlip})
	cycle := time.Since(start)
	if err != nil {
		return timings{Cycle: cycle}, err
	}
	var t timings
	if r := resp.Restart; r != nil {
		t = timings{Ready: r.Ready, ToFlip: r.ToFlip, Overhead: r.Overhead, Flip: r.Flip, Drain: r.Drain, Handed: r.Migrated}
		t.Clock = checkClock(start, cycle, *r)
	}
	t.Cycle = cycle
	if !resp.OK {
		return t, fmt.Errorf("rpwrap restart rolled back: %s", resp.Error)
	}
	return t, nil
}

func (in *wrappedInstance) Close() {
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.done:
	case <-time.After(15 * time.Second):
		in.cmd.Process.Signal(syscall.SIGKILL)
		<-in.done
	}
	os.RemoveAll(in.dir)
}
