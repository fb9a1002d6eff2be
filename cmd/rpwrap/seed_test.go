//go:build linux

package main

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/testutil"
)

// startDemoServer runs the built-in server on l through the exec shim,
// without rpwrap's supervisor, and returns it once it is serving.
func startDemoServer(t *testing.T, l *fdpass.Listener) *exec.Cmd {
	t.Helper()
	exe := testBinary(t)
	path, args, envv := fdpass.ShimCommand(exe, []string{"rpwrap", "serve-demo"},
		append(os.Environ(), asRpwrap+"=1"), []string{l.Spec().Name}, fdpass.ListenFDs)
	cmd := &exec.Cmd{Path: path, Args: args, Env: envv, ExtraFiles: []*os.File{l.File()}, Stderr: os.Stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(l)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	})
	return cmd
}

// The seed's experiment, with the built-in server: two servers in one
// reuseport group, one of them stopped. Without a selector the kernel keeps
// sending it its share and those requests fail; this is the control that
// shows the load test can fail. With the eBPF selector on the healthy
// server's socket, none fail.
func TestStoppedMemberOfPlainReuseportGroupLosesConnections(t *testing.T) {
	testutil.RequireRoot(t)
	spec, _ := fdpass.ParseSpec("127.0.0.1:0")
	healthy, err := fdpass.Listen(spec, 128)
	if err != nil {
		t.Fatal(err)
	}
	defer healthy.Close()
	stuck, err := fdpass.Listen(healthy.Spec(), 128)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	addr := healthy.Spec().Addr.String()
	startDemoServer(t, healthy)
	hung := startDemoServer(t, stuck)
	probe := func() loadgen.Result {
		res, err := loadgen.Run(context.Background(), loadgen.Config{
			Target: addr, Path: "/", Clients: 25, Requests: 100, Timeout: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	waitServing(t, addr, probe)
	if err := hung.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	plain := probe()
	t.Logf("plain SO_REUSEPORT, one of two servers stopped: %d of %d failed", plain.Failed(), plain.Sent)
	if plain.Failed() <= 10 {
		t.Errorf("plain SO_REUSEPORT: %d of %d failed, want more than 10 (the seed saw 54)", plain.Failed(), plain.Sent)
	}

	sel, err := bpf.New(healthy, bpf.EBPF)
	if err != nil {
		t.Fatal(err)
	}
	defer sel.Close()
	steered := probe()
	t.Logf("eBPF selector on the healthy server: %d of %d failed", steered.Failed(), steered.Sent)
	if steered.Failed() != 0 || steered.OK != 100 {
		t.Errorf("with the selector: %d of %d failed, want 0", steered.Failed(), steered.Sent)
	}
}

// waitServing waits until both servers answer: a full probe succeeds.
func waitServing(t *testing.T, addr string, probe func() loadgen.Result) {
	t.Helper()
	waitUntil(t, "servers on "+addr, func() bool { return probe().Failed() == 0 })
}
