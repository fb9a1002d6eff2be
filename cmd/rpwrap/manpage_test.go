//go:build linux

package main

import (
	"bytes"
	"flag"
	"os/exec"
	"strings"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

func manPage(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeManPage(&b, "v1.2.3", "2025-01-02"); err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(b.String(), `\-`, "-")
}

// Every flag of the wrapper's flag set, and every flag that ctl's and
// demo's usage texts name, is in the man page.
func TestManPageHasEveryFlag(t *testing.T) {
	page := manPage(t)
	wrapFlags().VisitAll(func(f *flag.Flag) {
		if !strings.Contains(page, flagSpelling(f.Name)+" ") && !strings.Contains(page, flagSpelling(f.Name)+",") {
			t.Errorf("man page lacks %s", flagSpelling(f.Name))
		}
	})
	for _, f := range append(usageFlags(ctlUsage), usageFlags(demoUsage)...) {
		if !strings.Contains(page, f) {
			t.Errorf("man page lacks %s", f)
		}
	}
	for _, want := range []string{".TH RPWRAP 1 \"2025-01-02\" \"rpwrap v1.2.3\"", ".SH NAME\nrpwrap - zero", ".SH SYNOPSIS", ".SH \"OPTIONS\"", ".SH \"EXIT STATUS\"", ".SH \"RPWRAP CTL\""} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
}

// No line of the page starts with a roff control character by accident.
func TestManPageLinesAreText(t *testing.T) {
	for i, line := range strings.Split(manPage(t), "\n") {
		if strings.HasPrefix(line, "'") {
			t.Errorf("line %d starts with a quote: %q", i+1, line)
		}
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(line, ".") && !strings.Contains(".TH .SH .PP .RS .RE .nf .fi .BR .nh .ad", name) {
			t.Errorf("line %d is an unknown request: %q", i+1, line)
		}
	}
}

func TestManPageRendersWithoutWarnings(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		testutil.SkipOrFail(t, "groff not installed (apt-get install groff-base)")
	}
	var b bytes.Buffer
	if err := writeManPage(&b, "v1.2.3", "2025-01-02"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = &b
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff: %v\n%s", err, out)
	}
}

func completionScript(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeBashCompletion(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestCompletionHasEveryFlag(t *testing.T) {
	words := map[string]bool{}
	for _, w := range strings.FieldsFunc(completionScript(t), func(r rune) bool { return strings.ContainsRune(" \t\n\"|)", r) }) {
		words[w] = true
	}
	fs := wrapFlags()
	fs.VisitAll(func(f *flag.Flag) {
		if !words[flagSpelling(f.Name)] {
			t.Errorf("completion lacks %s", flagSpelling(f.Name))
		}
	})
	for name := range flagValues {
		if fs.Lookup(name) == nil {
			t.Errorf("flagValues names %q, which is not a flag", name)
		}
	}
	for _, name := range fileFlags {
		if fs.Lookup(name) == nil {
			t.Errorf("fileFlags names %q, which is not a flag", name)
		}
	}
}

// complete runs the completion function in bash on words, the last one
// being completed, and returns what it offers.
func complete(t *testing.T, words ...string) []string {
	t.Helper()
	script := completionScript(t) + `
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _rpwrap; printf '%s\n' "${COMPREPLY[@]}"`
	out, err := exec.Command("bash", append([]string{"-c", script, "bash"}, words...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

func TestCompletionOffers(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		testutil.SkipOrFail(t, "bash not installed")
	}
	for _, c := range []struct {
		words []string
		want  string
	}{
		{[]string{"rpwrap", "ct"}, "ctl"},
		{[]string{"rpwrap", "ctl", "re"}, "restart"},
		{[]string{"rpwrap", "ctl", "st"}, "status"},
		{[]string{"rpwrap", "ctl", "restart", "--wai"}, "--wait"},
		{[]string{"rpwrap", "ctl", "pr"}, "promote"},
		{[]string{"rpwrap", "--listen", ":80", "--pa"}, "--pass"},
		{[]string{"rpwrap", "--pass", "n"}, "nginx"},
		{[]string{"rpwrap", "-s", "WI"}, "WINCH"},
		{[]string{"rpwrap", "demo", "--st"}, "--stuck"},
	} {
		got := complete(t, c.words...)
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("%q: got %q, want %q", c.words, got, c.want)
		}
	}
	if got := complete(t, "rpwrap", "--backlog", ""); len(got) != 0 {
		t.Errorf("after --backlog: got %q, want nothing", got)
	}
}
