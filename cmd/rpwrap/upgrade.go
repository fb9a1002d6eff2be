//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/rpwrap/rpwrap/supervisor"
)

// runUpgradeCheck is `rpwrap __upgrade-check ARGS…`, run by an rpwrap
// about to upgrade onto this binary: it reads the state document
// ($RPWRAP_UPGRADE_STATE) and rpwrap's own flags, touches nothing, and
// answers on one JSON line whether it can take over.
func runUpgradeCheck(e env, args []string) int {
	a := supervisor.CheckAnswer{Rpwrap: "upgrade-check", Version: version, StateVersion: supervisor.StateVersion}
	st, err := supervisor.ReadState()
	switch {
	case err != nil:
		a.Error = err.Error()
	case st == nil:
		a.Error = "no state document given ($RPWRAP_UPGRADE_STATE)"
	default:
		if _, _, perr := parseOptions(e, args); perr != nil {
			a.Error = "rpwrap's flags: " + flagError(perr).Error()
		} else {
			a.OK = true
		}
	}
	json.NewEncoder(e.stdout).Encode(a)
	if !a.OK {
		return 1
	}
	return 0
}

// printVersion is `rpwrap version`: the version, and the binary it runs
// from with its modification time.
func printVersion(e env) int {
	fmt.Fprintln(e.stdout, "rpwrap", version)
	exe, err := os.Executable()
	if err != nil {
		return 0
	}
	fmt.Fprintln(e.stdout, "binary:", exe)
	if fi, err := os.Stat(exe); err == nil {
		fmt.Fprintln(e.stdout, "since:", fi.ModTime().Format(time.RFC3339), "(modified)")
	}
	return 0
}

// printUpgrade writes the answer to `ctl upgrade` for a human.
func printUpgrade(e env, r *supervisor.UpgradeResult) {
	fmt.Fprintf(e.stdout, "upgraded in place: rpwrap %s -> %s (%s), pid %d, serving again %s after the request\n",
		r.From, r.To, r.Binary, r.Pid, r.Took.Round(time.Millisecond))
}

// newSupervisor makes the supervisor: a new one, or, after an in-place
// upgrade, the one that takes over from the document st. When that fails,
// the previous binary is executed again with the same document (it serves
// on and answers `ctl upgrade` with the reason); newSupervisor returns
// only when even that is impossible.
func newSupervisor(cfg supervisor.Config, st *supervisor.UpgradeState) (*supervisor.Supervisor, error) {
	if st == nil {
		return supervisor.New(cfg)
	}
	s, err := supervisor.Resume(cfg, st)
	if err == nil {
		return s, nil
	}
	cfg.Log.Error("cannot take over after the in-place upgrade: executing the previous binary again", "err", err)
	ferr := supervisor.FallBack(st, err, cfg.Notifier)
	return nil, fmt.Errorf("in-place upgrade: %v; %v: the servers stop with rpwrap", err, ferr)
}
