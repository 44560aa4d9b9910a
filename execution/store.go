package execution

import (
	"context"
	"database/sql"
	"time"

	"github.com/execkit/execkit/fsm"
)

// Store persists executions, their history and their outbox events. The
// sqlite package has the implementation; execution/storetest has the
// conformance suite every implementation must pass.
//
// Every method that changes an execution is atomic: the row, its history
// rows and its outbox events are written together or not at all.
type Store interface {
	// Create inserts c.Execution with its creation history row and event.
	// If c.Execution has an idempotency key already used by the same
	// owner, nothing is written: an equal RequestHash returns the stored
	// execution and created false, a different one returns an error
	// wrapping [ErrIdempotencyConflict].
	Create(ctx context.Context, c Creation) (e Execution, created bool, err error)
	// CreateTx is Create inside the caller's transaction, which must be on
	// the store's database. The caller commits.
	CreateTx(ctx context.Context, tx *sql.Tx, c Creation) (e Execution, created bool, err error)
	// Get returns the execution with the id, or an error wrapping
	// [ErrNotFound].
	Get(ctx context.Context, id string) (Execution, error)
	// List returns one page of executions matching f, newest first.
	List(ctx context.Context, f Filter) (Page, error)
	// Write applies w if the execution still matches w.Expect, and
	// returns an error wrapping [ErrConflict] if it does not.
	Write(ctx context.Context, w Write) error
	// Claim leases up to p.Limit live executions whose next check is due
	// at p.Now, for actions in p.Actions, choosing the earliest due first,
	// and returns them in id order (oldest created first). A claimed row
	// gets LeaseOwner p.Owner and NextCheckAt p.Until, so an abandoned
	// lease becomes due again when it expires.
	Claim(ctx context.Context, p ClaimParams) ([]Execution, error)
	// Release ends a lease still held by owner and makes the execution
	// due at next. It is a no-op if the lease has moved on. Claim and
	// Release add one to the revision, like every write.
	Release(ctx context.Context, id, owner string, next time.Time) error
	// NextDue returns the earliest next check of a live execution of one
	// of the actions, and false if there is none.
	NextDue(ctx context.Context, actions []string) (time.Time, bool, error)
	// LiveActions returns the distinct actions of live executions.
	LiveActions(ctx context.Context) ([]string, error)
	// RecordIgnored stores a provider report that was not applied.
	RecordIgnored(ctx context.Context, u IgnoredUpdate) error
	// History returns an execution's transitions in version order.
	History(ctx context.Context, id string) ([]Transition, error)
	// Events returns an execution's outbox events in version order.
	Events(ctx context.Context, id string) ([]Event, error)
	// IgnoredUpdates returns the ignored reports of an execution, oldest
	// first.
	IgnoredUpdates(ctx context.Context, id string) ([]IgnoredUpdate, error)
}

// Creation is a new execution with its creation history row and event.
type Creation struct {
	// Execution is the new row, pending at version 1.
	Execution Execution
	// Transition is its creation history row.
	Transition Transition
	// Event is its execution.created outbox event.
	Event Event
}

// Write is one conditional change of an execution.
type Write struct {
	// Expect is the state the change was decided on.
	Expect Expect
	// Execution is the new row. Its mutable fields (status, version,
	// output, progress, error, external reference, counters and times)
	// are stored as given; the identity fields (id, action, provider,
	// owner, input, idempotency key, request hash, creation time) never
	// change. A write with Expect.LeaseOwner ends that lease. A write
	// without one leaves NextCheckAt and the lease alone while a worker
	// holds the row, unless the new status is terminal, which always
	// clears both.
	Execution Execution
	// Transitions and Events are appended with the change.
	Transitions []Transition
	Events      []Event
}

// Expect is the condition of a [Write]: the execution must still have this
// status, version and revision, and, if LeaseOwner is set, still be leased
// to it.
type Expect struct {
	Status   fsm.State
	Version  int64
	Revision int64
	// LeaseOwner, if set, makes this a worker's write: the row must still
	// be leased to it, and the write ends the lease.
	LeaseOwner string
}

// ClaimParams selects and leases due executions.
type ClaimParams struct {
	// Now is the time against which executions are due.
	Now time.Time
	// Until is when the lease expires.
	Until time.Time
	// Owner is the lease token written into claimed rows.
	Owner string
	// Actions limits the claim to actions with a registered provider.
	Actions []string
	// Limit is the most executions to claim.
	Limit int
}

// Filter selects executions for [Store.List]. Zero fields match all.
type Filter struct {
	// Status, Action and Owner match exactly.
	Status fsm.State
	Action string
	Owner  string
	// CreatedAfter and CreatedBefore bound the creation time, inclusive
	// and exclusive.
	CreatedAfter  time.Time
	CreatedBefore time.Time
	// Limit is the page size; zero means 50, and it is capped at 1000.
	Limit int
	// Cursor continues a previous page: pass its [Page.Next].
	Cursor string
}

// Page is one page of a listing.
type Page struct {
	Executions []Execution
	// Next is the cursor of the following page, empty on the last one.
	Next string
}

// Page size bounds for [Filter.Limit].
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)
