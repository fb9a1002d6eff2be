//go:build linux

package supervisor

import (
	"os"
	"syscall"
)

// signalNames are the signals rpwrap acts on or forwards, by the names
// --stop-signal accepts.
var signalNames = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
	"WINCH": syscall.SIGWINCH, "ALRM": syscall.SIGALRM, "CONT": syscall.SIGCONT,
	"TSTP": syscall.SIGTSTP, "TTIN": syscall.SIGTTIN, "TTOU": syscall.SIGTTOU,
	"PWR": syscall.SIGPWR, "VTALRM": syscall.SIGVTALRM, "XCPU": syscall.SIGXCPU,
	"XFSZ": syscall.SIGXFSZ, "KILL": syscall.SIGKILL,
}

// ParseSignal accepts TERM, SIGTERM, term or a number.
func ParseSignal(s string) (syscall.Signal, bool) {
	up := []byte(s)
	for i, c := range up {
		if 'a' <= c && c <= 'z' {
			up[i] = c - 'a' + 'A'
		}
	}
	name := string(up)
	if len(name) > 3 && name[:3] == "SIG" {
		name = name[3:]
	}
	if sig, ok := signalNames[name]; ok {
		return sig, true
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
		if n > 64 {
			return 0, false
		}
	}
	return syscall.Signal(n), n > 0
}

// forwardedSignals are the signals rpwrap catches: SIGTERM and SIGINT stop
// it, SIGHUP restarts the server, and every other one is forwarded to the
// active generation, as tini does. SIGCHLD belongs to the reaper; SIGKILL
// and SIGSTOP cannot be caught; SIGURG is the Go runtime's own; SIGPIPE,
// SIGSEGV and the like concern rpwrap only.
func forwardedSignals() []os.Signal {
	sigs := make([]os.Signal, 0, len(signalNames))
	for _, sig := range signalNames {
		if sig != syscall.SIGKILL {
			sigs = append(sigs, sig)
		}
	}
	return append(sigs, UpgradeSignal)
}
