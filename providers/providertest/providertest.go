// Package providertest is the conformance suite every execution.Provider
// of this module passes: the fake, the command and the JSON-over-HTTP
// providers alike.
package providertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
)

// Harness tells the suite how to drive one provider.
type Harness struct {
	// New returns a fresh provider.
	New func(t *testing.T) execution.Provider
	// Succeeds and Fails are executions the provider completes and fails.
	// Their ids are replaced with fresh ones for each subtest.
	Succeeds execution.Execution
	Fails    execution.Execution
	// Wait lets d pass: a sleep for real providers, a clock move for the
	// fake one.
	Wait func(d time.Duration)
	// MaxChecks bounds the checks before the work must be done. Zero
	// means 200.
	MaxChecks int
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.MaxChecks == 0 {
		h.MaxChecks = 200
	}
	var n int
	fresh := func(e execution.Execution) execution.Execution {
		n++
		e.ID = execution.ExampleID(n)
		return e
	}

	t.Run("has a name", func(t *testing.T) {
		if name := h.New(t).Name(); name == "" || len(name) > 100 {
			t.Fatalf("Name() = %q", name)
		}
	})

	t.Run("drives work to completion with a JSON object as output", func(t *testing.T) {
		p := h.New(t)
		u := drive(t, h, p, fresh(h.Succeeds))
		if u.Status != fsm.Completed || len(u.Output) == 0 || u.Output[0] != '{' {
			t.Fatalf("final update %+v", u)
		}
	})

	t.Run("reports failure with a code", func(t *testing.T) {
		p := h.New(t)
		u := drive(t, h, p, fresh(h.Fails))
		if u.Status != fsm.Failed && u.Status != fsm.Refunded {
			t.Fatalf("final update %+v, want failed or refunded", u)
		}
		if u.Error == nil || u.Error.Code == "" {
			t.Fatalf("failure without an error code: %+v", u)
		}
	})

	t.Run("a second submission does not start the work twice", func(t *testing.T) {
		p := h.New(t)
		e := fresh(h.Succeeds)
		first, err := p.Submit(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		again, err := p.Submit(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		if first.ExternalRef != again.ExternalRef {
			t.Fatalf("references differ: %q then %q", first.ExternalRef, again.ExternalRef)
		}
		if u := drive(t, h, p, e); u.Status != fsm.Completed {
			t.Fatalf("final update %+v", u)
		}
	})

	t.Run("every update is well formed", func(t *testing.T) {
		p := h.New(t)
		e := fresh(h.Succeeds)
		u, err := p.Submit(context.Background(), e)
		for range h.MaxChecks {
			if err != nil {
				var perm *execution.PermanentError
				if errors.As(err, &perm) {
					t.Fatalf("permanent error for work that succeeds: %v", err)
				}
			}
			if u.Status != "" && !u.Status.Valid() {
				t.Fatalf("unknown status %q", u.Status)
			}
			if u.CheckAfter < 0 {
				t.Fatalf("negative CheckAfter %s", u.CheckAfter)
			}
			if u.Status.Terminal() {
				return
			}
			if u.ExternalRef != "" {
				e.ExternalRef = u.ExternalRef // as the engine records it
			}
			h.Wait(max(u.CheckAfter, time.Millisecond))
			u, err = p.Check(context.Background(), e)
		}
		t.Fatalf("not done after %d checks", h.MaxChecks)
	})
}

// drive submits e and checks until the provider reports a terminal state,
// and returns that update.
func drive(t *testing.T, h Harness, p execution.Provider, e execution.Execution) execution.Update {
	t.Helper()
	u, err := p.Submit(context.Background(), e)
	for range h.MaxChecks {
		var perm *execution.PermanentError
		if errors.As(err, &perm) {
			return execution.Update{Status: fsm.Failed, Error: &execution.Error{Code: perm.Code, Message: perm.Message}}
		}
		if err == nil && u.Status.Terminal() {
			return u
		}
		if u.ExternalRef != "" {
			e.ExternalRef = u.ExternalRef // as the engine records it
		}
		h.Wait(max(u.CheckAfter, time.Millisecond))
		u, err = p.Check(context.Background(), e)
	}
	t.Fatalf("not terminal after %d checks: %+v, %v", h.MaxChecks, u, err)
	return u
}
