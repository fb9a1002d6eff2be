package fdpass

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseSpecAcceptsEveryAddressForm(t *testing.T) {
	for _, tc := range []struct {
		in, name, network, addr string
	}{
		{":80", "tcp-80", "tcp", "0.0.0.0:80"},
		{"0.0.0.0:80", "tcp-80", "tcp", "0.0.0.0:80"},
		{"127.0.0.1:8080", "tcp-8080", "tcp", "127.0.0.1:8080"},
		{"[::]:80", "tcp-80", "tcp", "[::]:80"},
		{"[::1]:8080", "tcp-8080", "tcp", "[::1]:8080"},
		{"tcp://127.0.0.1:0", "tcp-0", "tcp", "127.0.0.1:0"},
		{"udp://:53", "udp-53", "udp", "0.0.0.0:53"},
		{"dns=udp://[::1]:53", "dns", "udp", "[::1]:53"},
		{"http=127.0.0.1:65535", "http", "tcp", "127.0.0.1:65535"},
		{"a=b=:80", "a=b", "tcp", "0.0.0.0:80"},
		{"localhost:8080", "tcp-8080", "tcp", "127.0.0.1:8080"},
		{"[::ffff:127.0.0.1]:80", "tcp-80", "tcp", "[::ffff:127.0.0.1]:80"},
	} {
		got, err := ParseSpec(tc.in)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", tc.in, err)
			continue
		}
		want := Spec{Name: tc.name, Network: tc.network, Addr: netip.MustParseAddrPort(tc.addr)}
		if got != want {
			t.Errorf("ParseSpec(%q) = %+v, want %+v", tc.in, got, want)
		}
		if again, err := ParseSpec(got.String()); err != nil || again != got {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", got.String(), again, err, got)
		}
	}
}

func TestParseSpecRejectsBadInputClearly(t *testing.T) {
	long := strings.Repeat("n", 256)
	for _, tc := range []struct{ in, want string }{
		{"", "want HOST:PORT"},
		{"8080", "want HOST:PORT"},
		{"127.0.0.1", "want HOST:PORT"},
		{"::1:80", "want HOST:PORT"},
		{"[::1]80", "want HOST:PORT"},
		{"127.0.0.1:", `port "" is not a number`},
		{"127.0.0.1:http", `port "http" is not a number`},
		{"127.0.0.1:-1", `port "-1" is not a number`},
		{"127.0.0.1:65536", "port 65536 is out of range 0-65535"},
		{"127.0.0.1:99999999999999999999", "out of range 0-65535"},
		{"sctp://:80", `unknown scheme "sctp://"`},
		{"nosuch.rpwrap.invalid:80", `resolve host "nosuch.rpwrap.invalid"`},
		{"[fe80::1%eth0]:80", "IPv6 zone"},
		{"[127.0.0.1:80]:80", "is not an IPv6 address"},
		{"=:80", "empty name"},
		{"a:b=:80", `name "a:b" holds ':'`},
		{"a\nb=:80", "printable ASCII only"},
		{"é=:80", "printable ASCII only"},
		{long + "=:80", "name is 256 bytes long, LISTEN_FDNAMES allows at most 255"},
	} {
		_, err := ParseSpec(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "parse listen address") {
			t.Errorf("ParseSpec(%q) error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

func TestParseSpecAcceptsLongestName(t *testing.T) {
	name := strings.Repeat("n", 255)
	if s, err := ParseSpec(name + "=:80"); err != nil || s.Name != name {
		t.Fatalf("ParseSpec with a 255-byte name: %+v, %v", s, err)
	}
}

func TestCheckDuplicatesFindsRepeatedAddressOrName(t *testing.T) {
	parse := func(ss ...string) []Spec {
		var specs []Spec
		for _, s := range ss {
			spec, err := ParseSpec(s)
			if err != nil {
				t.Fatal(err)
			}
			specs = append(specs, spec)
		}
		return specs
	}
	for _, tc := range []struct {
		specs []string
		want  string
	}{
		{[]string{":80", "v6=[::]:80", "udp://:80", "a=127.0.0.1:80"}, ""},
		{[]string{":80", "web=0.0.0.0:80"}, "listen address tcp://0.0.0.0:80 given twice"},
		{[]string{"127.0.0.1:8080", "[::1]:8080"}, `listener name "tcp-8080" given twice`},
		{[]string{"x=:1", "x=udp://:2"}, `listener name "x" given twice`},
	} {
		err := CheckDuplicates(parse(tc.specs...))
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckDuplicates(%q) = %v, want %q", tc.specs, err, tc.want)
		}
	}
}

// fakeResolve resolves localhost only, so fuzzing makes no DNS query.
func fakeResolve(host string) ([]netip.Addr, error) {
	if host == "localhost" {
		return []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")}, nil
	}
	return nil, errors.New("no such host")
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{":80", "udp://[::1]:53", "http=127.0.0.1:8080", "a=b=tcp://:0", "x:y=:1", "[::]:65536"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := parseSpec(s, fakeResolve)
		if err != nil {
			return
		}
		if spec.Network != "tcp" && spec.Network != "udp" || !spec.Addr.IsValid() || checkName(spec.Name) != nil {
			t.Fatalf("parseSpec(%q) = %+v: invalid result", s, spec)
		}
		again, err := parseSpec(spec.String(), fakeResolve)
		if err != nil || again != spec {
			t.Fatalf("parseSpec(%q) = %+v, but its String %q parses to %+v, %v", s, spec, spec.String(), again, err)
		}
	})
}

func TestParseSpecsGivesDistinctAddressesDistinctDefaultNames(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{[]string{"127.0.0.1:80"}, []string{"tcp-80"}},
		{[]string{"[::1]:80"}, []string{"tcp-80"}},
		{[]string{"127.0.0.1:80", "[::1]:80"}, []string{"tcp-80", "tcp6-80"}},
		{[]string{"[::]:80", ":80"}, []string{"tcp6-80", "tcp-80"}},
		{[]string{"udp://:53", "udp://[::]:53", ":53"}, []string{"udp-53", "udp6-53", "tcp-53"}},
		{[]string{"127.0.0.1:80", "127.0.0.2:80", "[::1]:80"}, []string{"tcp-127.0.0.1-80", "tcp-127.0.0.2-80", "tcp6-80"}},
		{[]string{"[::1]:80", "[fd00::1]:80"}, []string{"tcp6-__1-80", "tcp6-fd00__1-80"}},
		{[]string{"web=127.0.0.1:80", "[::1]:80"}, []string{"web", "tcp-80"}},
		{[]string{"127.0.0.1:80", "[::1]:80", "127.0.0.1:81"}, []string{"tcp-80", "tcp6-80", "tcp-81"}},
	} {
		specs, err := ParseSpecs(tc.in)
		if err != nil {
			t.Errorf("ParseSpecs(%q): %v", tc.in, err)
			continue
		}
		var got []string
		for _, s := range specs {
			got = append(got, s.Name)
			if again, err := ParseSpec(s.String()); err != nil || again != s {
				t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", s.String(), again, err, s)
			}
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("ParseSpecs(%q) names %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseSpecsKeepsRefusingRepeatsAndExplicitNameClashes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"127.0.0.1:80", "127.0.0.1:80"}, "given twice"},
		{[]string{"a=127.0.0.1:80", "a=[::1]:80"}, `listener name "a" given twice`},
		{[]string{"tcp6-80=127.0.0.1:81", "127.0.0.1:80", "[::1]:80"}, `listener name "tcp6-80" given twice`},
		{[]string{"127.0.0.1:80", "nope"}, `parse listen address "nope"`},
	} {
		if _, err := ParseSpecs(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSpecs(%q) error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}
