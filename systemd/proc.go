//go:build linux

package systemd

import "github.com/rpwrap/rpwrap/internal/procfs"

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
	st, err := procfs.ReadStat(pid)
	return st.PPid, err
}
