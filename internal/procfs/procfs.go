//go:build linux

// Package procfs reads the few things rpwrap needs from /proc (proc(5)):
// a process's state and parents, the tree of its descendants, and the
// sockets its processes hold. It is shared by rpwrap's packages and
// tests, so that /proc/PID/stat is parsed in one place.
package procfs

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Stat is what rpwrap reads of /proc/PID/stat.
type Stat struct {
	Comm  string // the command name, without its parentheses
	State byte   // R, S, D, Z, X, T, ...
	PPid  int
	PGrp  int
	UTime uint64 // user CPU time, in clock ticks (sysconf(_SC_CLK_TCK))
	STime uint64 // system CPU time, in clock ticks
}

// ReadStat parses /proc/PID/stat. It fails when the process is gone.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return parseStat(b)
}

// parseStat reads the fields after the command name, which may itself
// hold spaces and parentheses: the last ')' ends it.
func parseStat(b []byte) (Stat, error) {
	open, i := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || i < open {
		return Stat{}, errMalformed
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return Stat{}, errMalformed
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, errMalformed
	}
	st := Stat{Comm: string(b[open+1 : i]), State: f[0][0], PPid: ppid}
	if len(f) > 2 {
		st.PGrp, _ = strconv.Atoi(f[2])
	}
	if len(f) > 12 { // fields 14 and 15
		st.UTime, _ = strconv.ParseUint(f[11], 10, 64)
		st.STime, _ = strconv.ParseUint(f[12], 10, 64)
	}
	return st, nil
}

type malformed struct{}

func (malformed) Error() string { return "malformed /proc/PID/stat" }

var errMalformed error = malformed{}

// Alive reports whether pid runs and is not a zombie.
func Alive(pid int) bool {
	st, err := ReadStat(pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

// All reads the stat of every process, by pid.
func All() map[int]Stat {
	all := map[int]Stat{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := ReadStat(p); err == nil {
			all[p] = st
		}
	}
	return all
}

// Children lists the pids whose parent is ppid, in ascending order.
func Children(ppid int) []int {
	var kids []int
	for p, st := range All() {
		if st.PPid == ppid {
			kids = append(kids, p)
		}
	}
	slices.Sort(kids)
	return kids
}

// Tree lists pid and all its descendants, pid first.
func Tree(pid int) []int {
	children := map[int][]int{}
	for p, st := range All() {
		if st.PPid > 0 {
			children[st.PPid] = append(children[st.PPid], p)
		}
	}
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree
}

// SocketInodes collects the inodes of every socket the processes hold
// open, the N of "socket:[N]" in /proc/PID/fd.
func SocketInodes(pids []int) map[uint64]bool {
	inodes := map[uint64]bool{}
	for _, pid := range pids {
		eachSocket(pid, func(ino uint64) bool { inodes[ino] = true; return true })
	}
	return inodes
}

// HoldsAny reports whether one of the processes holds one of inodes. A
// process whose descriptors rpwrap may not read (another user's, without
// CAP_SYS_PTRACE) counts as holding them: nothing says it does not.
func HoldsAny(pids []int, inodes map[uint64]bool) bool {
	found := false
	for _, pid := range pids {
		err := eachSocket(pid, func(ino uint64) bool {
			found = inodes[ino]
			return !found
		})
		if found || errors.Is(err, fs.ErrPermission) {
			return true
		}
	}
	return false
}

// eachSocket calls fn with the inode of each socket pid holds, until fn
// returns false. It fails when pid's descriptors cannot be listed (it is
// gone, or they are not rpwrap's to read).
func eachSocket(pid int, fn func(uint64) bool) error {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.HasPrefix(target, "socket:[") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(target[len("socket:["):], "]"), 10, 64)
		if err == nil && !fn(n) {
			return nil
		}
	}
	return err
}
