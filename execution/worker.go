package execution

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/internal/backoff"
	"github.com/execkit/execkit/internal/wake"
)

// writeTimeout bounds the store write that records a provider's answer.
// It runs even while the engine stops, so that finished work is kept.
const writeTimeout = 15 * time.Second

// loop is the state of one run of the background loop.
type loop struct {
	// claimCtx ends when the loop must stop claiming new work.
	claimCtx     context.Context
	stopClaiming context.CancelFunc
	// workCtx ends when in-flight provider calls must be abandoned.
	workCtx    context.Context
	cancelWork context.CancelFunc
	done       chan struct{}

	// slots holds one token per busy worker; its capacity is
	// Config.Workers.
	slots chan struct{}
	wg    sync.WaitGroup
	// mu guards closing, which is set once the loop stops taking work,
	// so that no worker starts after it waits for the last one.
	mu      sync.Mutex
	closing bool
}

// reserve takes a free worker slot for an execution created in this
// process, or reports that none is free or the loop is stopping. A
// reserved slot must be given to startWorker or returned with unreserve.
func (l *loop) reserve() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing || l.claimCtx.Err() != nil {
		return false
	}
	select {
	case l.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// unreserve returns a slot, and wakes the loop if it waited for one.
func (g *Engine) unreserve(l *loop) {
	full := len(l.slots) == cap(l.slots)
	<-l.slots
	if full {
		g.wake.Notify()
	}
}

// startWorker processes a claimed execution on a reserved slot. If the
// loop has stopped taking work, it returns the slot and releases the
// execution, due at once, instead.
func (g *Engine) startWorker(l *loop, e Execution, token string) {
	l.mu.Lock()
	if l.closing || l.claimCtx.Err() != nil {
		l.mu.Unlock()
		g.unreserve(l)
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		defer cancel()
		g.release(ctx, e, token, g.now())
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		settled := false
		defer func() {
			// The loop needs waking if it waits for a worker, or if this
			// execution needs another call, which may be due before the
			// loop's next look. One that ended needs nothing more.
			full := len(l.slots) == cap(l.slots)
			<-l.slots
			if full || !settled {
				g.wake.Notify()
			}
		}()
		settled = g.process(l.workCtx, e, token)
	}()
}

// Start runs the engine's loop in the background until [Engine.Stop] is
// called or ctx ends, and returns at once. Executions of actions that no
// provider is registered for are left untouched and logged. Start returns
// an error if the engine was started before.
func (g *Engine) Start(ctx context.Context) error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.stopped {
		return fmt.Errorf("start engine: %w", ErrClosed)
	}
	if g.started {
		return fmt.Errorf("start engine: %w", ErrAlreadyStarted)
	}
	if err := g.warnUnregistered(ctx); errors.Is(err, ErrClosed) {
		return fmt.Errorf("start engine: %w", err)
	}
	g.started = true

	l := &loop{done: make(chan struct{}), slots: make(chan struct{}, g.cfg.Workers)}
	l.claimCtx, l.stopClaiming = context.WithCancel(ctx)
	l.workCtx, l.cancelWork = context.WithCancel(context.WithoutCancel(ctx))
	g.loop = l
	go g.run(l)
	return nil
}

// Stop stops claiming new work and waits for in-flight provider calls to
// finish and their results to be written. If ctx ends first, in-flight
// calls are canceled; their executions are released without counting a
// failed attempt, and Stop returns ctx's error once every worker has
// returned. Stop is safe to call more than once.
func (g *Engine) Stop(ctx context.Context) error {
	g.lifeMu.Lock()
	g.stopped = true
	l := g.loop
	g.lifeMu.Unlock()
	if l == nil {
		return nil
	}

	l.stopClaiming()
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		l.cancelWork()
		<-l.done
		return fmt.Errorf("stop engine: %w", ctx.Err())
	}
}

func (g *Engine) warnUnregistered(ctx context.Context) error {
	live, err := g.store.LiveActions(ctx)
	if err != nil {
		g.log.WarnContext(ctx, "list live actions", attrError, err)
		return err
	}
	for _, a := range live {
		if g.provider(a) == nil {
			g.log.WarnContext(ctx, "live executions wait for an unregistered provider; left untouched",
				attrAction, a)
		}
	}
	return nil
}

// run is the background loop: claim as many due executions as there are
// free workers, hand each to a worker, and sleep until the next one is due
// or something wakes it.
func (g *Engine) run(l *loop) {
	defer close(l.done)
	defer func() {
		l.mu.Lock()
		l.closing = true
		l.mu.Unlock()
		l.wg.Wait()
	}()

	for l.claimCtx.Err() == nil {
		free := cap(l.slots) - len(l.slots)
		if free == 0 {
			g.wake.Sleep(l.claimCtx, g.cfg.PollInterval)
			continue
		}
		batch, token, err := g.claim(l.claimCtx, free)
		if err != nil {
			if l.claimCtx.Err() == nil {
				g.log.ErrorContext(l.claimCtx, "claim executions", attrError, err)
				g.wake.Sleep(l.claimCtx, g.cfg.PollInterval)
			}
			continue
		}
		for _, e := range batch {
			l.slots <- struct{}{} // waits only if a creation took a slot since the count
			g.startWorker(l, e, token)
		}
		if len(batch) < free {
			g.wake.Sleep(l.claimCtx, g.idleWait(l.claimCtx))
		}
	}
}

// RunOnce claims the executions that are due now, up to
// [Config.Workers], processes them concurrently and returns how many it
// processed once all are written. It serves tests and hosts that schedule
// the engine themselves; it may run alongside [Engine.Start].
func (g *Engine) RunOnce(ctx context.Context) (int, error) {
	batch, token, err := g.claim(ctx, g.cfg.Workers)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for _, e := range batch {
		wg.Go(func() { g.process(ctx, e, token) })
	}
	wg.Wait()
	return len(batch), nil
}

func (g *Engine) claim(ctx context.Context, limit int) ([]Execution, string, error) {
	now := g.now()
	token := g.ids.next("lse_", now)
	batch, err := g.store.Claim(ctx, ClaimParams{
		Now:     now,
		Until:   now.Add(g.cfg.LeaseDuration),
		Owner:   token,
		Actions: g.actions(),
		Limit:   limit,
	})
	if err != nil {
		return nil, "", fmt.Errorf("claim executions: %w", err)
	}
	for _, e := range batch {
		g.recent.put(e)
	}
	return batch, token, nil
}

// idleWait is how long the loop may sleep: until the next execution is
// due, at most PollInterval.
func (g *Engine) idleWait(ctx context.Context) time.Duration {
	due, ok, err := g.store.NextDue(ctx, g.actions())
	return wake.Until(due, ok && err == nil, g.now(), g.cfg.PollInterval)
}

// process makes one provider call for a claimed execution and writes the
// answer. ctx ending means the engine is stopping: the execution is then
// released, and the interrupted call does not count as a failure. It
// reports whether its write made the execution terminal.
func (g *Engine) process(ctx context.Context, e Execution, token string) (settled bool) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()

	now := g.now()
	if !e.NextCheckAt.IsZero() && !now.Before(e.NextCheckAt) {
		// The lease ran out before the work began (the write that took it
		// waited that long): another worker may hold the execution now.
		g.log.WarnContext(ctx, "lease expired before the provider call; left to the next claim", attrExecution, e.ID)
		return false
	}
	p := g.provider(e.Action)
	if p == nil { // unregistered since the claim
		g.release(wctx, e, token, now.Add(g.cfg.CheckInterval))
		return false
	}
	if !e.Deadline.IsZero() && !now.Before(e.Deadline) {
		u := Update{Status: fsm.Failed, Reason: "deadline passed",
			Error: &Error{Code: CodeTimeout, Message: "deadline " + e.Deadline.Format(TimeFormat) + " passed"}}
		return g.finish(wctx, e, token, u, nil, false)
	}

	submit := e.SubmittedAt.IsZero()
	u, err := g.call(ctx, p, e, submit)

	switch {
	case err != nil && ctx.Err() != nil:
		g.release(wctx, e, token, g.now())
		return false
	case err != nil:
		return g.fail(wctx, e, token, err)
	default:
		return g.finish(wctx, e, token, u, p, submit)
	}
}

// call makes one provider call under ProviderTimeout. A panic in the
// provider becomes a transient error, so that one bad answer cannot take
// the host down; a provider that ignores its context is abandoned when the
// timeout passes, so that it cannot hold a worker or Stop forever.
func (g *Engine) call(ctx context.Context, p Provider, e Execution, submit bool) (Update, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.ProviderTimeout)
	defer cancel()

	type result struct {
		u   Update
		err error
	}
	done := make(chan result, 1)
	// This goroutine is waited for below unless the provider overruns
	// its deadline; then it ends whenever the provider returns, and its
	// answer is dropped into the buffered channel.
	go func() {
		defer func() {
			if r := recover(); r != nil {
				g.log.ErrorContext(ctx, "provider panicked", attrExecution, e.ID, attrAction, e.Action, "panic", r)
				done <- result{err: fmt.Errorf("provider %s panicked: %v", p.Name(), r)}
			}
		}()
		var r result
		if submit {
			r.u, r.err = p.Submit(ctx, cloneJSON(e)) // a copy: what it changes stays its own
		} else {
			r.u, r.err = p.Check(ctx, cloneJSON(e))
		}
		done <- r
	}()

	select {
	case r := <-done:
		return r.u, r.err
	case <-ctx.Done():
		select {
		case r := <-done: // it honoured the deadline
			return r.u, r.err
		case <-time.After(overrunGrace):
		}
		g.log.WarnContext(ctx, "provider ignored its deadline; call abandoned", attrExecution, e.ID, attrAction, e.Action)
		return Update{}, fmt.Errorf("provider %s overran its deadline of %s: %w", p.Name(), g.cfg.ProviderTimeout, ctx.Err())
	}
}

// overrunGrace is how long a provider may take to return after its
// context ended before its call is abandoned.
const overrunGrace = 100 * time.Millisecond

// finish writes an answer to a claimed execution: a provider's (p not
// nil) or the engine's own decision to fail it. If the execution changed
// since the claim (a pushed update or a cancel), the answer is applied to
// the changed record as long as the lease holds.
func (g *Engine) finish(ctx context.Context, e Execution, token string, u Update, p Provider, submitted bool) (settled bool) {
	if p != nil && u.Error != nil {
		// A provider's error is made to fit, as a permanent one is.
		u.Error = providerError(&PermanentError{Code: u.Error.Code, Message: u.Error.Message})
	}
	for range maxConflictRetries {
		now := g.now()
		w, err := g.plan(ctx, e, u, now, false)
		switch {
		case err == nil:
		case p == nil:
			// The engine's own update is always valid; reaching here is a bug.
			g.log.ErrorContext(ctx, "engine update not applied", attrExecution, e.ID, attrError, err)
			g.release(ctx, e, token, now.Add(g.cfg.CheckInterval))
			return false
		case errors.Is(err, ErrInvalidTransition):
			// Stale news, such as "accepted" for a running execution:
			// on record, and the check counts as answered.
			g.ignore(ctx, e, u.Status, err.Error(), now)
			w, _ = g.plan(ctx, e, Update{}, now, false)
		default:
			// A malformed answer is the provider's failure.
			g.ignore(ctx, e, u.Status, "malformed provider answer: "+err.Error(), now)
			g.fail(ctx, e, token, fmt.Errorf("malformed provider answer: %w", err))
			return false
		}
		w.Expect.LeaseOwner = token
		next := &w.Execution
		next.LeaseOwner = ""
		if p != nil {
			next.Checks++
			next.FailedAttempts = 0
		}
		if submitted && next.SubmittedAt.IsZero() {
			next.SubmittedAt = now
		}
		if !next.Done() {
			wait := g.cfg.CheckInterval
			if u.CheckAfter > 0 {
				wait = u.CheckAfter
			}
			next.NextCheckAt = g.bounded(now.Add(wait), next.Deadline)
		}

		err = g.store.Write(ctx, w)
		if err == nil {
			g.recent.put(w.Execution)
			if len(w.Transitions) > 0 {
				g.watch.notify(e.ID)
			}
			return next.Done()
		}
		g.recent.drop(e.ID)
		if !errors.Is(err, ErrConflict) {
			g.log.ErrorContext(ctx, "write provider answer", attrExecution, e.ID, attrError, err)
			g.release(ctx, e, token, now.Add(g.cfg.MinBackoff))
			return false
		}

		fresh, err := g.store.Get(ctx, e.ID)
		if err != nil {
			g.log.ErrorContext(ctx, "reload execution", attrExecution, e.ID, attrError, err)
			return false
		}
		if fresh.LeaseOwner != token {
			if submitted && fresh.Status == fsm.Canceled {
				g.cancelOrphan(ctx, p, fresh)
			}
			return false // the lease moved on, or a terminal write cleared it
		}
		e = fresh
	}
	g.release(ctx, e, token, g.now())
	return false
}

// cancelOrphan asks the provider to stop work it accepted for an execution
// that was canceled while the submission was in flight.
func (g *Engine) cancelOrphan(ctx context.Context, p Provider, e Execution) {
	c, ok := p.(Canceler)
	if !ok {
		return
	}
	if err := c.Cancel(ctx, e); err != nil {
		g.log.WarnContext(ctx, "cancel work submitted during cancel", attrExecution, e.ID, attrError, err)
	}
}

// fail records a failed provider call: a permanent error fails the
// execution; a transient one schedules a retry after backoff, or fails the
// execution once MaxFailedAttempts is reached.
func (g *Engine) fail(ctx context.Context, e Execution, token string, callErr error) (settled bool) {
	e.FailedAttempts++
	var perm *PermanentError
	if errors.As(callErr, &perm) && perm != nil {
		u := Update{Status: fsm.Failed, Reason: "permanent provider error", Error: providerError(perm)}
		return g.finish(ctx, e, token, u, nil, false)
	}
	if g.cfg.MaxFailedAttempts > 0 && e.FailedAttempts >= g.cfg.MaxFailedAttempts {
		u := Update{Status: fsm.Failed, Reason: "retries exhausted",
			Error: &Error{Code: CodeRetriesExhausted, Message: fmt.Sprintf("%d failed attempts in a row, the last: %s",
				e.FailedAttempts, clip(strings.ToValidUTF8(callErr.Error(), "?"), maxCallErrorText))}}
		return g.finish(ctx, e, token, u, nil, false)
	}
	attempts := e.FailedAttempts

	now := g.now()
	wait := backoff.Delay(attempts, g.cfg.MinBackoff, g.cfg.MaxBackoff, rand.Float64())
	var ra *RetryAfterError
	if errors.As(callErr, &ra) && ra.After > 0 {
		wait = min(ra.After, g.cfg.MaxBackoff)
	}
	g.log.DebugContext(ctx, "provider call failed", attrExecution, e.ID, attrError, callErr,
		"attempt", attempts, "retry_in", wait)

	next := e
	next.Revision = e.Revision + 1
	next.UpdatedAt = now
	next.LeaseOwner = ""
	next.NextCheckAt = g.bounded(now.Add(wait), e.Deadline)
	w := Write{Expect: Expect{Status: e.Status, Version: e.Version, Revision: e.Revision, LeaseOwner: token},
		Execution: next}
	err := g.store.Write(ctx, w)
	switch {
	case err == nil:
		g.recent.put(w.Execution)
	case errors.Is(err, ErrConflict):
		g.release(ctx, e, token, now)
	default:
		g.recent.drop(e.ID)
		g.log.ErrorContext(ctx, "record failed attempt", attrExecution, e.ID, attrError, err)
	}
	return false
}

// providerError makes a provider's permanent error fit the execution
// record: a missing or malformed code becomes CodeProviderError, and the
// message is cut to size.
func providerError(perm *PermanentError) *Error {
	code := perm.Code
	if validateText("error code", code, maxErrorCode) != nil || code == "" {
		code = CodeProviderError
	}
	return &Error{Code: code, Message: clip(strings.ToValidUTF8(perm.Message, "?"), maxErrorMessage)}
}

func (g *Engine) release(ctx context.Context, e Execution, token string, next time.Time) {
	g.recent.drop(e.ID)
	if err := g.store.Release(ctx, e.ID, token, next); err != nil {
		g.log.ErrorContext(ctx, "release lease", attrExecution, e.ID, attrError, err)
	}
}

// bounded returns t, or the deadline if that comes first.
func (g *Engine) bounded(t, deadline time.Time) time.Time {
	if !deadline.IsZero() && deadline.Before(t) {
		return deadline
	}
	return t
}
