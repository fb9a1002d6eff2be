//go:build linux

package systemd

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// maxAncestry bounds the walk up the process tree; a server's notifying
// process is rarely more than a few forks below it.
const maxAncestry = 32

// ancestry returns pid followed by its ancestors, as far as /proc shows them
// (up to maxAncestry entries, stopping before pid 1 or 0). It reads the tree at
// the time of the call: a process that has already exited and been reaped
// ends the chain.
func ancestry(pid int) []int {
	var chain []int
	for pid > 1 && len(chain) < maxAncestry {
		chain = append(chain, pid)
		ppid, err := parentPID(pid)
		if err != nil {
			break
		}
		pid = ppid
	}
	return chain
}

// parentPID reads the parent pid of pid from /proc/PID/stat.
func parentPID(pid int) (int, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return statPPID(stat)
}

// statPPID returns the fourth field of a /proc/PID/stat line. The second
// field, the command name in parentheses, may itself hold spaces and
// parentheses, so the parse starts after the last ')'.
func statPPID(stat []byte) (int, error) {
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	f := bytes.Fields(rest)
	if len(f) < 2 {
		return 0, fmt.Errorf("parse /proc/PID/stat %q: no parent pid after the command name", stat)
	}
	return strconv.Atoi(string(f[1]))
}
