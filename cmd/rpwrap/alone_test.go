//go:build linux

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
)

// A second rpwrap started by mistake for an address the first one serves
// refuses to start, and leaves the first one's group steered: its restarts
// still lose nothing.
func TestSecondRpwrapOnTheSameAddressIsRefused(t *testing.T) {
	w := startWrapper(t, []string{"--listen", "127.0.0.1:0", "--ready", "notify", "--selector", "ebpf"})
	res := underLoad(t, w, 4, func(load *loadgen.Load) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // should it start after all
		defer cancel()
		second := exec.CommandContext(ctx, testBinary(t), "--listen", w.addr, "--control", shortTempDir(t)+"/ctl.sock",
			"--", testBinary(t), "serve-demo")
		second.Env = append(os.Environ(), asRpwrap+"=1")
		var out bytes.Buffer
		second.Stdout, second.Stderr = &out, &out
		second.Run()
		if code := second.ProcessState.ExitCode(); code != 1 || !strings.Contains(out.String(), "another SO_REUSEPORT socket is already bound there") {
			t.Errorf("second rpwrap: exit %d, %q; want exit 1 and the group's owner named", code, out.String())
		}
		for i := 0; i < 3; i++ {
			w.restart()
			waitRequests(t, load, load.Progress().Sent+50)
		}
	})
	requireNoLoss(t, res, 500)
}

// ctl takes its flags before or after the command.
func TestCtlFlagsGoBeforeOrAfterTheCommand(t *testing.T) {
	for _, args := range [][]string{
		{"ctl", "--control", "/nonexistent/rpwrap.sock", "status"},
		{"ctl", "status", "--control", "/nonexistent/rpwrap.sock"},
		{"ctl", "status", "--json", "--control=/nonexistent/rpwrap.sock"},
	} {
		code, _, errOut := runCLI(t, nil, args...)
		if code != 1 || !strings.Contains(errOut, "no rpwrap answers on /nonexistent/rpwrap.sock") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
	if code, _, _ := runCLI(t, nil, "ctl", "status", "extra"); code != 2 {
		t.Errorf("ctl status extra: exit %d, want 2", code)
	}
}
