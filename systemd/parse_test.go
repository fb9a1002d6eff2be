package systemd

import (
	"maps"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseNotify(t *testing.T) {
	cases := []struct {
		in   string
		want map[string]string
	}{
		{"READY=1", map[string]string{"READY": "1"}},
		{"READY=1\nSTATUS=serving on :80\n", map[string]string{"READY": "1", "STATUS": "serving on :80"}},
		{"STATUS=a=b", map[string]string{"STATUS": "a=b"}},
		{"STATUS=", map[string]string{"STATUS": ""}},
		{"STATUS=one\nSTATUS=two", map[string]string{"STATUS": "two"}},
		{"X_1=y", map[string]string{"X_1": "y"}},
		{"", map[string]string{}},
		{"\n\n", map[string]string{}},
		{"READY", map[string]string{}},
		{"=1", map[string]string{}},
		{"ready=1", map[string]string{}},
		{"READY =1", map[string]string{}},
		{" READY=1", map[string]string{}},
		{"1READY=1", map[string]string{}},
		{"READY=1\xff\nSTATUS=ok", map[string]string{"STATUS": "ok"}},
		{"READY=1\x00\nSTATUS=ok", map[string]string{"STATUS": "ok"}},
		{"STATUS=é ✓", map[string]string{"STATUS": "é ✓"}},
		{"READY=1\r\n", map[string]string{"READY": "1\r"}},
	}
	for _, c := range cases {
		if got := ParseNotify([]byte(c.in)); !maps.Equal(got, c.want) {
			t.Errorf("ParseNotify(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// FuzzParseNotify checks that any datagram parses without panic into valid
// fields, and that writing the fields back out parses to the same fields.
func FuzzParseNotify(f *testing.F) {
	f.Add([]byte("READY=1\nSTATUS=serving\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fields := ParseNotify(b)
		var out strings.Builder
		for k, v := range fields {
			if !validKey([]byte(k)) || !utf8.ValidString(v) || strings.ContainsAny(v, "\n\x00") {
				t.Fatalf("ParseNotify(%q) gave %q=%q", b, k, v)
			}
			out.WriteString(k + "=" + v + "\n")
		}
		if again := ParseNotify([]byte(out.String())); !maps.Equal(again, fields) {
			t.Fatalf("round trip of %q: %q != %q", b, again, fields)
		}
	})
}
