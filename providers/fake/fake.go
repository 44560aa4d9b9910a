// Package fake is a scripted [execution.Provider] for tests and demos.
//
// Each action gets a [Script]: a timeline of steps measured from the
// moment the work was submitted ("accepted after 1s, running after 2s,
// completed after 5s"), plus injected transient and permanent errors.
// The provider answers from the timeline as it stands on its clock, so it
// is deterministic under a [Clock], and it records every call for
// assertions. It keeps that record, and its state of every execution
// submitted to it, for as long as it lives: memory grows with use, as a
// test double's may.
package fake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
)

// Step is one point of a timeline: at After since submission, the work
// reaches Status.
type Step struct {
	// After is the time since submission at which the step is reached.
	After time.Duration
	// Status is the state the work is in from then on.
	Status fsm.State
	// Progress goes with a running step.
	Progress json.RawMessage
	// Output goes with a completed step.
	Output json.RawMessage
	// Error goes with a failed or refunded step.
	Error *execution.Error
}

// Accept returns a step that accepts the work after d.
func Accept(d time.Duration) Step { return Step{After: d, Status: fsm.Accepted} }

// Start returns a step that starts the work after d.
func Start(d time.Duration) Step { return Step{After: d, Status: fsm.Running} }

// Progress returns a step that reports progress, a JSON object, after d.
func Progress(d time.Duration, progress string) Step {
	return Step{After: d, Status: fsm.Running, Progress: json.RawMessage(progress)}
}

// Complete returns a step that completes the work with output, a JSON
// object, after d.
func Complete(d time.Duration, output string) Step {
	return Step{After: d, Status: fsm.Completed, Output: json.RawMessage(output)}
}

// Fail returns a step that fails the work after d.
func Fail(d time.Duration, code, message string) Step {
	return Step{After: d, Status: fsm.Failed, Error: &execution.Error{Code: code, Message: message}}
}

// Refund returns a step that refunds the work after d.
func Refund(d time.Duration, code, message string) Step {
	return Step{After: d, Status: fsm.Refunded, Error: &execution.Error{Code: code, Message: message}}
}

// Script is how the provider behaves for one action.
type Script struct {
	// Steps is the timeline, in order of After. Before the first step the
	// work is pending.
	Steps []Step
	// TransientErrors makes each execution's first calls fail with a
	// transient error, this many of them.
	TransientErrors int
	// Reject, if set, makes Submit fail permanently with this error.
	Reject *execution.Error
	// Cancelable lets the work be canceled while it runs.
	Cancelable bool
}

// Method names a provider call.
type Method string

// The calls the provider records.
const (
	MethodSubmit Method = "submit"
	MethodCheck  Method = "check"
	MethodCancel Method = "cancel"
)

// Call is one recorded call.
type Call struct {
	// Method is which call it was.
	Method Method
	// ExecutionID is the execution it was about.
	ExecutionID string
	// At is the provider's clock at the call.
	At time.Time
	// Err is the error the call returned, if any.
	Err error
}

// ErrTransient is the error of an injected transient failure.
var ErrTransient = errors.New("fake: transient failure")

// Provider is the scripted provider. It is safe for concurrent use, and
// one Provider may serve several actions and several engines.
type Provider struct {
	name  string
	clock execution.Clock

	mu      sync.Mutex
	scripts map[string]Script
	runs    map[string]*run
	calls   []Call
}

// run is the provider's own record of one submitted execution.
type run struct {
	ref         string
	submittedAt time.Time
	calls       int
	canceled    bool
}

var (
	_ execution.Provider = (*Provider)(nil)
	_ execution.Canceler = (*Provider)(nil)
)

// New returns a provider named "fake" that reads clock; nil means the
// wall clock.
func New(clock execution.Clock) *Provider {
	if clock == nil {
		clock = execution.SystemClock{}
	}
	return &Provider{name: "fake", clock: clock, scripts: make(map[string]Script), runs: make(map[string]*run)}
}

// Script sets the behaviour for action. Executions submitted before keep
// the timeline but see the new errors and steps on their next call.
func (p *Provider) Script(action string, s Script) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.scripts[action] = s
}

// Name returns "fake".
func (p *Provider) Name() string { return p.name }

// Submit records the submission and answers from the timeline. A second
// Submit of the same execution is recorded but does not restart it.
func (p *Provider) Submit(ctx context.Context, e execution.Execution) (execution.Update, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	s, ok := p.scripts[e.Action]
	if !ok {
		return p.record(MethodSubmit, e.ID, now, execution.Permanent("unscripted", "no script for "+e.Action))
	}
	r := p.runs[e.ID]
	if r == nil {
		r = &run{ref: fmt.Sprintf("fake-%d", len(p.runs)+1), submittedAt: now}
		p.runs[e.ID] = r
	}
	r.calls++
	if r.calls <= s.TransientErrors {
		return p.record(MethodSubmit, e.ID, now, ErrTransient)
	}
	if s.Reject != nil {
		return p.record(MethodSubmit, e.ID, now, execution.Permanent(s.Reject.Code, s.Reject.Message))
	}
	u, err := p.record(MethodSubmit, e.ID, now, nil)
	return p.report(u, r, s, now), err
}

// Check answers from the timeline.
func (p *Provider) Check(ctx context.Context, e execution.Execution) (execution.Update, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	r := p.runs[e.ID]
	if r == nil {
		return p.record(MethodCheck, e.ID, now, execution.Permanent("unknown_execution", "never submitted"))
	}
	s := p.scripts[e.Action]
	r.calls++
	if r.calls <= s.TransientErrors {
		return p.record(MethodCheck, e.ID, now, ErrTransient)
	}
	u, err := p.record(MethodCheck, e.ID, now, nil)
	return p.report(u, r, s, now), err
}

// Cancel stops the work if the action's script is Cancelable.
func (p *Provider) Cancel(ctx context.Context, e execution.Execution) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	if !p.scripts[e.Action].Cancelable {
		_, err := p.record(MethodCancel, e.ID, now,
			fmt.Errorf("fake: %w: the script for %s is not cancelable", execution.ErrInvalidTransition, e.Action))
		return err
	}
	if r := p.runs[e.ID]; r != nil {
		r.canceled = true
	}
	_, err := p.record(MethodCancel, e.ID, now, nil)
	return err
}

func (p *Provider) record(m Method, id string, at time.Time, err error) (execution.Update, error) {
	p.calls = append(p.calls, Call{Method: m, ExecutionID: id, At: at, Err: err})
	return execution.Update{}, err
}

// report is the update for r at now: the latest step reached, and a hint
// to check again when the next one is due.
func (p *Provider) report(u execution.Update, r *run, s Script, now time.Time) execution.Update {
	u.ExternalRef = r.ref
	if r.canceled {
		u.Status = fsm.Canceled
		return u
	}
	elapsed := now.Sub(r.submittedAt)
	for _, st := range s.Steps {
		if st.After > elapsed {
			u.CheckAfter = st.After - elapsed
			break
		}
		u.Status = st.Status
		if st.Progress != nil {
			u.Progress = st.Progress
		}
		if st.Output != nil {
			u.Output = st.Output
		}
		if st.Error != nil {
			u.Error = st.Error
		}
	}
	return u
}

// Calls returns every call so far, in order.
func (p *Provider) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Call(nil), p.calls...)
}

// CallsFor returns how many calls of method m were made for the execution.
func (p *Provider) CallsFor(id string, m Method) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.calls {
		if c.ExecutionID == id && c.Method == m {
			n++
		}
	}
	return n
}
