//go:build linux

package fdpass

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

func TestLookPathFollowsShellRules(t *testing.T) {
	testutil.RequireRoot(t) // the 126 case relies on root's execute check (any x bit)
	dir, other := t.TempDir(), t.TempDir()
	write := func(dir, name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exe := write(other, "srv", 0o755)
	write(dir, "srv", 0o644) // found first in PATH, but not executable: skipped
	noexec := write(dir, "noexec", 0o644)
	os.Mkdir(filepath.Join(dir, "adir"), 0o755)
	t.Setenv("PATH", dir+":"+other)
	for _, tc := range []struct {
		cmd, want, wantMsg string
		wantErr            error
		wantCode           int
	}{
		{"srv", exe, "", nil, 0},
		{exe, exe, "", nil, 0},
		{"nosuch", "", "rpwrap: nosuch: command not found in PATH=" + dir + ":" + other, ErrNotFound, 127},
		{filepath.Join(dir, "nosuch"), "", "rpwrap: " + filepath.Join(dir, "nosuch") + ": command not found (no such file)", ErrNotFound, 127},
		{noexec, "", "rpwrap: " + noexec + ": command not executable (mode -rw-r--r--, permission denied): chmod +x it, or check the mount is not noexec", ErrNotExecutable, 126},
		{"noexec", "", "rpwrap: " + noexec + ": command not executable (mode -rw-r--r--, permission denied): chmod +x it, or check the mount is not noexec", ErrNotExecutable, 126},
		{"adir", "", "rpwrap: " + filepath.Join(dir, "adir") + ": command not executable (is a directory)", ErrNotExecutable, 126},
		{"", "", `rpwrap: "": command not found (empty command name)`, ErrNotFound, 127},
	} {
		got, err := LookPath(tc.cmd)
		var ce *CommandError
		switch {
		case tc.wantErr == nil && (err != nil || got != tc.want):
			t.Errorf("LookPath(%q) = %q, %v; want %q", tc.cmd, got, err, tc.want)
		case tc.wantErr != nil && (!errors.Is(err, tc.wantErr) || !errors.As(err, &ce) || ce.ExitCode() != tc.wantCode || err.Error() != tc.wantMsg):
			t.Errorf("LookPath(%q) = %q, %v; want %q (exit %d)", tc.cmd, got, err, tc.wantMsg, tc.wantCode)
		}
	}
}

func TestLookPathUsesDefaultPathWhenUnset(t *testing.T) {
	t.Setenv("PATH", "")
	os.Unsetenv("PATH")
	if got, err := LookPath("sh"); err != nil || got != "/bin/sh" {
		t.Fatalf("LookPath(sh) without PATH = %q, %v; want /bin/sh", got, err)
	}
}
