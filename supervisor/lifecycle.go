//go:build linux

package supervisor

import (
	"fmt"
	"slices"
)

// State is where a generation is in its life.
type State string

// The states of a generation. Every generation starts in StateStarting and
// ends in one of the three final states, through Supervisor.retire.
const (
	StateStarting  State = "starting"  // started, not ready yet
	StateReady     State = "ready"     // passed its readiness check, not receiving connections yet
	StateCanary    State = "canary"    // the selector sends it a share of new connections (canary.go)
	StateActive    State = "active"    // the selector sends it every new connection
	StateStandby   State = "standby"   // replaced, still running, not told to stop: the watch may flip back to it (watch.go)
	StateDraining  State = "draining"  // replaced, finishing its work until its deadline
	StateStopped   State = "stopped"   // final: it served and was stopped
	StateAbandoned State = "abandoned" // final: a successor that never served (rolled back)
	StateCrashed   State = "crashed"   // final: it exited on its own before it was told to stop
)

// transitions is the life cycle of a generation, in one table: for each
// state, the states it may move to. A transition that is not here is a bug,
// and setState refuses it.
//
//	starting ──ready──▶ ready ──flip──▶ active ──replaced──▶ draining ──▶ stopped
//	    │                 │               │ └──rpwrap stops──────────────▶ stopped
//	    └──┬──────────────┘               └──exits on its own──▶ crashed
//	       ├──rolled back / rpwrap stops──▶ abandoned
//	       └──exits on its own────────────▶ crashed
//
// With a canary or a watch (canary.go), a rollout:
//
//	ready ──▶ canary ──▶ active          (the successor; rolled back: draining or crashed;
//	                                       rpwrap stops: stopped)
//	active ──▶ standby ──▶ draining      (the predecessor during the watch; flipped back:
//	                                       active; rpwrap stops: stopped)
var transitions = map[State][]State{
	StateStarting: {StateReady, StateAbandoned, StateCrashed},
	StateReady:    {StateCanary, StateActive, StateAbandoned, StateCrashed},
	StateCanary:   {StateActive, StateDraining, StateStopped, StateCrashed},
	StateActive:   {StateStandby, StateDraining, StateStopped, StateCrashed},
	StateStandby:  {StateActive, StateDraining, StateStopped},
	StateDraining: {StateStopped},
}

// final reports whether st ends a generation's life.
func (st State) final() bool {
	return st == StateStopped || st == StateAbandoned || st == StateCrashed
}

// checkTransition fails when the table does not allow from -> to.
func checkTransition(from, to State) error {
	if slices.Contains(transitions[from], to) {
		return nil
	}
	return fmt.Errorf("generation state %s -> %s is not a transition of the life cycle", from, to)
}
