package fsm_test

import (
	"context"
	"testing"

	"github.com/execkit/execkit/fsm"
)

// FuzzEventSequences applies any sequence of events from pending: the
// state never leaves the graph, a terminal state never changes, and an
// event is refused exactly when the graph has no such move.
func FuzzEventSequences(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3})
	f.Add([]byte{6, 6, 0})
	f.Add([]byte{0, 5, 1, 3})
	f.Fuzz(func(t *testing.T, seq []byte) {
		events := fsm.Events()
		state := fsm.Pending
		for _, b := range seq {
			ev := events[int(b)%len(events)]
			next, err := fsm.Apply(context.Background(), state, ev)
			want, ok := legal[state][ev]
			switch {
			case ok && (err != nil || next != want):
				t.Fatalf("%s+%s: %q, %v; the graph says %s", state, ev, next, err, want)
			case !ok && err == nil:
				t.Fatalf("%s+%s accepted (to %s); the graph has no such move", state, ev, next)
			case err == nil:
				if state.Terminal() {
					t.Fatalf("terminal %s moved to %s", state, next)
				}
				state = next
			}
			if !state.Valid() {
				t.Fatalf("left the graph: %q", state)
			}
		}
	})
}
