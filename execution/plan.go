package execution

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/internal/jsonx"
)

// Text limits of an update's fields.
const (
	maxExternalRef   = 255
	maxReason        = 500
	maxErrorCode     = 100
	maxErrorMessage  = 2000
	maxProviderName  = 100
	maxCallErrorText = 1000
)

// plan turns an update into the write that applies it to e: the new row,
// one history row and one event per transition. It does not touch the
// store. The write expects e's status, version and revision, and no lease.
//
// Output goes only with a completed execution, an error only with a
// failed or refunded one, progress only with a running one. A strict plan
// (an update pushed through [Engine.Apply]) refuses a field that does not
// go with the resulting state; a lenient one (a provider's answer to a
// check, which may repeat earlier news) drops it.
func (g *Engine) plan(ctx context.Context, e Execution, u Update, now time.Time, strict bool) (Write, error) {
	if err := g.checkUpdate(u); err != nil {
		return Write{}, err
	}
	var path []fsm.Event
	if u.Status != "" && u.Status != e.Status {
		p, err := fsm.Path(e.Status, u.Status)
		if err != nil {
			return Write{}, err
		}
		path = p
	}
	target := e.Status
	if u.Status != "" {
		target = u.Status
	}
	misplaced := func(field, goesWith string) error {
		if strict {
			return &ValidationError{Field: field, Problem: fmt.Sprintf("goes only with %s, not %s", goesWith, target)}
		}
		return nil
	}

	next := e
	next.Revision = e.Revision + 1
	next.UpdatedAt = now
	if u.ExternalRef != "" {
		next.ExternalRef = u.ExternalRef
	}
	if u.Output != nil {
		if target != fsm.Completed {
			if err := misplaced("output", "status completed"); err != nil {
				return Write{}, err
			}
		} else {
			out, err := checkObject("output", u.Output, g.cfg.MaxInputBytes)
			if err != nil {
				return Write{}, err
			}
			next.Output = out
		}
	}
	if u.Error != nil {
		if target != fsm.Failed && target != fsm.Refunded {
			if err := misplaced("error", "status failed or refunded"); err != nil {
				return Write{}, err
			}
		} else {
			errCopy := *u.Error
			next.Error = &errCopy
		}
	}
	if u.Progress != nil {
		if target != fsm.Running {
			if err := misplaced("progress", "status running"); err != nil {
				return Write{}, err
			}
		} else {
			progress, err := checkObject("progress", u.Progress, g.cfg.MaxInputBytes)
			if err != nil {
				return Write{}, err
			}
			if !bytes.Equal(progress, e.Progress) {
				next.Progress = progress
				path = append(path, fsm.Progress)
			}
		}
	}

	w := Write{Expect: Expect{Status: e.Status, Version: e.Version, Revision: e.Revision}}
	for _, ev := range path {
		to, err := fsm.Apply(ctx, next.Status, ev)
		if err != nil {
			return Write{}, err
		}
		t := Transition{
			ExecutionID: e.ID,
			Version:     next.Version + 1,
			From:        next.Status,
			To:          to,
			Event:       ev,
			Reason:      u.Reason,
			At:          now,
		}
		w.Transitions = append(w.Transitions, t)
		w.Events = append(w.Events, g.newEvent(next.Action, t))
		next.Status, next.Version = to, t.Version
	}
	if err := g.checkEvents(w.Events...); err != nil {
		return Write{}, err
	}
	if next.Done() {
		next.CompletedAt = now
		next.NextCheckAt = time.Time{}
		next.LeaseOwner = ""
	}
	w.Execution = next
	return w, nil
}

// checkUpdate checks the size and form of an update's fields.
func (g *Engine) checkUpdate(u Update) error {
	if u.Status != "" && !u.Status.Valid() {
		return &ValidationError{Field: "status", Problem: fmt.Sprintf("%.40q is not a state", u.Status)}
	}
	if err := validateText("external reference", u.ExternalRef, maxExternalRef); err != nil {
		return err
	}
	if err := validateText("reason", u.Reason, maxReason); err != nil {
		return err
	}
	if u.Error != nil {
		if u.Error.Code == "" {
			return &ValidationError{Field: "error code", Problem: "is required"}
		}
		if err := validateText("error code", u.Error.Code, maxErrorCode); err != nil {
			return err
		}
		if len(u.Error.Message) > maxErrorMessage || !utf8.ValidString(u.Error.Message) {
			return &ValidationError{Field: "error message",
				Problem: fmt.Sprintf("must be valid UTF-8 of at most %d bytes", maxErrorMessage)}
		}
	}
	return nil
}

// clip shortens s to at most n bytes, an ellipsis included, without
// splitting a character, for text the engine copies from provider errors
// into an execution.
func clip(s string, n int) string {
	const ellipsis = "…"
	if len(s) <= n {
		return s
	}
	s = s[:n-len(ellipsis)]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + ellipsis
}

// newCreation validates req and builds the new execution with its
// creation history row and event.
func (g *Engine) newCreation(req CreateRequest) (Creation, error) {
	if err := validateAction(req.Action); err != nil {
		return Creation{}, err
	}
	p := g.provider(req.Action)
	if p == nil {
		return Creation{}, fmt.Errorf("%w: no provider is registered for %q", ErrUnknownAction, req.Action)
	}
	if err := validateText("owner", req.Owner, 200); err != nil {
		return Creation{}, err
	}
	if err := validateText("idempotency key", req.IdempotencyKey, 255); err != nil {
		return Creation{}, err
	}
	raw := req.Input
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = []byte("{}")
	}
	input, err := checkObject("input", raw, g.cfg.MaxInputBytes)
	if err != nil {
		return Creation{}, err
	}
	now := g.now()
	var deadline time.Time
	if !req.Deadline.IsZero() {
		deadline = req.Deadline.UTC().Add(time.Millisecond - 1).Truncate(time.Millisecond) // round up
		if !deadline.After(now) || deadline.Year() > 9999 {
			return Creation{}, &ValidationError{Field: "deadline",
				Problem: fmt.Sprintf("%s is not in the future (before year 10000)", req.Deadline.UTC().Format(time.RFC3339Nano))}
		}
	}
	hash, err := requestHash(req.Action, input, deadline)
	if err != nil {
		return Creation{}, err
	}

	e := Execution{
		ID:             g.ids.next("exe_", now),
		Action:         req.Action,
		Provider:       p.Name(),
		Owner:          req.Owner,
		Status:         fsm.Pending,
		Version:        1,
		Revision:       1,
		Input:          input,
		IdempotencyKey: req.IdempotencyKey,
		RequestHash:    hash,
		CreatedAt:      now,
		UpdatedAt:      now,
		NextCheckAt:    now,
	}
	e.Deadline = deadline
	t := Transition{ExecutionID: e.ID, Version: 1, To: fsm.Pending, Event: EventCreate, At: now}
	ev := g.newEvent(e.Action, t)
	if err := g.checkEvents(ev); err != nil {
		return Creation{}, err
	}
	return Creation{Execution: e, Transition: t, Event: ev}, nil
}

// newEvent builds the outbox event announcing t.
func (g *Engine) newEvent(action string, t Transition) Event {
	typ := "execution." + string(t.To)
	switch t.Event {
	case EventCreate:
		typ = "execution.created"
	case fsm.Progress:
		typ = "execution.progress"
	}
	ev := Event{
		ID:          g.ids.next("evt_", t.At),
		ExecutionID: t.ExecutionID,
		Type:        typ,
		Version:     t.Version,
		CreatedAt:   t.At,
	}
	payload, err := json.Marshal(EventPayload{
		ID:             ev.ID,
		Event:          typ,
		ExecutionID:    t.ExecutionID,
		Action:         action,
		Status:         t.To,
		PreviousStatus: t.From,
		Version:        t.Version,
		Timestamp:      t.At.UTC().Format(TimeFormat),
	})
	if err != nil {
		// Every field is a string or an integer.
		panic(fmt.Sprintf("execution: marshal event payload: %v", err))
	}
	ev.Payload = payload
	return ev
}

// checkEvents refuses events whose payload exceeds MaxEventBytes.
func (g *Engine) checkEvents(evs ...Event) error {
	for _, ev := range evs {
		if len(ev.Payload) > g.cfg.MaxEventBytes {
			return &ValidationError{Field: "event",
				Problem: fmt.Sprintf("%s payload of %d bytes exceeds the limit of %d", ev.Type, len(ev.Payload), g.cfg.MaxEventBytes)}
		}
	}
	return nil
}

// checkObject checks that raw is one JSON object of at most max bytes and
// returns it compacted.
func checkObject(field string, raw []byte, max int) (json.RawMessage, error) {
	if len(raw) > max {
		return nil, &ValidationError{Field: field,
			Problem: fmt.Sprintf("%d bytes exceeds the limit of %d", len(raw), max)}
	}
	if !utf8.Valid(raw) {
		return nil, &ValidationError{Field: field, Problem: "not valid UTF-8"}
	}
	first := bytes.TrimLeft(raw, " \t\r\n")
	if len(first) == 0 || first[0] != '{' {
		return nil, &ValidationError{Field: field, Problem: "must be a JSON object"}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, &ValidationError{Field: field, Problem: "malformed JSON: " + err.Error()}
	}
	if key, ok := jsonx.DuplicateKey(buf.Bytes()); ok {
		return nil, &ValidationError{Field: field, Problem: fmt.Sprintf("key %.40q appears twice in one object", key)}
	}
	return buf.Bytes(), nil
}

// requestHash identifies a creation request by its action, its input in
// canonical form (so that key order and spacing do not matter) and its
// deadline.
func requestHash(action string, input []byte, deadline time.Time) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", &ValidationError{Field: "input", Problem: "malformed JSON: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", &ValidationError{Field: "input", Problem: "trailing data after the JSON object"}
	}
	var canon bytes.Buffer
	enc := json.NewEncoder(&canon)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // maps encode with sorted keys
		return "", fmt.Errorf("canonical input: %w", err)
	}
	h := sha256.New()
	h.Write([]byte(action))
	h.Write([]byte{0})
	h.Write(canon.Bytes())
	if !deadline.IsZero() {
		fmt.Fprintf(h, "deadline %d", deadline.UnixMilli())
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// validateAction accepts names like "servers.provision": lower-case
// letters, digits, '.', '_' and '-', starting with a letter, at most 100
// bytes.
func validateAction(action string) error {
	if action == "" {
		return &ValidationError{Field: "action", Problem: "is required"}
	}
	if len(action) > 100 {
		return &ValidationError{Field: "action", Problem: fmt.Sprintf("%d bytes exceeds the limit of 100", len(action))}
	}
	for i, r := range action {
		ok := r >= 'a' && r <= 'z' || i > 0 && (r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
		if !ok {
			return &ValidationError{Field: "action",
				Problem: fmt.Sprintf("%q: use lower-case letters, digits, '.', '_' and '-', starting with a letter", action)}
		}
	}
	return nil
}

// validateText accepts UTF-8 without control characters, at most max
// bytes.
func validateText(field, s string, max int) error {
	if len(s) > max {
		return &ValidationError{Field: field, Problem: fmt.Sprintf("%d bytes exceeds the limit of %d", len(s), max)}
	}
	if !utf8.ValidString(s) {
		return &ValidationError{Field: field, Problem: "not valid UTF-8"}
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return &ValidationError{Field: field, Problem: fmt.Sprintf("control character at byte %d", i)}
	}
	return nil
}

// ValidateID reports whether id has the form of an execution id: "exe_"
// followed by a ULID. The error is a [*ValidationError].
func ValidateID(id string) error {
	rest, ok := strings.CutPrefix(id, "exe_")
	if !ok {
		return &ValidationError{Field: "id", Problem: fmt.Sprintf("%.40q does not start with exe_", id)}
	}
	if _, err := ulid.ParseStrict(rest); err != nil || strings.ToUpper(rest) != rest {
		return &ValidationError{Field: "id", Problem: fmt.Sprintf("%.40q is not exe_ followed by a ULID", id)}
	}
	return nil
}

// ExampleID returns a well-formed execution id made from n, for tests and
// examples that need ids without an engine.
func ExampleID(n int) string {
	var id ulid.ULID
	for i := range 8 {
		id[15-i] = byte(n >> (8 * i))
	}
	return "exe_" + id.String()
}

// idSource makes ULIDs that increase within a millisecond, so that ids
// made by one engine sort in creation order.
type idSource struct {
	mu      sync.Mutex
	entropy *ulid.MonotonicEntropy
}

func newIDSource() idSource {
	return idSource{entropy: ulid.Monotonic(rand.Reader, 0)}
}

func (s *idSource) next(prefix string, at time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := ulid.New(ulid.Timestamp(at), s.entropy)
	if err != nil {
		// The monotonic counter ran out within one millisecond, or time
		// went backwards: start afresh from plain randomness.
		id = ulid.MustNew(ulid.Timestamp(at), rand.Reader)
	}
	return prefix + id.String()
}
