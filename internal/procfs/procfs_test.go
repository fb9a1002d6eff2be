//go:build linux

package procfs

import (
	"os"
	"os/exec"
	"testing"
)

func TestParseStatCommandWithParentheses(t *testing.T) {
	st, err := parseStat([]byte("42 (a) b (c)) S 7 42 42 0 -1"))
	if err != nil || st != (Stat{Comm: "a) b (c)", State: 'S', PPid: 7, PGrp: 42}) {
		t.Fatalf("parseStat = %+v, %v", st, err)
	}
	for stat, want := range map[string]int{
		"42 (apache2) S 7 42 42 0 -1":   7,
		"42 (a) b (c) S 9 42 42 0 -1":   9,
		"42 (x y z)) R 1234 42 42 0 -1": 1234,
		"42 (()() S 3 0":                3,
	} {
		if st, err := parseStat([]byte(stat)); err != nil || st.PPid != want {
			t.Errorf("parseStat(%q) = %+v, %v; want parent %d", stat, st, err, want)
		}
	}
	for _, bad := range []string{"", "1 (x", "42 (truncated", "1 (x) S", "1 (x) SS 1 1", "1 (x) S a 1"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestTreeAndSockets(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	tree := Tree(os.Getpid())
	found := false
	for _, p := range tree {
		found = found || p == cmd.Process.Pid
	}
	if tree[0] != os.Getpid() || !found {
		t.Fatalf("Tree(self) = %v, want self first and the child %d in it", tree, cmd.Process.Pid)
	}
	if !Alive(cmd.Process.Pid) {
		t.Fatal("child not alive")
	}
	if HoldsAny([]int{cmd.Process.Pid}, map[uint64]bool{1: true}) {
		t.Fatal("sleep holds no socket")
	}
}
