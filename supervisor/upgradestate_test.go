//go:build linux

package supervisor

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// A state document written by the previous format version is read by
// this one: its queued restart triggers (a count in version 1) become
// triggers nobody waits for, and the rest comes through as written.
func TestParseStateReadsThePreviousVersion(t *testing.T) {
	b, err := os.ReadFile("testdata/upgrade-state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseState(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != StateVersion || len(st.Pending) != 2 || st.Pending[0].FD != -1 || st.PendingRestarts != 0 {
		t.Errorf("version %d, pending %+v (count %d): want version %d and 2 triggers nobody waits for", st.Version, st.Pending, st.PendingRestarts, StateVersion)
	}
	g := st.Generations[0]
	if len(st.Generations) != 2 || g.State != StateDraining || !g.Signalled || g.Deadline.IsZero() || g.Listeners[0].Inode != 1001 {
		t.Errorf("generations: %+v", st.Generations)
	}
	if sel := st.Groups[0].Selector; sel.Active != 1 || len(sel.Objects) != 2 || st.Groups[0].Spec.Addr.Port() != 8080 {
		t.Errorf("groups: %+v", st.Groups)
	}
	if st.Active != 4 || st.NextGen != 5 || st.Restarts != 3 || len(st.History) != 1 || !st.LastIsHistory || st.Reply != 9 {
		t.Errorf("counters: %+v", st)
	}
}

// A document of a version this binary does not know is refused with a
// message that names both versions, before anything is taken over.
func TestParseStateRefusesAnUnknownVersion(t *testing.T) {
	for _, doc := range []string{`{"version":99,"from":"v9.0.0"}`, `{"version":0}`} {
		_, err := ParseState([]byte(doc))
		if !errors.Is(err, ErrStateVersion) {
			t.Fatalf("ParseState(%s) = %v, want ErrStateVersion", doc, err)
		}
		if doc[11] == '9' && (!strings.Contains(err.Error(), "version 99 (written by rpwrap v9.0.0)") || !strings.Contains(err.Error(), "versions 1 to 2")) {
			t.Errorf("ParseState(%s): %v", doc, err)
		}
	}
	if _, err := ParseState([]byte(`{"version":2}`)); err == nil || !strings.Contains(err.Error(), "no listener") {
		t.Errorf("an empty document: %v", err)
	}
	if _, err := ParseState([]byte(`not json`)); err == nil {
		t.Error("not JSON: no error")
	}
}
