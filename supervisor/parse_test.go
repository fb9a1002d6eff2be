//go:build linux

package supervisor

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseReady(t *testing.T) {
	good := map[string]Ready{
		"none":           {Kind: ReadyNone},
		"notify":         {Kind: ReadyNotify},
		"accept":         {Kind: ReadyAccept},
		"http:/healthz":  {Kind: ReadyHTTP, Arg: "/healthz"},
		"exec:pgrep foo": {Kind: ReadyExec, Arg: "pgrep foo"},
		"delay:2s":       {Kind: ReadyDelay, Delay: 2 * time.Second},
	}
	for in, want := range good {
		got, err := ParseReady(in)
		if err != nil || got != want {
			t.Errorf("ParseReady(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if got.String() != in {
			t.Errorf("ParseReady(%q).String() = %q", in, got.String())
		}
	}
	if got, err := ParseReady(""); err != nil || got != (Ready{}) {
		t.Errorf(`ParseReady("") = %+v, %v; want the default, Ready{}`, got, err)
	}
	for _, in := range []string{"ready", "notify:x", "http:", "http:healthz", "http:/a b", "exec:", "exec:  ", "delay:", "delay:soon", "delay:-1s"} {
		if _, err := ParseReady(in); err == nil || !strings.Contains(err.Error(), "want none, notify, accept") {
			t.Errorf("ParseReady(%q): %v, want an error listing the valid forms", in, err)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{
		"TERM": syscall.SIGTERM, "SIGTERM": syscall.SIGTERM, "term": syscall.SIGTERM,
		"WINCH": syscall.SIGWINCH, "quit": syscall.SIGQUIT, "15": syscall.SIGTERM, "28": syscall.SIGWINCH,
	} {
		if got, ok := ParseSignal(in); !ok || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "NOPE", "SIG", "0", "65", "-1", "1x"} {
		if sig, ok := ParseSignal(in); ok {
			t.Errorf("ParseSignal(%q) = %v, want no signal", in, sig)
		}
	}
}

func TestExitCodeLikeAShell(t *testing.T) {
	for _, c := range []struct {
		ws   syscall.WaitStatus
		code int
		say  string
	}{
		{0, 0, "exit status 0"},
		{3 << 8, 3, "exit status 3"},
		{syscall.WaitStatus(syscall.SIGKILL), 137, "killed by signal killed"},
		{syscall.WaitStatus(syscall.SIGTERM), 143, "killed by signal terminated"},
	} {
		e := Exit{Status: unixWaitStatus(c.ws)}
		if e.Code() != c.code || e.String() != c.say {
			t.Errorf("status %#x: Code %d %q, want %d %q", uint32(c.ws), e.Code(), e.String(), c.code, c.say)
		}
	}
}

func unixWaitStatus(ws syscall.WaitStatus) unix.WaitStatus { return unix.WaitStatus(ws) }
