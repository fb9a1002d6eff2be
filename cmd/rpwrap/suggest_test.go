//go:build linux

package main

import (
	"strings"
	"testing"
)

// An unknown flag is named in the GNU form with the nearest known flag, for
// the wrapper, ctl (before and after its command) and demo; a word close to
// nothing gets no guess.
func TestUnknownFlagSuggestsTheNearest(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--lisen", ":80", "--", "true"}, "rpwrap: unknown flag --lisen; did you mean --listen?\nTry 'rpwrap --help'."},
		{[]string{"-lisen=:80", "--", "true"}, "unknown flag --lisen; did you mean --listen?"},
		{[]string{"--stop-dely", "2s", "--", "true"}, "did you mean --stop-delay?"},
		{[]string{"--drian-timeout", "2s", "--", "true"}, "did you mean --drain-timeout?"},
		{[]string{"--healt", ":0", "--", "true"}, "did you mean --health?"},
		{[]string{"--restart-on", "--", "true"}, "did you mean --restart-on-failure?"},
		{[]string{"ctl", "--jsn", "status"}, "rpwrap ctl: unknown flag --jsn; did you mean --json?\nTry 'rpwrap ctl --help'."},
		{[]string{"ctl", "restart", "--wiat"}, "unknown flag --wiat; did you mean --wait?"},
		{[]string{"ctl", "status", "--contrl", "/x"}, "did you mean --control?"},
		{[]string{"demo", "--restrats", "2"}, "rpwrap demo: unknown flag --restrats; did you mean --restarts?"},
	} {
		code, _, errOut := runCLI(t, nil, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("rpwrap %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(c.args, " "), code, errOut, c.want)
		}
	}
	for _, args := range [][]string{{"--frobnicate", "--", "true"}, {"ctl", "--xyz", "status"}, {"--st", "--", "true"}} {
		code, _, errOut := runCLI(t, nil, args...)
		if code != 2 || !strings.Contains(errOut, "unknown flag") || strings.Contains(errOut, "did you mean") {
			t.Errorf("rpwrap %s: exit %d, stderr %q; want exit 2, unknown flag and no guess", strings.Join(args, " "), code, errOut)
		}
	}
}
