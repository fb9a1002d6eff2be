//go:build linux

// Package procfs reads the few things rpwrap needs from /proc (proc(5)):
// a process's state and parents, the tree of its descendants, and the
// sockets its processes hold. It is shared by rpwrap's packages and
// tests, so that /proc/PID/stat is parsed in one place.
package procfs

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Stat is what rpwrap reads of /proc/PID/stat.
type Stat struct {
	State byte // R, S, D, Z, X, T, ...
	PPid  int
	PGrp  int
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
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, errMalformed
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return Stat{}, errMalformed
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return Stat{}, errMalformed
	}
	return Stat{State: f[0][0], PPid: ppid, PGrp: pgrp}, nil
}

type malformed struct{}

func (malformed) Error() string { return "malformed /proc/PID/stat" }

var errMalformed error = malformed{}

// Alive reports whether pid runs and is not a zombie.
func Alive(pid int) bool {
	st, err := ReadStat(pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

// Tree lists pid and all its live descendants, pid first.
func Tree(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := ReadStat(p); err == nil && st.PPid > 0 {
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

// HoldsAny reports whether one of the processes holds one of inodes.
func HoldsAny(pids []int, inodes map[uint64]bool) bool {
	found := false
	for _, pid := range pids {
		eachSocket(pid, func(ino uint64) bool {
			found = inodes[ino]
			return !found
		})
		if found {
			return true
		}
	}
	return false
}

// eachSocket calls fn with the inode of each socket pid holds, until fn
// returns false.
func eachSocket(pid int, fn func(uint64) bool) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.HasPrefix(target, "socket:[") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(target[len("socket:["):], "]"), 10, 64)
		if err == nil && !fn(n) {
			return
		}
	}
}
