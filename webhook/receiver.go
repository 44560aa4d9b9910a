package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/internal/jsonx"
)

// ReceiverConfig sets up a [Receiver]. Secrets, Inbox, Fetch and Handle
// are required; the zero value of every other field selects the default
// in its comment.
type ReceiverConfig[T any] struct {
	// Secrets verify the signatures, with or without the whsec_ prefix.
	// During a rotation list both.
	Secrets []string
	// Inbox deduplicates by event id; the sqlite store implements it.
	Inbox Inbox
	// Fetch returns the canonical execution, such as httpapi.Client.Get.
	Fetch func(ctx context.Context, executionID string) (T, error)
	// Handle gets the event as received and the execution as it is now.
	// The event counts as processed only if Handle returns nil; otherwise
	// the sender is told to retry.
	Handle func(ctx context.Context, ev execution.EventPayload, current T) error
	// Tolerance is how far the timestamp may be from now. Zero means 5
	// minutes.
	Tolerance time.Duration
	// MaxBodyBytes caps the body. Zero means 256 KiB.
	MaxBodyBytes int64
	// HandleTimeout bounds Fetch and Handle together, and is how long the
	// inbox keeps the event claimed. Zero means 30 seconds.
	HandleTimeout time.Duration
	// Clock tells the time. Nil means the wall clock.
	Clock execution.Clock
	// Logger receives the receiver's logs, never bodies or secrets. Nil
	// discards them.
	Logger *slog.Logger
}

// Receiver is the consuming side's http.Handler: it verifies the
// signature against the raw body, rejects stale timestamps, deduplicates
// by event id, records the transition the event announced, fetches the
// canonical execution and hands both to the host. Because the host always
// gets the execution as it is now, late and out-of-order events never move
// its view backwards.
//
// Answers: 204 when handled or a duplicate, 400 for a malformed event or
// headers, 401 for a bad signature or stale timestamp, 413 for a body over
// the limit, 503 (with Retry-After) while another process handles the same
// event, 500 when Fetch or Handle fail, so that the sender retries.
type Receiver[T any] struct {
	cfg     ReceiverConfig[T]
	secrets []Secret

	mu       sync.Mutex
	inflight map[string]*call // concurrent duplicates wait for the first
}

type call struct {
	done   chan struct{}
	status int
}

// NewReceiver returns a receiver.
func NewReceiver[T any](cfg ReceiverConfig[T]) (*Receiver[T], error) {
	if cfg.Inbox == nil || cfg.Fetch == nil || cfg.Handle == nil {
		return nil, fmt.Errorf("webhook: new receiver: %w: Inbox, Fetch and Handle are required", ErrInvalid)
	}
	if len(cfg.Secrets) == 0 {
		return nil, fmt.Errorf("webhook: new receiver: %w: no secrets", ErrInvalid)
	}
	r := &Receiver[T]{cfg: cfg, inflight: map[string]*call{}}
	for i, s := range cfg.Secrets {
		sec, err := ParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("webhook: new receiver: secret %d: %w", i, err)
		}
		r.secrets = append(r.secrets, sec)
	}
	if r.cfg.Tolerance <= 0 {
		r.cfg.Tolerance = DefaultTolerance
	}
	if r.cfg.MaxBodyBytes <= 0 {
		r.cfg.MaxBodyBytes = 256 << 10
	}
	if r.cfg.HandleTimeout <= 0 {
		r.cfg.HandleTimeout = 30 * time.Second
	}
	if r.cfg.Clock == nil {
		r.cfg.Clock = execution.SystemClock{}
	}
	if r.cfg.Logger == nil {
		r.cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return r, nil
}

// ServeHTTP handles one delivery.
func (r *Receiver[T]) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	ev, err := r.Verify(req)
	if err != nil {
		r.cfg.Logger.InfoContext(req.Context(), "webhook refused", "error", err)
		http.Error(w, err.Error(), statusFor(err))
		return
	}
	status := r.process(req.Context(), ev)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	w.WriteHeader(status)
}

// Verify reads and checks one request: size, headers, signature,
// timestamp, and the event's shape. Errors wrap [ErrBodyTooLarge],
// [ErrMissingHeaders], [ErrStaleTimestamp], [ErrBadSignature] or
// [ErrMalformedEvent].
func (r *Receiver[T]) Verify(req *http.Request) (execution.EventPayload, error) {
	var ev execution.EventPayload
	body, err := io.ReadAll(io.LimitReader(req.Body, r.cfg.MaxBodyBytes+1))
	if err != nil {
		return ev, fmt.Errorf("%w: read body: %v", ErrMalformedEvent, err)
	}
	if int64(len(body)) > r.cfg.MaxBodyBytes {
		return ev, fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, r.cfg.MaxBodyBytes)
	}
	id, err := Verify(req.Header, body, r.cfg.Clock.Now(), r.cfg.Tolerance, r.secrets...)
	if err != nil {
		return ev, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&ev); err != nil {
		return ev, fmt.Errorf("%w: %.100v", ErrMalformedEvent, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return ev, fmt.Errorf("%w: trailing data after the event", ErrMalformedEvent)
	}
	if key, dup := jsonx.DuplicateKey(body); dup {
		return ev, fmt.Errorf("%w: key %.40q appears twice", ErrMalformedEvent, key)
	}
	switch {
	case ev.ID != id:
		return ev, fmt.Errorf("%w: body id %.40q differs from %s %.40q", ErrMalformedEvent, ev.ID, HeaderID, id)
	case execution.ValidateID(ev.ExecutionID) != nil:
		return ev, fmt.Errorf("%w: executionId %.40q", ErrMalformedEvent, ev.ExecutionID)
	case !strings.HasPrefix(ev.Event, "execution.") || !ev.Status.Valid() || ev.Version < 1:
		return ev, fmt.Errorf("%w: event %.40q, status %.40q, version %d", ErrMalformedEvent, ev.Event, ev.Status, ev.Version)
	}
	return ev, nil
}

func statusFor(err error) int {
	switch {
	case errors.Is(err, ErrBodyTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrBadSignature), errors.Is(err, ErrStaleTimestamp):
		return http.StatusUnauthorized
	}
	return http.StatusBadRequest
}

// process handles a verified event once; a concurrent duplicate waits for
// the first and gets the same answer.
func (r *Receiver[T]) process(ctx context.Context, ev execution.EventPayload) int {
	r.mu.Lock()
	if c, ok := r.inflight[ev.ID]; ok {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.status
		case <-ctx.Done():
			return http.StatusServiceUnavailable
		}
	}
	c := &call{done: make(chan struct{}), status: http.StatusInternalServerError}
	r.inflight[ev.ID] = c
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.inflight, ev.ID)
		r.mu.Unlock()
		close(c.done)
	}()

	c.status = r.handleOnce(ctx, ev)
	return c.status
}

func (r *Receiver[T]) handleOnce(ctx context.Context, ev execution.EventPayload) int {
	now := r.cfg.Clock.Now()
	entry := InboxEntry{EventID: ev.ID, ExecutionID: ev.ExecutionID, Type: ev.Event, Status: string(ev.Status),
		PreviousStatus: string(ev.PreviousStatus), Version: ev.Version, ReceivedAt: now}
	state, err := r.cfg.Inbox.InboxBegin(ctx, entry, now.Add(r.cfg.HandleTimeout))
	switch {
	case err != nil:
		r.cfg.Logger.ErrorContext(ctx, "record received event", "event", ev.ID, "error", err)
		return http.StatusInternalServerError
	case state == InboxProcessed:
		return http.StatusNoContent
	case state == InboxBusy:
		return http.StatusServiceUnavailable
	}

	err = r.fetchAndHandle(ctx, ev)
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer wcancel()
	if err != nil {
		r.cfg.Logger.WarnContext(ctx, "webhook not handled; the sender will retry", "event", ev.ID, "error", err)
		if err := r.cfg.Inbox.InboxRelease(wctx, ev.ID); err != nil {
			r.cfg.Logger.ErrorContext(ctx, "release received event", "event", ev.ID, "error", err)
		}
		return http.StatusInternalServerError
	}
	if err := r.cfg.Inbox.InboxFinish(wctx, ev.ID, r.cfg.Clock.Now()); err != nil {
		r.cfg.Logger.ErrorContext(ctx, "mark event processed", "event", ev.ID, "error", err)
		return http.StatusInternalServerError
	}
	return http.StatusNoContent
}

// fetchAndHandle runs the host's functions under HandleTimeout; a panic in
// them is an error like any other, so that the event is released for the
// sender's retry.
func (r *Receiver[T]) fetchAndHandle(ctx context.Context, ev execution.EventPayload) (err error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.HandleTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("webhook handler panicked: %v", p)
		}
	}()
	current, err := r.cfg.Fetch(ctx, ev.ExecutionID)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", ev.ExecutionID, err)
	}
	return r.cfg.Handle(ctx, ev, current)
}
