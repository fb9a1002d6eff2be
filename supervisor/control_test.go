//go:build linux

package supervisor

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParseRequest feeds ParseRequest arbitrary control lines: it never
// panics, accepts only the three commands, refuses lines over maxRequest, and
// what it accepts survives a round trip through the client's encoding.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		`{"command":"restart"}`, `{"command":"status"}` + "\n", `{"command":"sockets"}`, `{"command":"stop"}`, `{}`, `null`, ``,
		`{"command":1}`, `{"command":"restart","extra":true}`, `{"COMMAND":"status"}`, `{"command":"restart"}{"command":"status"}`,
		"\xff\xfe", `{"command":"rest` + "\x00" + `art"}`, `[` + strings.Repeat(`[`, 5000),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if r.Command != "restart" && r.Command != "status" && r.Command != "sockets" {
			t.Fatalf("accepted command %q", r.Command)
		}
		if len(b) > maxRequest {
			t.Fatalf("accepted a %d-byte request", len(b))
		}
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := ParseRequest(line); err != nil || again != r {
			t.Fatalf("round trip of %q: %+v, %v", line, again, err)
		}
	})
}

func TestParseRequestRefusesWhatIsNotACommand(t *testing.T) {
	for in, want := range map[string]string{
		`{"command":"stop"}`:              `unknown command "stop" (want restart, status, sockets, events, promote, abort or upgrade)`,
		`not json`:                        "control request: invalid character",
		strings.Repeat(" ", maxRequest+1): "control request longer than 4096 bytes",
	} {
		if _, err := ParseRequest([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRequest(%.30q) = %v, want an error containing %q", in, err, want)
		}
	}
}

// The control socket is created mode 0600 in a directory created 0700; a
// second rpwrap on the same path is refused while the first answers, and a
// stale socket file is replaced.
func TestControlSocketModeAndOwnership(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "rpwrap")
	path := filepath.Join(dir, "ctl.sock")
	c, err := listenControl(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %o", p, fi.Mode(), err, want)
		}
	}
	if _, err := listenControl(path, nil); err == nil || !strings.Contains(err.Error(), "in use by another rpwrap") {
		t.Errorf("second control socket on %s: %v, want refused", path, err)
	}
	c.l.SetUnlinkOnClose(false)
	c.close() // the socket file stays: a stale one, as a killed rpwrap leaves
	c2, err := listenControl(path, nil)
	if err != nil {
		t.Fatalf("replace the stale socket: %v", err)
	}
	c2.close()
}

func TestBackoffDoublesUpToItsCeilingAndResets(t *testing.T) {
	b := newBackoff()
	var got []time.Duration
	for i := 0; i < 10; i++ {
		got = append(got, b.next())
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 10 * time.Second, 10 * time.Second, 10 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff waits %v, want %v", got, want)
		}
	}
	b.reset()
	if d := b.next(); d != minBackoff {
		t.Errorf("after reset: %v, want %v", d, minBackoff)
	}
}
