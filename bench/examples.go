//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// The real servers run the configurations of examples/ (the ones the
// project documents and its tests run), adapted to the bench's directory,
// address and variants by replacing lines that the examples must go on
// containing.

const modulePath = "github.com/rpwrap/rpwrap"

// repoRoot is the repository the bench runs in: the first directory from
// the working directory up that holds rpwrap's go.mod.
var repoRoot = sync.OnceValues(func() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the repository: %w", err)
	}
	for {
		if isModuleRoot(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("the real servers' configurations come from examples/: run the bench inside the rpwrap repository (no go.mod of " + modulePath + " here or above)")
		}
		dir = parent
	}
})

func isModuleRoot(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if mod, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.TrimSpace(mod) == modulePath
		}
	}
	return false
}

// fromExample reads examples/name and replaces each repl[i] with
// repl[i+1], in order. It fails when the file cannot be read or no longer
// contains one of the texts it replaces.
func fromExample(name string, repl ...string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, "examples", name))
	if err != nil {
		return "", fmt.Errorf("read the example configuration: %w", err)
	}
	text := string(b)
	for i := 0; i+1 < len(repl); i += 2 {
		if !strings.Contains(text, repl[i]) {
			return "", fmt.Errorf("examples/%s no longer contains %q, which the bench replaces: update bench/realserver.go", name, repl[i])
		}
		text = strings.ReplaceAll(text, repl[i], repl[i+1])
	}
	return text, nil
}
