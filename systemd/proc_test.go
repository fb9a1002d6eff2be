//go:build linux

package systemd

import (
	"os"
	"slices"
	"testing"
)

func TestAncestryListsSelfAndParents(t *testing.T) {
	chain := ancestry(os.Getpid())
	if len(chain) < 2 || chain[0] != os.Getpid() || chain[1] != os.Getppid() {
		t.Fatalf("ancestry(self) = %v, want [%d %d ...]", chain, os.Getpid(), os.Getppid())
	}
	if slices.Contains(chain, 1) || slices.Contains(chain, 0) {
		t.Fatalf("ancestry(self) = %v, want pid 1 and 0 left out", chain)
	}
}
