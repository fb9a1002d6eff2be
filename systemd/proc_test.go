//go:build linux

package systemd

import (
	"os"
	"slices"
	"testing"
)

func TestStatPPIDSurvivesOddCommandNames(t *testing.T) {
	for stat, want := range map[string]int{
		"42 (apache2) S 7 42 42 0 -1":   7,
		"42 (a) b (c) S 9 42 42 0 -1":   9,
		"42 (x y z)) R 1234 42 42 0 -1": 1234,
		"42 (()() S 3 0":                3,
	} {
		if got, err := statPPID([]byte(stat)); err != nil || got != want {
			t.Errorf("statPPID(%q) = %d, %v; want %d", stat, got, err, want)
		}
	}
	if _, err := statPPID([]byte("42 (truncated")); err == nil {
		t.Error("statPPID of a truncated line: want an error")
	}
}

func TestAncestryListsSelfAndParents(t *testing.T) {
	chain := ancestry(os.Getpid())
	if len(chain) < 2 || chain[0] != os.Getpid() || chain[1] != os.Getppid() {
		t.Fatalf("ancestry(self) = %v, want [%d %d ...]", chain, os.Getpid(), os.Getppid())
	}
	if slices.Contains(chain, 1) || slices.Contains(chain, 0) {
		t.Fatalf("ancestry(self) = %v, want pid 1 and 0 left out", chain)
	}
}
