package sqlite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/execkit/execkit/execution"
)

// Writes are committed in groups. Every write is queued; the caller that
// finds no group running leads one: it takes every queued write (up to
// maxGroup) and runs them in one transaction, and a write that fails or
// panics undoes only itself (below). One commit then serves the whole
// group. When it is done the leader hands the
// lead to the first write still queued, so that no caller serves others
// for longer than one group.
//
// Savepoints cost two statements a write, and writes rarely fail, so a
// group first runs without them. If any write fails, the transaction is
// rolled back and the group runs again, this time with a savepoint around
// each write. (Writes are already written to be run again: a busy
// database is retried the same way.) A write alone in its group never
// needs one: the transaction is its savepoint. Under load the group grows
// by itself: the writes that queue while one group commits form the next.

// maxGroup is the most writes one transaction carries.
const maxGroup = 128

// writeReq is one queued write.
type writeReq struct {
	ctx context.Context
	fn  func(querier) error
	// lead receives true when this caller must lead the next group, and
	// false when its write is done.
	lead chan bool
	err  error
	// panicked holds what fn panicked with, to be raised again in the
	// caller's goroutine.
	panicked any
}

// group is the queue of writes waiting for a transaction.
type group struct {
	mu      sync.Mutex
	queue   []*writeReq
	running bool // a leader holds the lead
}

// write runs fn in a write transaction shared with other writes queued at
// the same time, and returns once that transaction committed (nil) or fn
// failed (its error; only its own changes are undone). fn may run more
// than once (when the database is busy, or another write of its group
// failed), so it must reset what it collects.
//
// ctx bounds the wait in the queue. Once fn has started, the write is
// carried through to its commit whatever happens to ctx: fn's statements
// run without it, so that one caller giving up cannot undo the writes of
// the others in its group.
func (s *Store) write(ctx context.Context, fn func(querier) error) error {
	if s.closed.Load() {
		return execution.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &writeReq{ctx: ctx, fn: fn, lead: make(chan bool, 1)}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, r)
	lead := !g.running
	g.running = true
	g.mu.Unlock()

	if !lead {
		select {
		case lead = <-r.lead:
		case <-ctx.Done():
			if g.withdraw(r) {
				return ctx.Err()
			}
			lead = <-r.lead
		}
	}
	if lead {
		s.lead()
	}
	if r.panicked != nil {
		panic(r.panicked)
	}
	return r.err
}

// withdraw takes r out of the queue if no group has taken it yet, and
// reports whether it did. If r had just been handed the lead, the lead
// passes on.
func (g *group) withdraw(r *writeReq) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := slices.Index(g.queue, r)
	if i < 0 {
		return false
	}
	g.queue = slices.Delete(g.queue, i, i+1)
	select {
	case <-r.lead: // it was to lead
		g.handOff()
	default:
	}
	return true
}

// handOff gives the lead to the first queued write, or ends the run of
// groups if none is queued. g.mu must be held.
func (g *group) handOff() {
	if len(g.queue) == 0 {
		g.running = false
		return
	}
	g.queue[0].lead <- true
}

// lead runs one group: the writes queued now, the leader's own first
// among them.
func (s *Store) lead() {
	g := &s.group
	g.mu.Lock()
	n := min(len(g.queue), maxGroup)
	batch := slices.Clone(g.queue[:n])
	g.queue = slices.Delete(g.queue, 0, n)
	g.mu.Unlock()

	s.commitGroup(batch)

	g.mu.Lock()
	for _, r := range batch {
		r.lead <- false
	}
	g.handOff()
	g.mu.Unlock()
}

// commitGroup runs batch in one transaction. A busy database (another
// process held the lock past the busy timeout) is retried a few times
// with growing pauses.
func (s *Store) commitGroup(batch []*writeReq) {
	wait, stop := waitAll(batch)
	defer stop()
	const tries = 5
	for attempt := range tries {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt*attempt) * 20 * time.Millisecond)
			select {
			case <-t.C:
			case <-wait.Done(): // every caller gave up; commitOnce reports it
				t.Stop()
			}
		}
		err := s.commitOnce(wait, batch, len(batch) == 1)
		if errors.Is(err, errWriteFailed) {
			err = s.commitOnce(wait, batch, true)
		}
		// The connection is back in the pool: statements first seen in
		// this group can be prepared on it now.
		s.wstmts.prepareWanted(context.Background())
		busy := isBusy(err)
		for _, r := range batch {
			busy = busy || isBusy(r.err)
		}
		if !busy || attempt == tries-1 {
			for _, r := range batch {
				switch {
				case r.err != nil || r.panicked != nil:
				case err != nil && wait.Err() != nil:
					// Every caller gave up waiting: each is told why it did.
					r.err = fmt.Errorf("wait for the writer: %w", r.ctx.Err())
				default:
					r.err = err
				}
				r.err = s.closedOr(r.err)
			}
			return
		}
		s.log.Warn("database busy, retrying write", "attempt", attempt+1, "writes", len(batch))
	}
}

// waitAll returns a context that ends once the contexts of every write in
// batch have ended, and a function that releases it.
func waitAll(batch []*writeReq) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var left atomic.Int32
	left.Store(int32(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, r := range batch {
		stops[i] = context.AfterFunc(r.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// errWriteFailed is commitOnce's answer when a write of a group run
// without savepoints failed: nothing was committed.
var errWriteFailed = errors.New("a write of the group failed")

// commitOnce runs every write of batch and commits. With savepoints (or
// alone), a write's own failure is left in its request and undoes only
// that write; the error returned is the transaction's. Without them, the
// first failure rolls everything back and commitOnce returns
// errWriteFailed.
func (s *Store) commitOnce(wait context.Context, batch []*writeReq, savepoints bool) error {
	// Waiting for the connection (a host may hold it in a transaction of
	// its own) ends when every caller has given up. The transaction and
	// its statements carry no cancellation: the writes of a group stand
	// or fall together at the commit.
	conn, err := s.w.Conn(wait)
	if err != nil {
		return fmt.Errorf("wait for the writer connection: %w", err)
	}
	defer conn.Close()
	ctx := context.Background()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	q := preparedTx{ctx: ctx, tx: tx, cache: s.wstmts}
	alone := len(batch) == 1
	for _, r := range batch {
		r.err, r.panicked = nil, nil
		if err := r.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		if savepoints && !alone {
			if _, err := q.ExecContext(ctx, `SAVEPOINT w`); err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
		}
		r.panicked, r.err = run(r.fn, q)
		failed := r.err != nil || r.panicked != nil
		switch {
		case alone && failed:
			return nil // the deferred rollback undoes it
		case !savepoints && failed:
			return errWriteFailed
		case alone || !savepoints:
		case failed:
			if _, err := q.ExecContext(ctx, `ROLLBACK TO w`); err != nil {
				return fmt.Errorf("roll back to savepoint: %w", err)
			}
			fallthrough
		default:
			if _, err := q.ExecContext(ctx, `RELEASE w`); err != nil {
				return fmt.Errorf("release savepoint: %w", err)
			}
		}
	}
	if s.beforeCommit != nil {
		s.beforeCommit(batch[0].ctx)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// run calls fn, turning a panic into a value to raise again elsewhere.
func run(fn func(querier) error, q querier) (panicked any, err error) {
	defer func() { panicked = recover() }()
	return nil, fn(q)
}
