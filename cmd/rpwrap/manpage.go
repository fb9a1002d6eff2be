//go:build linux

package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The man page is rendered from the same text as --help, `ctl --help` and
// `demo --help`, so the two cannot drift apart; packaging/build-deb.sh runs
// the hidden `rpwrap --help-man` to write rpwrap(1).

// manSections turns a paragraph that starts with the key into a section of
// the page, under the value.
var manSections = []struct{ prefix, title string }{
	{"Flags (", "OPTIONS"},
	{"Signals:", "SIGNALS"},
	{"Exit status:", "EXIT STATUS"},
}

// writeManPage writes rpwrap(1) in roff (man(7)) to w. date is the page's
// date, YYYY-MM-DD.
func writeManPage(w io.Writer, version, date string) error {
	title, rest, _ := strings.Cut(usage, "\n")
	_, summary, _ := strings.Cut(title, " — ")
	synopsis, rest, _ := strings.Cut(strings.TrimLeft(rest, "\n"), "\n\n")
	var b strings.Builder
	fmt.Fprintf(&b, ".TH RPWRAP 1 %q %q \"User Commands\"\n", date, "rpwrap "+version)
	b.WriteString(".nh\n.ad l\n") // flags are not hyphenated, lines not stretched
	fmt.Fprintf(&b, ".SH NAME\nrpwrap \\- %s\n", roffEscape(summary))
	b.WriteString(".SH SYNOPSIS\n")
	renderRoff(&b, strings.TrimPrefix(synopsis, "Usage:\n"), false)
	b.WriteString(".SH DESCRIPTION\n")
	renderRoff(&b, rest, true)
	b.WriteString(".SH \"RPWRAP CTL\"\n")
	renderRoff(&b, ctlUsage, false)
	b.WriteString(".SH \"RPWRAP DEMO\"\n")
	renderRoff(&b, demoUsage, false)
	b.WriteString(".SH \"SEE ALSO\"\n")
	b.WriteString(".BR sd_listen_fds (3),\n.BR sd_notify (3),\n.BR systemd.service (5),\n.BR socket (7)\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// renderRoff writes text as roff: unindented lines as filled paragraphs,
// each run of indented lines as it is (.nf), a little indented. With
// sections, the paragraphs of manSections open sections of the page.
func renderRoff(b *strings.Builder, text string, sections bool) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case line == "":
			b.WriteString(".PP\n")
		case strings.HasPrefix(line, " "):
			j := i
			for j < len(lines) && (strings.HasPrefix(lines[j], " ") || blankInsideBlock(lines, j)) {
				j++
			}
			b.WriteString(".RS 2\n.nf\n")
			for _, l := range lines[i:j] {
				b.WriteString(roffEscape(strings.TrimPrefix(l, "  ")) + "\n")
			}
			b.WriteString(".fi\n.RE\n")
			i = j - 1
		default:
			if t := sectionTitle(line, i, lines); sections && t != "" {
				fmt.Fprintf(b, ".SH %q\n", t)
			}
			b.WriteString(roffEscape(line) + "\n")
		}
	}
}

// blankInsideBlock reports whether lines[j] is an empty line between two
// indented ones.
func blankInsideBlock(lines []string, j int) bool {
	return lines[j] == "" && j+1 < len(lines) && strings.HasPrefix(lines[j+1], " ")
}

// sectionTitle is the section that lines[i] opens, or "".
func sectionTitle(line string, i int, lines []string) string {
	if i > 0 && lines[i-1] != "" {
		return ""
	}
	for _, s := range manSections {
		if strings.HasPrefix(line, s.prefix) {
			return s.title
		}
	}
	return ""
}

// roffEscape makes one line of text safe for roff: backslashes, hyphens
// (so that --flags copy as typed), a leading control character, the dash.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	s = strings.ReplaceAll(s, "—", `\(em`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// manDate is the page's date: SOURCE_DATE_EPOCH when set (reproducible
// builds), else today.
func manDate(e env) string {
	t := time.Now()
	if sec, err := strconv.ParseInt(e.getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		t = time.Unix(sec, 0)
	}
	return t.UTC().Format("2006-01-02")
}

// wrapFlags is the wrapper's flag set, for the man page's and the
// completion's tests and generators.
func wrapFlags() *flag.FlagSet { return newFlagSet(&options{}, io.Discard) }

// flagSpelling is how --help writes a flag: -l, --listen.
func flagSpelling(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}
