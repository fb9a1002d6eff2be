//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/testutil"
)

// BenchmarkShimStart measures what the exec shim adds to starting a
// server: fork+exec+wait of /bin/true directly, and through the rpwrap
// binary as the shim (it re-executes itself, sets LISTEN_PID, execs).
func BenchmarkShimStart(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "rpwrap")
	if err := testutil.GoBuild(bin, "."); err != nil {
		b.Fatal(err)
	}
	spec, _ := fdpass.ParseSpec("127.0.0.1:0")
	l, err := fdpass.Listen(spec, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	run := func(b *testing.B, path string, args []string, env []string) {
		for b.Loop() {
			cmd := &exec.Cmd{Path: path, Args: args, Env: env, ExtraFiles: []*os.File{l.File()}}
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		run(b, "/bin/true", []string{"true"}, os.Environ())
	})
	b.Run("shim", func(b *testing.B) {
		path, args, env := fdpass.ShimCommand("/bin/true", []string{"true"}, os.Environ(), []string{"http"}, fdpass.ListenFDs)
		path = bin // the real rpwrap binary, not this test binary
		run(b, path, args, env)
	})
}
