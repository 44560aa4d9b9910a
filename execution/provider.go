package execution

import (
	"context"
	"encoding/json"
	"time"

	"github.com/execkit/execkit/fsm"
)

// Provider does the real work of an action in an external system. The
// engine calls it outside any database transaction, with a deadline, and
// never for a terminal execution.
type Provider interface {
	// Name identifies the provider in the execution record and in logs.
	Name() string
	// Submit hands the work to the external system. It must be idempotent
	// per execution: the execution id is the idempotency key, and a second
	// Submit of the same id (after a crash, say) must not start the work
	// twice.
	Submit(ctx context.Context, e Execution) (Update, error)
	// Check asks how the submitted work stands.
	Check(ctx context.Context, e Execution) (Update, error)
}

// Canceler is implemented by providers that can stop work in progress.
// Only through such a provider can a running execution be canceled; a
// pending or accepted one can always be.
type Canceler interface {
	Cancel(ctx context.Context, e Execution) error
}

// Update is what a provider reports about an execution. Every field is
// optional; the zero Update means "no news".
type Update struct {
	// Status is the state the work has reached. The engine applies every
	// transition on the way: "completed" for a pending execution becomes
	// accept, start and complete, each with its own event. Empty means
	// unchanged.
	Status fsm.State
	// Progress is progress metadata for a running execution, a JSON
	// object. A value different from the stored one is recorded as a
	// progress transition.
	Progress json.RawMessage
	// ExternalRef is the provider's reference for the work.
	ExternalRef string
	// Output is the result, a JSON object, usually sent with
	// Status completed.
	Output json.RawMessage
	// Error says why the work failed, with Status failed or refunded.
	Error *Error
	// CheckAfter asks the engine to check again after this long instead
	// of [Config.CheckInterval].
	CheckAfter time.Duration
	// Reason is a short note for the history rows of the transitions.
	Reason string
}
