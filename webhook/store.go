package webhook

import (
	"context"
	"time"
)

// Endpoint is a subscriber: where events are posted and which ones.
type Endpoint struct {
	// ID is "wep_" followed by a ULID.
	ID string `json:"id"`
	// URL receives the POSTs.
	URL string `json:"url"`
	// EventTypes selects events: an exact type ("execution.completed"), a
	// prefix ("execution.*") or "*".
	EventTypes []string `json:"eventTypes"`
	// Ordered delivers one execution's events in version order: an event
	// waits until the previous one was delivered or died.
	Ordered bool `json:"ordered"`
	// DisabledAt is when the endpoint was disabled, zero while enabled.
	// Deliveries of a disabled endpoint are parked, not dropped.
	DisabledAt time.Time `json:"disabledAt,omitzero"`
	// DisabledReason says why.
	DisabledReason string `json:"disabledReason,omitempty"`
	// FailingSince is when the current run of failed attempts began,
	// zero after a success.
	FailingSince time.Time `json:"failingSince,omitzero"`
	// CreatedAt and UpdatedAt are in UTC.
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Enabled reports whether the endpoint receives deliveries.
func (e Endpoint) Enabled() bool { return e.DisabledAt.IsZero() }

// DeliveryState is where a delivery stands.
type DeliveryState string

// The states of a delivery.
const (
	// Pending deliveries wait for their next attempt.
	Pending DeliveryState = "pending"
	// Delivered deliveries were answered with a 2xx.
	Delivered DeliveryState = "delivered"
	// Dead deliveries failed every attempt of the schedule. They are kept
	// and can be replayed.
	Dead DeliveryState = "dead"
	// Parked deliveries belong to a disabled endpoint and resume when it
	// is enabled.
	Parked DeliveryState = "parked"
)

// Delivery is one event on its way to one endpoint.
type Delivery struct {
	ID          int64  `json:"id"`
	EventID     string `json:"eventId"`
	EndpointID  string `json:"endpointId"`
	ExecutionID string `json:"executionId"`
	// Version is the execution's version the event announces.
	Version int64         `json:"version"`
	State   DeliveryState `json:"state"`
	// Attempts counts the attempts made.
	Attempts int `json:"attempts"`
	// NextAttemptAt is when a pending delivery is tried next.
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`
	// LastStatus and LastError describe the latest attempt.
	LastStatus  int       `json:"lastStatus,omitempty"`
	LastError   string    `json:"lastError,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	DeliveredAt time.Time `json:"deliveredAt,omitzero"`
}

// Attempt is the record of one POST.
type Attempt struct {
	DeliveryID int64     `json:"deliveryId"`
	At         time.Time `json:"at"`
	// StatusCode is the answer's status, 0 when none came.
	StatusCode int           `json:"statusCode"`
	Latency    time.Duration `json:"latencyNs"`
	// Error says why the attempt failed; empty on success.
	Error string `json:"error,omitempty"`
	// Response is the start of the answer's body, capped in size.
	Response string `json:"response,omitempty"`
}

// Job is a claimed delivery with what it takes to send it.
type Job struct {
	Delivery Delivery
	// Payload is the event body, byte for byte as stored.
	Payload []byte
	URL     string
	// Secrets are the endpoint's signing secrets in force.
	Secrets []string
}

// Outcome is how an attempt ended, and what follows for the delivery and
// its endpoint. The store applies it in one transaction.
type Outcome struct {
	DeliveryID int64
	// LeaseOwner must still hold the delivery, or nothing is written.
	LeaseOwner string
	Attempt    Attempt
	// State is the delivery's new state; NextAttemptAt goes with Pending.
	State         DeliveryState
	NextAttemptAt time.Time
	// Failed marks the endpoint as failing since the attempt, unless it
	// already was; otherwise its failing run ends.
	Failed bool
	// DisableAfter disables the endpoint and parks its deliveries once it
	// has been failing this long. Zero never does.
	DisableAfter time.Duration
	// Disable, if set, disables the endpoint at once with this reason
	// (an answer of 410 Gone).
	Disable string
}

// ClaimParams selects and leases due deliveries.
type ClaimParams struct {
	Now   time.Time
	Until time.Time
	Owner string
	Limit int
	// PerEndpoint caps the deliveries in flight to one endpoint; Busy
	// counts those this caller already has in flight.
	PerEndpoint int
	Busy        map[string]int
}

// DeliveryFilter selects deliveries for listing. Zero fields match all.
type DeliveryFilter struct {
	State       DeliveryState
	EndpointID  string
	EventID     string
	ExecutionID string
	// Limit is the most to return; zero means 100.
	Limit int
}

// Store persists endpoints, deliveries and attempts. The sqlite package
// implements it on the same file as the executions.
type Store interface {
	// AddEndpoint stores a new endpoint with its first secret.
	AddEndpoint(ctx context.Context, e Endpoint, secret string) error
	// GetEndpoint returns an endpoint or an error wrapping ErrNotFound.
	GetEndpoint(ctx context.Context, id string) (Endpoint, error)
	// ListEndpoints returns every endpoint, oldest first.
	ListEndpoints(ctx context.Context) ([]Endpoint, error)
	// UpdateEndpoint changes an endpoint's URL, event types and ordering.
	UpdateEndpoint(ctx context.Context, e Endpoint) error
	// DisableEndpoint disables an endpoint and parks its pending
	// deliveries.
	DisableEndpoint(ctx context.Context, id, reason string, at time.Time) error
	// EnableEndpoint enables an endpoint, ends its failing run and makes
	// its parked deliveries pending at once.
	EnableEndpoint(ctx context.Context, id string, at time.Time) error
	// RotateSecret adds a secret; the secrets in force keep signing until
	// retireAt.
	RotateSecret(ctx context.Context, id, secret string, at, retireAt time.Time) error

	// FanOut creates one delivery per event not fanned out yet and per
	// endpoint whose filter matches it, pending at now (parked for a
	// disabled endpoint), and marks the events fanned out. It handles up
	// to limit events and returns how many.
	FanOut(ctx context.Context, now time.Time, limit int) (int, error)
	// ClaimDeliveries leases due deliveries of enabled endpoints, at most
	// PerEndpoint in flight per endpoint, and never one that an ordered
	// endpoint must hold back behind an earlier version.
	ClaimDeliveries(ctx context.Context, p ClaimParams) ([]Job, error)
	// RecordAttempt applies an outcome, if the lease still holds.
	RecordAttempt(ctx context.Context, o Outcome) error
	// ReleaseDelivery ends a lease without an attempt, making the
	// delivery due at next.
	ReleaseDelivery(ctx context.Context, id int64, owner string, next time.Time) error
	// NextDeliveryDue returns the earliest next attempt of a pending
	// delivery of an enabled endpoint.
	NextDeliveryDue(ctx context.Context) (time.Time, bool, error)
	// ListDeliveries returns deliveries matching f, newest first.
	ListDeliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error)
	// Attempts returns a delivery's attempts, oldest first.
	Attempts(ctx context.Context, deliveryID int64) ([]Attempt, error)
	// Replay makes the deliveries of the events to the endpoint pending at
	// now with a fresh schedule, creating those that do not exist. It
	// returns how many it queued.
	Replay(ctx context.Context, endpointID string, eventIDs []string, now time.Time) (int, error)
	// EventsSince returns the ids of the events created at or after since,
	// oldest first.
	EventsSince(ctx context.Context, since time.Time) ([]string, error)
}

// InboxState is what the inbox knows of an event id.
type InboxState int

// The answers of [Inbox.Begin].
const (
	// InboxNew: the caller now holds the event and must Finish or
	// Release it.
	InboxNew InboxState = iota
	// InboxProcessed: the event was handled before.
	InboxProcessed
	// InboxBusy: another process is handling it right now.
	InboxBusy
)

// InboxEntry is the transition a received event announced.
type InboxEntry struct {
	EventID        string
	ExecutionID    string
	Type           string
	Status         string
	PreviousStatus string
	Version        int64
	ReceivedAt     time.Time
}

// Inbox deduplicates received events by id. The sqlite package implements
// it.
type Inbox interface {
	// InboxBegin records the event and claims it until leaseUntil, unless
	// it was processed or is claimed by another caller.
	InboxBegin(ctx context.Context, e InboxEntry, leaseUntil time.Time) (InboxState, error)
	// InboxFinish marks a claimed event processed.
	InboxFinish(ctx context.Context, eventID string, at time.Time) error
	// InboxRelease gives up a claim, so that a redelivery is processed.
	InboxRelease(ctx context.Context, eventID string) error
}
