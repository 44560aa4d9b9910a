// Package fsm is the one definition of an execution's state graph: its
// states, the events that move it, which moves are legal and which states
// are terminal.
//
// The package is pure: no I/O and no clock. Every call builds a fresh
// machine from the state it is given, so the stored row stays the only
// truth and nothing is kept between transitions. The graph is built on
// github.com/looplab/fsm.
package fsm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	lfsm "github.com/looplab/fsm"
)

// State is the status of an execution.
type State string

// The states of an execution. Pending, Accepted and Running are live;
// the other four are terminal and no transition leaves them.
const (
	// Pending is the entry state: the execution is recorded, and the
	// provider has not yet taken the order.
	Pending State = "pending"
	// Accepted means the provider took the order (payment captured).
	Accepted State = "accepted"
	// Running means the provider is doing the work.
	Running State = "running"
	// Completed means the work is done; the output is final.
	Completed State = "completed"
	// Failed means the work did not happen; the error says why.
	Failed State = "failed"
	// Refunded means the provider took the order, could not deliver and
	// returned the payment.
	Refunded State = "refunded"
	// Canceled means the execution was stopped on request.
	Canceled State = "canceled"
)

// Event is a named move between states.
type Event string

// The events that move an execution.
const (
	// Accept moves pending to accepted.
	Accept Event = "accept"
	// Start moves accepted to running.
	Start Event = "start"
	// Progress records progress of a running execution without changing
	// its state.
	Progress Event = "progress"
	// Complete moves running to completed.
	Complete Event = "complete"
	// Fail moves any live state to failed.
	Fail Event = "fail"
	// Refund moves accepted or running to refunded.
	Refund Event = "refund"
	// Cancel moves any live state to canceled. Leaving running this way
	// needs a provider that can cancel; the engine enforces that.
	Cancel Event = "cancel"
)

// Transition is one legal move of the graph.
type Transition struct {
	From  State
	Event Event
	To    State
}

// graph is the whole state graph. Everything else in the package, the
// looplab machine included, is derived from it.
var graph = []Transition{
	{Pending, Accept, Accepted},
	{Accepted, Start, Running},
	{Running, Progress, Running},
	{Running, Complete, Completed},
	{Pending, Fail, Failed},
	{Accepted, Fail, Failed},
	{Running, Fail, Failed},
	{Accepted, Refund, Refunded},
	{Running, Refund, Refunded},
	{Pending, Cancel, Canceled},
	{Accepted, Cancel, Canceled},
	{Running, Cancel, Canceled},
}

var (
	states = []State{Pending, Accepted, Running, Completed, Failed, Refunded, Canceled}
	events = []Event{Accept, Start, Progress, Complete, Fail, Refund, Cancel}
)

// Errors returned by [Apply] and [Path]. Callers branch on them with
// errors.Is.
var (
	// ErrInvalidTransition means the event is not legal in the state.
	ErrInvalidTransition = errors.New("invalid transition")
	// ErrUnknownState means the state is not one of [States].
	ErrUnknownState = errors.New("unknown state")
	// ErrUnknownEvent means the event is not one of [Events].
	ErrUnknownEvent = errors.New("unknown event")
)

// TransitionError reports an event that is not legal in a state. It
// unwraps to [ErrInvalidTransition].
type TransitionError struct {
	From  State
	Event Event // empty when the error comes from [Path]
	To    State // set when the error comes from [Path]
}

// Error says what went wrong.
func (e *TransitionError) Error() string {
	if e.Event == "" {
		return fmt.Sprintf("invalid transition: no path from %s to %s", e.From, e.To)
	}
	if e.From.Terminal() {
		return fmt.Sprintf("invalid transition: %s is terminal, event %s not allowed", e.From, e.Event)
	}
	return fmt.Sprintf("invalid transition: event %s not allowed in state %s", e.Event, e.From)
}

// Unwrap returns [ErrInvalidTransition].
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// States returns every state, live ones first.
func States() []State { return slices.Clone(states) }

// Events returns every event.
func Events() []Event { return slices.Clone(events) }

// Transitions returns every legal move, the progress self-loop included.
func Transitions() []Transition { return slices.Clone(graph) }

// Valid reports whether s is one of [States].
func (s State) Valid() bool { return slices.Contains(states, s) }

// Terminal reports whether no transition leaves s.
func (s State) Terminal() bool {
	switch s {
	case Completed, Failed, Refunded, Canceled:
		return true
	}
	return false
}

// Valid reports whether e is one of [Events].
func (e Event) Valid() bool { return slices.Contains(events, e) }

// Apply applies event ev to state from and returns the new state. For the
// progress self-loop the new state equals from. An illegal event returns a
// [*TransitionError]; an unknown state or event returns an error wrapping
// [ErrUnknownState] or [ErrUnknownEvent]; a canceled ctx returns its error.
// In every error case nothing has changed: the machine lives only for the
// duration of the call.
func Apply(ctx context.Context, from State, ev Event) (State, error) {
	if !from.Valid() {
		return "", fmt.Errorf("apply %s: %w: %q", ev, ErrUnknownState, from)
	}
	if !ev.Valid() {
		return "", fmt.Errorf("apply to %s: %w: %q", from, ErrUnknownEvent, ev)
	}

	m := newMachine(from)
	err := m.Event(ctx, string(ev))
	var same lfsm.NoTransitionError
	switch {
	case err == nil:
		return State(m.Current()), nil
	case errors.As(err, &same) && same.Err == nil:
		return from, nil // the progress self-loop
	case errors.As(err, new(lfsm.InvalidEventError)):
		return "", &TransitionError{From: from, Event: ev}
	case ctx.Err() != nil:
		return "", fmt.Errorf("apply %s to %s: %w", ev, from, ctx.Err())
	default:
		return "", fmt.Errorf("apply %s to %s: %w", ev, from, err)
	}
}

// Path returns the shortest sequence of events that moves an execution
// from one state to another, without self-loops. It is how a provider's
// report of a state reached several steps ahead ("completed" while the
// record says "pending") becomes the transitions that happened on the way.
// Equal states give an empty path; an unreachable state gives a
// [*TransitionError].
func Path(from, to State) ([]Event, error) {
	if !from.Valid() {
		return nil, fmt.Errorf("path to %s: %w: %q", to, ErrUnknownState, from)
	}
	if !to.Valid() {
		return nil, fmt.Errorf("path from %s: %w: %q", from, ErrUnknownState, to)
	}
	if from == to {
		return nil, nil
	}

	// Breadth-first search over the graph; ties are broken by graph order.
	type step struct {
		prev State
		ev   Event
	}
	seen := map[State]step{from: {}}
	queue := []State{from}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, t := range graph {
			if t.From != s || t.To == s {
				continue
			}
			if _, ok := seen[t.To]; ok {
				continue
			}
			seen[t.To] = step{prev: s, ev: t.Event}
			if t.To == to {
				var path []Event
				for at := to; at != from; at = seen[at].prev {
					path = append(path, seen[at].ev)
				}
				slices.Reverse(path)
				return path, nil
			}
			queue = append(queue, t.To)
		}
	}
	return nil, &TransitionError{From: from, To: to}
}

// Mermaid renders the graph as a Mermaid state diagram, with an arrow from
// the start marker to pending and from every terminal state to the end
// marker. The README's diagram is kept equal to it by a test.
func Mermaid() string {
	out, err := lfsm.VisualizeForMermaidWithGraphType(newMachine(Pending), lfsm.StateDiagram)
	if err != nil {
		// Only an unknown diagram type fails, and the type is a constant.
		panic(fmt.Sprintf("fsm: render mermaid: %v", err))
	}
	var b strings.Builder
	b.WriteString(out)
	for _, s := range states {
		if s.Terminal() {
			fmt.Fprintf(&b, "    %s --> [*]\n", s)
		}
	}
	return b.String()
}

// eventDescs is the graph in looplab's form: one description per event and
// destination, listing every source state.
var eventDescs = func() []lfsm.EventDesc {
	type key struct {
		ev Event
		to State
	}
	index := make(map[key]int)
	var descs []lfsm.EventDesc
	for _, t := range graph {
		i, ok := index[key{t.Event, t.To}]
		if !ok {
			i = len(descs)
			index[key{t.Event, t.To}] = i
			descs = append(descs, lfsm.EventDesc{Name: string(t.Event), Dst: string(t.To)})
		}
		descs[i].Src = append(descs[i].Src, string(t.From))
	}
	return descs
}()

// newMachine builds a looplab machine positioned at state.
func newMachine(state State) *lfsm.FSM {
	return lfsm.NewFSM(string(state), eventDescs, nil)
}
