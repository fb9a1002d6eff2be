//go:build linux

package supervisor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CheckCommand is the hidden first argument with which rpwrap runs the
// binary it is about to upgrade onto: `BINARY __upgrade-check ARGS…`, the
// state document's descriptor in $RPWRAP_UPGRADE_STATE.
const CheckCommand = "__upgrade-check"

// CheckAnswer is what the check prints on stdout, one JSON line.
type CheckAnswer struct {
	Rpwrap       string `json:"rpwrap"` // "upgrade-check": this is an rpwrap
	Version      string `json:"version"`
	StateVersion int    `json:"state_version"` // the newest document version it reads
	OK           bool   `json:"ok"`
	Error        string `json:"error,omitempty"`
}

// checkTimeout bounds the check of a new binary.
const checkTimeout = 10 * time.Second

// checkBinary runs bin in check mode with the state document as it would
// be now, and returns bin's version when bin says it can take over.
func (s *Supervisor) checkBinary(bin string) (string, error) {
	memfd, err := unix.MemfdCreate("rpwrap-state-check", unix.MFD_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("check %s: %w", bin, os.NewSyscallError("memfd_create", err))
	}
	doc := os.NewFile(uintptr(memfd), "rpwrap-state-check")
	defer doc.Close()
	s.mu.Lock()
	st, _ := s.stateLocked(bin, upgradeRequest{}, UpgradeResult{}, nil, nil)
	s.mu.Unlock()
	if err := writeState(memfd, st); err != nil {
		return "", err
	}
	out, err := s.runCheck(bin, doc)
	if err != nil {
		return "", err
	}
	var a CheckAnswer
	line, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n"))
	if json.Unmarshal(line, &a) != nil || a.Rpwrap != "upgrade-check" {
		return "", fmt.Errorf("%s is not an rpwrap, or one too old to upgrade onto in place: its check (%s %s) answered %q", bin, bin, CheckCommand, clip(out))
	}
	if !a.OK {
		return a.Version, fmt.Errorf("%s (rpwrap %s) cannot take over from this one: %s", bin, a.Version, a.Error)
	}
	return a.Version, nil
}

func clip(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// runCheck runs `bin __upgrade-check ARGS…` through the reaper (a wait of
// its own would race the reaper's) and returns its stdout and stderr.
func (s *Supervisor) runCheck(bin string, doc *os.File) ([]byte, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", bin, err)
	}
	defer r.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("check %s: %w", bin, err)
	}
	defer null.Close()
	var env []string
	for _, kv := range os.Environ() {
		if name, _, _ := cut(kv); name != envState {
			env = append(env, kv)
		}
	}
	env = append(env, envState+"=3")
	p := procSpec{exe: bin, argv: append([]string{bin, CheckCommand}, os.Args[1:]...), env: env, files: []*os.File{null, w, w, doc}}
	proc, exit, err := s.reaper.start(p.fork)
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", bin, err)
	}
	defer proc.release()
	outc := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(io.LimitReader(r, 64<<10)); outc <- b }()
	t := time.NewTimer(checkTimeout)
	defer t.Stop()
	select {
	case e := <-exit:
		out := <-outc
		if e.Code() != 0 && !bytes.Contains(out, []byte(`"upgrade-check"`)) {
			return nil, fmt.Errorf("%s is not an rpwrap that can be upgraded onto: its check (%s %s) ended with %s: %q", bin, bin, CheckCommand, e, clip(out))
		}
		return out, nil
	case <-t.C:
		proc.killGroup()
		<-exit
		return nil, fmt.Errorf("%s did not answer its check (%s %s) within %s: not an rpwrap, or hung", bin, bin, CheckCommand, checkTimeout)
	}
}
