package fsm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/execkit/execkit/fsm"
)

// legal is the graph written out independently of the package, so that a
// change to the definition has to be made twice to pass.
var legal = map[fsm.State]map[fsm.Event]fsm.State{
	fsm.Pending:  {fsm.Accept: fsm.Accepted, fsm.Fail: fsm.Failed, fsm.Cancel: fsm.Canceled},
	fsm.Accepted: {fsm.Start: fsm.Running, fsm.Fail: fsm.Failed, fsm.Refund: fsm.Refunded, fsm.Cancel: fsm.Canceled},
	fsm.Running: {
		fsm.Progress: fsm.Running, fsm.Complete: fsm.Completed, fsm.Fail: fsm.Failed,
		fsm.Refund: fsm.Refunded, fsm.Cancel: fsm.Canceled,
	},
}

func TestApplyEveryPair(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, from := range fsm.States() {
		for _, ev := range fsm.Events() {
			t.Run(fmt.Sprintf("%s+%s", from, ev), func(t *testing.T) {
				got, err := fsm.Apply(ctx, from, ev)
				want, ok := legal[from][ev]
				if ok {
					if err != nil || got != want {
						t.Fatalf("Apply(%s, %s) = %q, %v; want %q", from, ev, got, err, want)
					}
					return
				}
				var te *fsm.TransitionError
				if !errors.As(err, &te) || !errors.Is(err, fsm.ErrInvalidTransition) {
					t.Fatalf("Apply(%s, %s) error = %v; want a *TransitionError", from, ev, err)
				}
				if te.From != from || te.Event != ev || got != "" {
					t.Fatalf("Apply(%s, %s) = %q, %+v", from, ev, got, te)
				}
			})
		}
	}
}

func TestTerminalStatesHaveNoExit(t *testing.T) {
	t.Parallel()
	var terminal []fsm.State
	for _, s := range fsm.States() {
		if s.Terminal() {
			terminal = append(terminal, s)
		}
		_, live := legal[s]
		if s.Terminal() == live {
			t.Errorf("%s: Terminal() = %v, but it has legal events: %v", s, s.Terminal(), live)
		}
	}
	want := []fsm.State{fsm.Completed, fsm.Failed, fsm.Refunded, fsm.Canceled}
	if !slices.Equal(terminal, want) {
		t.Fatalf("terminal states = %v, want %v", terminal, want)
	}
	for _, tr := range fsm.Transitions() {
		if tr.From.Terminal() {
			t.Errorf("transition %+v leaves a terminal state", tr)
		}
	}
}

func TestApplyRejectsUnknownNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if _, err := fsm.Apply(ctx, "paused", fsm.Start); !errors.Is(err, fsm.ErrUnknownState) {
		t.Fatalf("unknown state: err = %v", err)
	}
	if _, err := fsm.Apply(ctx, fsm.Pending, "explode"); !errors.Is(err, fsm.ErrUnknownEvent) {
		t.Fatalf("unknown event: err = %v", err)
	}
}

func TestApplyWithCanceledContextChangesNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := fsm.Apply(ctx, fsm.Pending, fsm.Accept); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// Nothing is kept between calls, so the next transition works.
	got, err := fsm.Apply(context.Background(), fsm.Pending, fsm.Accept)
	if err != nil || got != fsm.Accepted {
		t.Fatalf("after cancel: %q, %v", got, err)
	}
}

func TestPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		from, to fsm.State
		want     []fsm.Event
	}{
		{fsm.Pending, fsm.Pending, nil},
		{fsm.Pending, fsm.Accepted, []fsm.Event{fsm.Accept}},
		{fsm.Pending, fsm.Completed, []fsm.Event{fsm.Accept, fsm.Start, fsm.Complete}},
		{fsm.Pending, fsm.Refunded, []fsm.Event{fsm.Accept, fsm.Refund}},
		{fsm.Pending, fsm.Failed, []fsm.Event{fsm.Fail}},
		{fsm.Accepted, fsm.Completed, []fsm.Event{fsm.Start, fsm.Complete}},
		{fsm.Running, fsm.Canceled, []fsm.Event{fsm.Cancel}},
	}
	for _, tt := range tests {
		got, err := fsm.Path(tt.from, tt.to)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("Path(%s, %s) = %v, %v; want %v", tt.from, tt.to, got, err, tt.want)
		}
	}
	for _, bad := range [][2]fsm.State{{fsm.Running, fsm.Accepted}, {fsm.Completed, fsm.Failed}, {fsm.Canceled, fsm.Running}} {
		if _, err := fsm.Path(bad[0], bad[1]); !errors.Is(err, fsm.ErrInvalidTransition) {
			t.Errorf("Path(%s, %s) err = %v, want ErrInvalidTransition", bad[0], bad[1], err)
		}
	}
}

func TestMermaid(t *testing.T) {
	t.Parallel()
	got := fsm.Mermaid()
	if !strings.HasPrefix(got, "stateDiagram-v2\n    [*] --> pending\n") {
		t.Fatalf("Mermaid() starts with %q", got[:min(len(got), 60)])
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	// A header, the start arrow, one line per transition, one per terminal state.
	if want := 2 + len(fsm.Transitions()) + 4; len(lines) != want {
		t.Fatalf("Mermaid() has %d lines, want %d:\n%s", len(lines), want, got)
	}
	for _, tr := range fsm.Transitions() {
		line := fmt.Sprintf("    %s --> %s: %s\n", tr.From, tr.To, tr.Event)
		if !strings.Contains(got, line) {
			t.Errorf("Mermaid() lacks %q", line)
		}
	}
}

// TestReadmeDiagram keeps the README's state diagram equal to [fsm.Mermaid].
func TestReadmeDiagram(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := "```mermaid\n" + fsm.Mermaid() + "```\n"
	if !strings.Contains(string(readme), block) {
		t.Fatalf("README.md has no diagram equal to fsm.Mermaid(); it should contain:\n%s", block)
	}
}
