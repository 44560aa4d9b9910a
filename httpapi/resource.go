// Package httpapi serves executions over HTTP and polls them from Go.
//
// [NewHandler] returns an http.Handler a host mounts to expose the
// execution resource: create, read (with conditional and long-poll GET),
// list, cancel and history, every call scoped to the owner the host's
// authentication returns. [Client] is the matching Go client; its
// [Client.Wait] polls an execution to a terminal state the polite way.
package httpapi

import (
	"encoding/json"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
)

// Execution is the JSON form of an execution, as served and as the client
// returns it. Field names and the form of times (RFC 3339 in UTC with
// milliseconds, [execution.TimeFormat]) match the webhook event payloads.
// NextCheckAt is absent for a terminal execution and while a worker is
// calling the provider.
type Execution struct {
	ID          string           `json:"id"`
	Action      string           `json:"action"`
	Status      fsm.State        `json:"status"`
	Version     int64            `json:"version"`
	Done        bool             `json:"done"`
	Input       json.RawMessage  `json:"input"`
	Output      json.RawMessage  `json:"output,omitempty"`
	Progress    json.RawMessage  `json:"progress,omitempty"`
	Error       *execution.Error `json:"error,omitempty"`
	ExternalRef string           `json:"externalRef,omitempty"`
	CreatedAt   time.Time        `json:"createdAt"`
	UpdatedAt   time.Time        `json:"updatedAt"`
	CompletedAt *time.Time       `json:"completedAt,omitempty"`
	NextCheckAt *time.Time       `json:"nextCheckAt,omitempty"`
	Deadline    *time.Time       `json:"deadline,omitempty"`
}

// Transition is the JSON form of one history row.
type Transition struct {
	Version int64     `json:"version"`
	From    fsm.State `json:"from,omitempty"`
	To      fsm.State `json:"to"`
	Event   fsm.Event `json:"event"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// Page is the JSON form of a listing.
type Page struct {
	Executions []Execution `json:"executions"`
	// NextCursor continues the listing; empty on the last page.
	NextCursor string `json:"nextCursor,omitempty"`
}

// CreateRequest is the body of POST /executions.
type CreateRequest struct {
	Action string          `json:"action"`
	Input  json.RawMessage `json:"input,omitempty"`
	// Deadline, if set, fails the execution when it is still live then.
	Deadline *time.Time `json:"deadline,omitempty"`
}

// NewExecution returns the JSON form of an execution record.
func NewExecution(e execution.Execution) Execution {
	out := Execution{
		ID:          e.ID,
		Action:      e.Action,
		Status:      e.Status,
		Version:     e.Version,
		Done:        e.Done(),
		Input:       e.Input,
		Output:      e.Output,
		Progress:    e.Progress,
		Error:       e.Error,
		ExternalRef: e.ExternalRef,
		CreatedAt:   e.CreatedAt.UTC(),
		UpdatedAt:   e.UpdatedAt.UTC(),
		CompletedAt: optionalTime(e.CompletedAt),
		Deadline:    optionalTime(e.Deadline),
	}
	if !e.Done() && e.LeaseOwner == "" {
		// A leased execution's NextCheckAt is its lease's expiry, not a
		// planned check: the check is in progress.
		out.NextCheckAt = optionalTime(e.NextCheckAt)
	}
	return out
}

// stamp formats t as the event payloads do.
func stamp(t time.Time) string { return t.UTC().Format(execution.TimeFormat) }

func optionalStamp(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := stamp(*t)
	return &s
}

// MarshalJSON writes times in [execution.TimeFormat], fixed width, so that
// they match the event payloads and sort as text.
func (x Execution) MarshalJSON() ([]byte, error) {
	type plain Execution // without this method
	return json.Marshal(struct {
		plain
		CreatedAt   string  `json:"createdAt"`
		UpdatedAt   string  `json:"updatedAt"`
		CompletedAt *string `json:"completedAt,omitempty"`
		NextCheckAt *string `json:"nextCheckAt,omitempty"`
		Deadline    *string `json:"deadline,omitempty"`
	}{plain(x), stamp(x.CreatedAt), stamp(x.UpdatedAt), optionalStamp(x.CompletedAt),
		optionalStamp(x.NextCheckAt), optionalStamp(x.Deadline)})
}

// MarshalJSON writes At in [execution.TimeFormat], as [Execution] does.
func (t Transition) MarshalJSON() ([]byte, error) {
	type plain Transition
	return json.Marshal(struct {
		plain
		At string `json:"at"`
	}{plain(t), stamp(t.At)})
}

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
