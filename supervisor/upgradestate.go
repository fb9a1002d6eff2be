//go:build linux

package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rpwrap/rpwrap/bpf"
	"github.com/rpwrap/rpwrap/fdpass"
)

// The state document: everything one rpwrap hands to the binary it
// re-executes itself as (see upgrade.go), JSON in a memfd. File
// descriptors are given by number: they are open in the new process, not
// close-on-exec, and owned by it.
//
// StateVersion is the version this binary writes. It reads every version
// from MinStateVersion on, converting older ones, and refuses a newer one
// by name, so an upgrade onto a binary that cannot read the document is
// refused before anything is given up (the check), and a downgrade across
// a format change too. Version 1 carried the queued restart triggers as a
// count; version 2 carries each one with the control connection waiting
// for its answer, and the clients waiting for a drain (ctl restart
// --wait).
const (
	StateVersion    = 2
	MinStateVersion = 1
)

// ErrStateVersion is wrapped by ParseState for a document of a version
// this binary does not read.
var ErrStateVersion = errors.New("unknown state document version")

// UpgradeState is the state document.
type UpgradeState struct {
	Version  int             `json:"version"`
	From     string          `json:"from"`               // the version of the rpwrap that wrote it
	Binary   string          `json:"binary"`             // the file the new rpwrap is executed from
	Self     string          `json:"self"`               // the path rpwrap was started from: the default of the next upgrade
	Argv     []string        `json:"argv"`               // rpwrap's own argv
	Started  time.Time       `json:"started"`            // when rpwrap first started, before any upgrade
	Upgrades []UpgradeResult `json:"upgrades,omitempty"` // earlier upgrades, oldest first, the last few

	Control     int           `json:"control_fd"` // the control socket's listener; -1 for none
	ControlPath string        `json:"control_path,omitempty"`
	Health      int           `json:"health_fd"`            // the health server's listener; -1 for none
	Metrics     *int          `json:"metrics_fd,omitempty"` // the metrics endpoint's listener; absent for none
	Reply       int           `json:"reply_fd"`             // the `ctl upgrade` client to answer; -1 for none
	Fallback    int           `json:"fallback_fd"`          // the previous binary, opened: run again if the new one cannot take over; -1 for none
	Document    int           `json:"document_fd"`          // this document's own memfd
	Trigger     time.Time     `json:"trigger"`              // when the upgrade was asked for
	Failed      string        `json:"failed,omitempty"`     // set by a new binary that could not take over, for the previous one it runs again
	Current     UpgradeResult `json:"current"`              // this upgrade, as far as the old rpwrap knows it
	Signals     []int         `json:"signals,omitempty"`    // signals rpwrap received during the upgrade, to act on after it

	Groups      []GroupState      `json:"groups"`
	Generations []GenerationState `json:"generations"`
	Active      int               `json:"active"` // the active generation's number

	NextGen       int             `json:"next_generation"`
	Restarts      int             `json:"restarts"`
	RolledBack    int             `json:"rolled_back"`
	Respawns      int             `json:"respawns"`
	History       []RestartResult `json:"history,omitempty"`
	LastIsHistory bool            `json:"last_in_history,omitempty"` // Last is the last entry of History
	Last          *RestartResult  `json:"last,omitempty"`
	LastFailed    *RestartResult  `json:"last_rollback,omitempty"` // the last rollback, even when a success came after it

	PendingRestarts int            `json:"pending_restarts,omitempty"` // version 1 only: queued triggers, none waiting
	Pending         []PendingState `json:"pending,omitempty"`          // queued restart triggers
	Waiters         []WaiterState  `json:"waiters,omitempty"`          // clients waiting for a drain to end
}

// GroupState is one --listen address and its selector.
type GroupState struct {
	Spec     fdpass.Spec  `json:"spec"`
	Selector bpf.Handover `json:"selector"`
}

// GenerationState is one live generation.
type GenerationState struct {
	N         int              `json:"n"`
	Pid       int              `json:"pid"`
	State     State            `json:"state"`
	Started   time.Time        `json:"started"`
	Flipped   time.Time        `json:"flipped,omitzero"`
	Deadline  time.Time        `json:"deadline,omitzero"`
	Signalled bool             `json:"signalled,omitempty"` // draining: the stop signal was sent
	Binary    Binary           `json:"binary"`
	Inherited bool             `json:"inherited,omitempty"`
	Listeners []ListenerState  `json:"listeners"`
	Slots     []bpf.Slot       `json:"slots"`
	Notify    *FDPath          `json:"notify,omitempty"`
	Seccomp   int              `json:"seccomp_fd"`        // bind interception's listener; -1 for none
	Claimed   []netip.AddrPort `json:"claimed,omitempty"` // addresses bound already under interception
	Exited    *ExitState       `json:"exited,omitempty"`  // reaped before the exec: its status
}

// ListenerState is one socket of a generation; FD -1 once rpwrap let go.
type ListenerState struct {
	FD    int    `json:"fd"`
	Inode uint64 `json:"inode,omitempty"`
}

// FDPath is a descriptor with the file name it is bound to.
type FDPath struct {
	FD   int    `json:"fd"`
	Path string `json:"path"`
}

// ExitState is a wait status.
type ExitState struct {
	Status uint32 `json:"status"`
}

// PendingState is one queued restart trigger; FD -1 when nobody waits (a
// signal).
type PendingState struct {
	FD      int             `json:"fd"`
	Wait    bool            `json:"wait,omitempty"`
	Options *RestartOptions `json:"options,omitempty"` // its own --watch and --canary
}

// WaiterState is a client waiting, with ctl restart --wait, for the drain
// of generation Drains after the restart Restart.
type WaiterState struct {
	FD      int           `json:"fd"`
	Drains  int           `json:"drains"`
	Restart RestartResult `json:"restart"`
}

// ParseState reads a state document of any version from MinStateVersion
// to StateVersion and returns it as the current version. It fails,
// wrapping ErrStateVersion, on a version it does not know, and on a
// document that is not JSON or lacks what a take-over needs.
func ParseState(b []byte) (*UpgradeState, error) {
	var head struct {
		Version int    `json:"version"`
		From    string `json:"from"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("read state document: %w", err)
	}
	if head.Version < MinStateVersion || head.Version > StateVersion {
		return nil, fmt.Errorf("%w: version %d (written by rpwrap %s); this rpwrap reads versions %d to %d",
			ErrStateVersion, head.Version, head.From, MinStateVersion, StateVersion)
	}
	var st UpgradeState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read state document version %d: %w", head.Version, err)
	}
	if st.Version == 1 { // the triggers came as a count
		for range st.PendingRestarts {
			st.Pending = append(st.Pending, PendingState{FD: -1})
		}
		st.PendingRestarts = 0
		st.Version = 2
	}
	if len(st.Groups) == 0 || len(st.Generations) == 0 {
		return nil, errors.New("read state document: no listener or no generation in it")
	}
	for _, g := range st.Generations {
		if len(g.Listeners) != len(st.Groups) || len(g.Slots) != len(st.Groups) {
			return nil, fmt.Errorf("read state document: generation %d has %d sockets for %d listeners", g.N, len(g.Listeners), len(st.Groups))
		}
	}
	return &st, nil
}
