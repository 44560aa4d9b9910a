// Package execution is execkit's domain and engine.
//
// An [Execution] records one long-running paid action (provisioning a
// server, registering a domain) from creation to a terminal state. The
// [Engine] creates executions, claims the ones that are due, asks their
// [Provider] how the work stands and applies the answer as a transition.
// Every transition is one conditional write that also records a history
// row and an outbox event; a [Store] does the writing and knows the SQL,
// this package knows neither SQL nor HTTP.
package execution

import (
	"encoding/json"
	"time"

	"github.com/execkit/execkit/fsm"
)

// Execution is the stored record of one action. It is the source of truth:
// webhooks and provider callbacks are signals that lead back to it.
type Execution struct {
	// ID is "exe_" followed by a ULID.
	ID string
	// Action names what is done, such as "servers.provision".
	Action string
	// Provider is the name of the provider registered for Action when the
	// execution was created.
	Provider string
	// Owner is an opaque string the host sets, such as a customer id.
	// Idempotency keys are scoped to it.
	Owner string
	// Status is the current state.
	Status fsm.State
	// Version counts the transitions: 1 at creation, one more for each
	// transition, the progress self-loop included.
	Version int64
	// Revision counts every write of the row, transitions, claims and
	// reschedules alike. Conditional writes compare it, so that no write
	// decided on an old copy can undo a newer one.
	Revision int64
	// Input is the request, a JSON object.
	Input json.RawMessage
	// Output is the result a provider reported, a JSON object or nil.
	Output json.RawMessage
	// Progress is the latest progress a provider reported, a JSON object
	// or nil.
	Progress json.RawMessage
	// Error says why the execution failed or was refunded; nil otherwise.
	Error *Error
	// IdempotencyKey is the key the creator gave, or empty.
	IdempotencyKey string
	// RequestHash identifies the creating request, so that a repeated
	// idempotency key can be told apart from a reused one.
	RequestHash string
	// ExternalRef is the provider's own reference for the work.
	ExternalRef string
	// Checks counts the provider calls that answered.
	Checks int64
	// FailedAttempts counts the provider calls that failed since the last
	// one that answered. It sets the retry backoff, and is kept apart from
	// Checks so that answers of "still working" never count as failures.
	FailedAttempts int
	// SubmittedAt is when the provider accepted the submission; zero while
	// the work has not been submitted.
	SubmittedAt time.Time
	// CreatedAt, UpdatedAt and CompletedAt are in UTC. CompletedAt is zero
	// until the execution is terminal.
	CreatedAt   time.Time
	UpdatedAt   time.Time
	CompletedAt time.Time
	// NextCheckAt is when the engine will next call the provider; zero for
	// a terminal execution.
	NextCheckAt time.Time
	// Deadline, if not zero, is when a live execution fails with
	// [CodeTimeout].
	Deadline time.Time
	// LeaseOwner is the token of the worker holding the execution, or
	// empty. A claimed execution's NextCheckAt is its lease expiry.
	LeaseOwner string
}

// Done reports whether the execution is in a terminal state.
func (e Execution) Done() bool { return e.Status.Terminal() }

// Error is why an execution failed: a stable machine-readable code and a
// human-readable message.
type Error struct {
	// Code is stable and machine-readable, such as "timeout"; at most 100
	// bytes.
	Code string `json:"code"`
	// Message explains the error to a person; at most 2000 bytes.
	Message string `json:"message"`
}

// Error codes the engine sets itself. Providers choose their own codes.
const (
	// CodeTimeout: the execution passed its deadline.
	CodeTimeout = "timeout"
	// CodeProviderError: the provider failed permanently without a code.
	CodeProviderError = "provider_error"
	// CodeRetriesExhausted: the provider failed more times in a row than
	// [Config.MaxFailedAttempts] allows.
	CodeRetriesExhausted = "retries_exhausted"
)

// Transition is one row of an execution's history.
type Transition struct {
	ExecutionID string
	// Version is the execution's version after the transition.
	Version int64
	// From is empty for the creation row.
	From fsm.State
	// To is the state after the transition.
	To fsm.State
	// Event is what moved it, or EventCreate for the creation row.
	Event fsm.Event
	// Reason is a short note from whoever caused the transition.
	Reason string
	// At is when the transition was written, in UTC.
	At time.Time
}

// EventCreate is the event of the history row that records creation. It
// is not part of the graph: nothing moves into pending.
const EventCreate fsm.Event = "create"

// Event is an outbox entry: the announcement of one transition, written in
// the same transaction as the transition itself.
type Event struct {
	// ID is "evt_" followed by a ULID.
	ID          string
	ExecutionID string
	// Type is "execution." followed by the new status, or
	// "execution.progress" for the progress self-loop.
	Type string
	// Version is the execution's version after the transition.
	Version   int64
	CreatedAt time.Time
	// Payload is the JSON body sent to webhook subscribers, fixed at
	// write time so that every delivery sends the same bytes.
	Payload []byte
}

// EventPayload is the JSON shape of [Event.Payload]: the event id and
// type, the execution's id, action and new status, the status it left
// (absent on creation), its version after the transition and the time of
// the transition.
type EventPayload struct {
	ID             string    `json:"id"`
	Event          string    `json:"event"`
	ExecutionID    string    `json:"executionId"`
	Action         string    `json:"action"`
	Status         fsm.State `json:"status"`
	PreviousStatus fsm.State `json:"previousStatus,omitempty"`
	Version        int64     `json:"version"`
	Timestamp      string    `json:"timestamp"`
}

// TimeFormat is how times appear in event payloads: RFC 3339 in UTC with
// milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// IgnoredUpdate records a provider report that was not applied because
// the execution had already moved on, such as a late "completed" for a
// canceled execution.
type IgnoredUpdate struct {
	ExecutionID string
	// Status and Version are the execution's when the report came.
	Status  fsm.State
	Version int64
	// Reported is the status the report carried, if any.
	Reported fsm.State
	Reason   string
	At       time.Time
}
