//go:build linux

package main

import (
	"flag"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// flagValues are the words offered after a flag that takes one of a few
// values; a test checks each name is a flag.
var flagValues = map[string]string{
	"pass":        "listen-fds nginx bind",
	"selector":    "auto ebpf cbpf",
	"udp-flows":   "tuple quic off",
	"ready":       "none notify accept http: exec: delay:",
	"stop-signal": "TERM QUIT WINCH INT HUP USR1 USR2",
	"s":           "TERM QUIT WINCH INT HUP USR1 USR2",
	"log-format":  "text json",
	"log-level":   "debug info warn error",
}

// fileFlags are completed with file names.
var fileFlags = []string{"control"}

var usageFlag = regexp.MustCompile(`--[a-z][a-z-]*`)

// usageFlags are the long flags a usage text names, sorted, once each.
func usageFlags(text string) []string {
	seen := map[string]bool{"--help": true}
	for _, f := range usageFlag.FindAllString(text, -1) {
		seen[f] = true
	}
	out := make([]string, 0, len(seen))
	for f := range seen {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// writeBashCompletion writes the bash completion script for rpwrap: the
// wrapper's flags (from its flag set) and their values, `ctl restart|status`
// and ctl's and demo's flags (from their usage texts), and after "--" the
// command's own completion.
func writeBashCompletion(w io.Writer) error {
	var flags, valued []string
	wrapFlags().VisitAll(func(f *flag.Flag) {
		flags = append(flags, flagSpelling(f.Name))
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
			valued = append(valued, flagSpelling(f.Name))
		}
	})
	var cases strings.Builder
	for _, name := range sortedKeys(flagValues) {
		fmt.Fprintf(&cases, "\t%s) COMPREPLY=($(compgen -W %q -- \"$cur\")); return ;;\n", flagSpelling(name), flagValues[name])
	}
	for _, name := range fileFlags {
		fmt.Fprintf(&cases, "\t%s) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", flagSpelling(name))
	}
	fmt.Fprintf(&cases, "\t%s) return ;;\n", strings.Join(valued, "|"))
	_, err := fmt.Fprintf(w, bashCompletion,
		strings.Join(append(ctlCommands, usageFlags(ctlUsage)...), " "),
		strings.Join(usageFlags(demoUsage), " "),
		cases.String(),
		strings.Join(flags, " "))
	return err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

const bashCompletion = `# bash completion for rpwrap(1), written by 'rpwrap --help-completion'
# from rpwrap's own flag set and usage texts.
_rpwrap() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} i
	for ((i = 1; i < COMP_CWORD; i++)); do
		if [[ ${COMP_WORDS[i]} == -- ]]; then
			if declare -F _command_offset >/dev/null; then
				_command_offset $((i + 1))
			else
				COMPREPLY=($(compgen -c -- "$cur"))
			fi
			return
		fi
	done
	case ${COMP_WORDS[1]} in
	ctl)
		case $prev in
		--control) COMPREPLY=($(compgen -f -- "$cur")); return ;;
		--timeout) return ;;
		esac
		COMPREPLY=($(compgen -W "%s" -- "$cur"))
		return ;;
	demo)
		case $prev in
		--selector) COMPREPLY=($(compgen -W "auto ebpf cbpf" -- "$cur")); return ;;
		--restarts|--clients|--interval) return ;;
		esac
		COMPREPLY=($(compgen -W "%s" -- "$cur"))
		return ;;
	esac
	case $prev in
%s	esac
	local words="%s"
	if ((COMP_CWORD == 1)); then
		words="ctl demo $words"
	fi
	COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _rpwrap rpwrap
`
