package execution

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/internal/wake"
)

// Clock tells the time. Every schedule in the engine reads it, so tests
// can move time by hand.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// Config tunes an [Engine]. The zero value of every field selects the
// default named in its comment.
type Config struct {
	// Logger receives the engine's logs. Nil discards them.
	Logger *slog.Logger
	// Clock tells the time. Nil means [SystemClock].
	Clock Clock
	// Workers is how many provider calls may run at once. Zero means 8.
	Workers int
	// LeaseDuration is how long a claim holds an execution. A worker that
	// crashes loses its claims after this long. Zero means one minute; at
	// least 100ms.
	LeaseDuration time.Duration
	// ProviderTimeout bounds one provider call. It must be shorter than
	// LeaseDuration. Zero means half of LeaseDuration.
	ProviderTimeout time.Duration
	// CheckInterval is how long to wait between checks when a provider
	// gives no [Update.CheckAfter]. Zero means 5 seconds.
	CheckInterval time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff after a
	// transient provider failure: the first retry waits about MinBackoff,
	// each further one twice as long, never more than MaxBackoff. The
	// actual wait is drawn from the upper half of that. Zero means 1
	// second and 10 minutes.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxFailedAttempts fails an execution with [CodeRetriesExhausted]
	// after this many provider failures in a row. Zero means 30; a
	// negative value retries until the deadline, if any.
	MaxFailedAttempts int
	// PollInterval is the longest the idle loop sleeps before looking for
	// due executions; creations and provider answers wake it sooner.
	// Zero means one second.
	PollInterval time.Duration
	// MaxInputBytes caps the size of an execution's input and of a
	// provider's output or progress. Zero means 1 MiB.
	MaxInputBytes int
	// MaxEventBytes caps an outbox event's payload: a change whose event
	// would be larger is refused when it would be written, so that no
	// event can fail forever downstream. Zero means 256 KiB.
	MaxEventBytes int
}

func (c Config) withDefaults() (Config, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	setDefault(&c.Workers, 8)
	setDefault(&c.LeaseDuration, time.Minute)
	setDefault(&c.ProviderTimeout, c.LeaseDuration/2)
	setDefault(&c.CheckInterval, 5*time.Second)
	setDefault(&c.MinBackoff, time.Second)
	setDefault(&c.MaxBackoff, 10*time.Minute)
	setDefault(&c.MaxFailedAttempts, 30)
	setDefault(&c.PollInterval, time.Second)
	setDefault(&c.MaxInputBytes, 1<<20)
	setDefault(&c.MaxEventBytes, 256<<10)

	bad := func(field, problem string) (Config, error) {
		return c, fmt.Errorf("config: %w", &ValidationError{Field: field, Problem: problem})
	}
	switch {
	case c.Workers < 0:
		return bad("Workers", fmt.Sprintf("%d is negative", c.Workers))
	case c.LeaseDuration < 0, c.ProviderTimeout < 0, c.CheckInterval < 0, c.MinBackoff < 0,
		c.MaxBackoff < 0, c.PollInterval < 0, c.MaxInputBytes < 0, c.MaxEventBytes < 0:
		return bad("durations and sizes", "must not be negative")
	case c.LeaseDuration < minLease:
		return bad("LeaseDuration", fmt.Sprintf("%s is shorter than the minimum of %s", c.LeaseDuration, minLease))
	case c.ProviderTimeout >= c.LeaseDuration:
		return bad("ProviderTimeout", fmt.Sprintf("%s must be shorter than LeaseDuration %s", c.ProviderTimeout, c.LeaseDuration))
	case c.MinBackoff > c.MaxBackoff:
		return bad("MinBackoff", fmt.Sprintf("%s exceeds MaxBackoff %s", c.MinBackoff, c.MaxBackoff))
	}
	return c, nil
}

// minLease is the shortest lease the engine accepts: a provider call has
// to fit inside it.
const minLease = 100 * time.Millisecond

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Engine creates executions and drives them to terminal states. It is safe
// for concurrent use. Several engines, in one process or several, may
// share a store: leases keep them from working on the same execution.
type Engine struct {
	store Store
	cfg   Config
	log   *slog.Logger
	ids   idSource

	mu        sync.RWMutex
	providers map[string]Provider

	wake   *wake.Signal
	watch  watchers
	recent *recent // executions as this engine last wrote them

	lifeMu  sync.Mutex
	started bool
	stopped bool
	loop    *loop
}

// New returns an engine on store. It returns an error if cfg is invalid.
func New(store Store, cfg Config) (*Engine, error) {
	if store == nil {
		return nil, errors.New("execution: new engine: nil store")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("execution: new engine: %w", err)
	}
	return &Engine{
		store:     store,
		cfg:       cfg,
		log:       cfg.Logger,
		ids:       newIDSource(),
		providers: make(map[string]Provider),
		wake:      wake.New(),
		recent:    newRecent(),
	}, nil
}

// Register makes p the provider of action. It may be called at any time;
// registering an action again replaces its provider for calls made from
// then on.
func (g *Engine) Register(action string, p Provider) error {
	if err := validateAction(action); err != nil {
		return fmt.Errorf("register provider: %w", err)
	}
	if isNil(p) {
		return fmt.Errorf("register provider for %s: %w", action, &ValidationError{Field: "provider", Problem: "is nil"})
	}
	if err := validateText("provider name", p.Name(), maxProviderName); err != nil || p.Name() == "" {
		return fmt.Errorf("register provider for %s: %w", action,
			&ValidationError{Field: "provider name", Problem: fmt.Sprintf("must be 1 to %d printable bytes", maxProviderName)})
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.providers[action] = p
	return nil
}

func (g *Engine) provider(action string) Provider {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.providers[action]
}

func (g *Engine) actions() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]string, 0, len(g.providers))
	for a := range g.providers {
		out = append(out, a)
	}
	return out
}

// CreateRequest asks for a new execution.
type CreateRequest struct {
	// Action names a registered provider's action. Required.
	Action string
	// Input is a JSON object; empty means {}.
	Input []byte
	// Owner is an opaque string, such as a customer id; it scopes
	// idempotency keys. At most 200 bytes.
	Owner string
	// IdempotencyKey, if set, makes a repeated request return the
	// execution the first one created. At most 255 bytes.
	IdempotencyKey string
	// Deadline, if set, fails the execution with [CodeTimeout] when it is
	// still live at that time.
	Deadline time.Time
}

// Create records a new pending execution; the engine submits it to the
// provider on its next pass. With an idempotency key already used by the
// same owner, Create returns the stored execution if the action and input
// are equal (JSON object key order does not matter), and an error wrapping
// [ErrIdempotencyConflict] if they are not.
func (g *Engine) Create(ctx context.Context, req CreateRequest) (Execution, error) {
	return g.create(ctx, nil, req)
}

// CreateTx is [Engine.Create] inside the host's transaction, so that the
// host's own rows and the execution commit together. tx must belong to the
// store's database; the caller commits or rolls back. The engine is woken
// at once, but finds the execution only after the commit.
func (g *Engine) CreateTx(ctx context.Context, tx *sql.Tx, req CreateRequest) (Execution, error) {
	if tx == nil {
		return Execution{}, fmt.Errorf("create execution: %w", &ValidationError{Field: "tx", Problem: "is nil"})
	}
	return g.create(ctx, tx, req)
}

func (g *Engine) create(ctx context.Context, tx *sql.Tx, req CreateRequest) (Execution, error) {
	c, err := g.newCreation(req)
	if err != nil {
		return Execution{}, fmt.Errorf("create execution: %w", err)
	}

	if tx != nil {
		e, _, err := g.store.CreateTx(ctx, tx, c)
		if err != nil {
			return Execution{}, fmt.Errorf("create execution: %w", err)
		}
		g.wake.Notify() // due once the host commits
		return e, nil
	}

	// With a worker free, the execution is created already claimed and
	// handed to it: no claim transaction, and no wait for the loop.
	l := g.running()
	token := ""
	if l != nil && l.reserve() {
		token = g.ids.next("lse_", c.Execution.CreatedAt)
		c.Execution.LeaseOwner = token
		c.Execution.NextCheckAt = c.Execution.CreatedAt.Add(g.cfg.LeaseDuration).Truncate(time.Millisecond)
	}
	e, created, err := g.store.Create(ctx, c)
	if err == nil && created {
		g.recent.put(e)
	}
	switch {
	case token != "" && err == nil && created:
		g.startWorker(l, e, token)
	case token != "":
		g.unreserve(l)
	}
	if err != nil {
		return Execution{}, fmt.Errorf("create execution: %w", err)
	}
	if token == "" {
		g.wake.Notify()
	}
	return e, nil
}

// running returns the loop if the engine was started and not stopped.
func (g *Engine) running() *loop {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.stopped {
		return nil
	}
	return g.loop
}

// Get returns the execution with the id.
func (g *Engine) Get(ctx context.Context, id string) (Execution, error) {
	if err := ValidateID(id); err != nil {
		return Execution{}, fmt.Errorf("get execution: %w", err)
	}
	e, err := g.store.Get(ctx, id)
	if err != nil {
		return Execution{}, fmt.Errorf("get execution %s: %w", id, err)
	}
	return e, nil
}

// List returns one page of executions matching f, newest first.
func (g *Engine) List(ctx context.Context, f Filter) (Page, error) {
	if f.Status != "" && !f.Status.Valid() {
		return Page{}, fmt.Errorf("list executions: %w",
			&ValidationError{Field: "status", Problem: fmt.Sprintf("%.40q is not a state", f.Status)})
	}
	if f.Action != "" {
		if err := validateAction(f.Action); err != nil {
			return Page{}, fmt.Errorf("list executions: %w", err)
		}
	}
	if f.Limit < 0 {
		return Page{}, fmt.Errorf("list executions: %w",
			&ValidationError{Field: "limit", Problem: fmt.Sprintf("%d is negative", f.Limit)})
	}
	if f.Cursor != "" {
		if err := ValidateID(f.Cursor); err != nil {
			return Page{}, fmt.Errorf("list executions: %w",
				&ValidationError{Field: "cursor", Problem: "not a cursor from a previous page"})
		}
	}
	setDefault(&f.Limit, DefaultPageSize)
	f.Limit = min(f.Limit, MaxPageSize)
	p, err := g.store.List(ctx, f)
	if err != nil {
		return Page{}, fmt.Errorf("list executions: %w", err)
	}
	return p, nil
}

// History returns the transitions of an execution in version order,
// starting with its creation.
func (g *Engine) History(ctx context.Context, id string) ([]Transition, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("execution history: %w", err)
	}
	h, err := g.store.History(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("execution history %s: %w", id, err)
	}
	return h, nil
}

// Events returns the outbox events of an execution in version order.
func (g *Engine) Events(ctx context.Context, id string) ([]Event, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("execution events: %w", err)
	}
	evs, err := g.store.Events(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("execution events %s: %w", id, err)
	}
	return evs, nil
}

// IgnoredUpdates returns the reports about an execution that were not
// applied (late, repeated or illegal ones), oldest first.
func (g *Engine) IgnoredUpdates(ctx context.Context, id string) ([]IgnoredUpdate, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("ignored updates: %w", err)
	}
	u, err := g.store.IgnoredUpdates(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("ignored updates of %s: %w", id, err)
	}
	return u, nil
}

// maxConflictRetries bounds how often Apply and Cancel re-read an
// execution that changed under them.
const maxConflictRetries = 10

// Apply applies an update a provider pushed, for example from its own
// callback, as if the engine had fetched it. It returns the execution after
// the update. For a terminal execution nothing changes: the report is
// recorded as ignored and the error wraps [ErrTerminal]. A report with no
// legal path from the current state is also recorded and returns an error
// wrapping [ErrInvalidTransition].
func (g *Engine) Apply(ctx context.Context, id string, u Update) (Execution, error) {
	if err := ValidateID(id); err != nil {
		return Execution{}, fmt.Errorf("apply update: %w", err)
	}
	if err := g.checkUpdate(u); err != nil {
		return Execution{}, fmt.Errorf("apply update to %s: %w", id, err)
	}

	for range maxConflictRetries {
		// The execution as this engine last wrote it saves a read; the
		// write is conditional on its revision, so a stale one is a
		// conflict and a fresh read. Anything but a write is decided on
		// the stored record (which may, for one, have been pruned).
		e, cached := g.recent.get(id)
		if !cached {
			var err error
			if e, err = g.store.Get(ctx, id); err != nil {
				return Execution{}, fmt.Errorf("apply update to %s: %w", id, err)
			}
		}
		now := g.now()
		if e.Done() && cached {
			g.recent.drop(id)
			continue
		}
		if e.Done() {
			g.ignore(ctx, e, u.Status, "update for a terminal execution", now)
			return e, fmt.Errorf("apply update to %s: %w: it is %s", id, ErrTerminal, e.Status)
		}

		w, err := g.plan(ctx, e, u, now, true)
		if err != nil && cached {
			g.recent.drop(id) // refused: decide again on the stored record
			continue
		}
		if errors.Is(err, ErrInvalidTransition) {
			g.ignore(ctx, e, u.Status, err.Error(), now)
		}
		if err != nil {
			return e, fmt.Errorf("apply update to %s: %w", id, err)
		}
		if err := g.store.Write(ctx, w); errors.Is(err, ErrConflict) {
			g.recent.drop(id)
			continue
		} else if err != nil {
			g.recent.drop(id)
			return e, fmt.Errorf("apply update to %s: %w", id, err)
		}
		g.changed(w.Execution)
		return w.Execution, nil
	}
	return Execution{}, fmt.Errorf("apply update to %s: %w after %d tries", id, ErrConflict, maxConflictRetries)
}

// Cancel cancels an execution and returns it afterwards. A pending or
// accepted execution can always be canceled; a running one only if its
// provider implements [Canceler]. Whenever the provider can cancel and the
// work was submitted, it is asked first, and its error is returned with
// nothing changed. Canceling a canceled execution succeeds and changes
// nothing; an execution that reached another terminal state first (a
// cancel that lost the race to completion) is returned as it is, with an
// error wrapping [ErrTerminal], and nothing is written.
func (g *Engine) Cancel(ctx context.Context, id, reason string) (Execution, error) {
	if err := ValidateID(id); err != nil {
		return Execution{}, fmt.Errorf("cancel execution: %w", err)
	}
	if err := validateText("reason", reason, maxReason); err != nil {
		return Execution{}, fmt.Errorf("cancel execution %s: %w", id, err)
	}

	for range maxConflictRetries {
		e, err := g.store.Get(ctx, id)
		if err != nil {
			return Execution{}, fmt.Errorf("cancel execution %s: %w", id, err)
		}
		now := g.now()
		if e.Status == fsm.Canceled {
			return e, nil
		}
		if e.Done() {
			return e, fmt.Errorf("cancel execution %s: %w: it is %s", id, ErrTerminal, e.Status)
		}

		p := g.provider(e.Action)
		canceler, canCancel := p.(Canceler)
		if e.Status == fsm.Running && !canCancel {
			return e, fmt.Errorf("cancel execution %s: %w: provider %q cannot cancel running work",
				id, ErrInvalidTransition, e.Provider)
		}
		if canCancel && (e.Status == fsm.Running || !e.SubmittedAt.IsZero()) {
			if err := canceler.Cancel(ctx, e); err != nil {
				return e, fmt.Errorf("cancel execution %s: provider cancel: %w", id, err)
			}
		}

		if reason == "" {
			reason = "canceled on request"
		}
		w, err := g.plan(ctx, e, Update{Status: fsm.Canceled, Reason: reason}, now, true)
		if err != nil {
			return e, fmt.Errorf("cancel execution %s: %w", id, err)
		}
		if err := g.store.Write(ctx, w); errors.Is(err, ErrConflict) {
			g.recent.drop(id)
			continue
		} else if err != nil {
			g.recent.drop(id)
			return e, fmt.Errorf("cancel execution %s: %w", id, err)
		}
		g.changed(w.Execution)
		return w.Execution, nil
	}
	return Execution{}, fmt.Errorf("cancel execution %s: %w after %d tries", id, ErrConflict, maxConflictRetries)
}

// ignore records a report that was not applied. Failing to record it is
// logged, not returned: the report itself was handled.
func (g *Engine) ignore(ctx context.Context, e Execution, reported fsm.State, reason string, now time.Time) {
	err := g.store.RecordIgnored(ctx, IgnoredUpdate{
		ExecutionID: e.ID,
		Status:      e.Status,
		Version:     e.Version,
		Reported:    reported,
		Reason:      reason,
		At:          now,
	})
	if err != nil {
		g.log.WarnContext(ctx, "record ignored update", attrExecution, e.ID, attrError, err)
	}
}

// isNil reports whether p is nil, or an interface holding a nil pointer,
// map, slice, channel or function.
func isNil(p Provider) bool {
	if p == nil {
		return true
	}
	v := reflect.ValueOf(p)
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return v.IsNil()
	}
	return false
}

func (g *Engine) now() time.Time {
	return g.cfg.Clock.Now().UTC().Truncate(time.Millisecond)
}

// changed follows a write of e: it keeps e as written, wakes e's waiters,
// and wakes the loop if e is still live (its next check may now be due
// sooner).
func (g *Engine) changed(e Execution) {
	g.recent.put(e)
	g.watch.notify(e.ID)
	if !e.Done() {
		g.wake.Notify()
	}
}

// Log attribute keys.
const (
	attrExecution = "execution"
	attrAction    = "action"
	attrError     = "error"
	attrStatus    = "status"
)
