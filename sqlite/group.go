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

// Writes are committed in groups. Every write is queued; a committer
// goroutine, started when a write finds none running and ending when the
// queue is empty, takes every queued write (up to maxGroup) and runs them
// in one transaction, and a write that fails or panics undoes only itself
// (below). One commit then serves the whole group, and the writes that
// queue meanwhile form the next. Callers only wait: one whose context ends
// leaves at once, unless its write has started.
//
// Savepoints cost two statements a write, and writes rarely fail, so a
// group first runs without them. If any write fails, the transaction is
// rolled back and the group runs again, this time with a savepoint around
// each write. (Writes are already written to be run again: a busy
// database is retried the same way.) A write alone in its group never
// needs one: the transaction is its savepoint.

// maxGroup is the most writes one transaction carries.
const maxGroup = 128

// States of a write.
const (
	queued    int32 = iota // not started; its caller may still leave
	started                // fn ran, or runs: the caller waits for the outcome
	abandoned              // the caller left before it started; it never runs
)

// writeReq is one queued write.
type writeReq struct {
	ctx   context.Context
	fn    func(querier) error
	state atomic.Int32
	done  chan struct{} // closed when err and panicked are final
	err   error
	// panicked holds what fn panicked with, to be raised again in the
	// caller's goroutine.
	panicked any
}

// start marks the write started, unless its caller left or is leaving; it
// reports whether the write is to run. A write started before (in an
// earlier run of its group) runs again.
func (r *writeReq) start() bool {
	if r.state.Load() == started {
		return true
	}
	if r.ctx.Err() != nil {
		r.state.CompareAndSwap(queued, abandoned)
	}
	return r.state.CompareAndSwap(queued, started) || r.state.Load() == started
}

// group is the queue of writes waiting for a transaction.
type group struct {
	mu      sync.Mutex
	queue   []*writeReq
	running bool // a committer goroutine is running
}

// write runs fn in a write transaction shared with other writes queued at
// the same time, and returns once that transaction committed (nil) or fn
// failed (its error; only its own changes are undone). fn may run more
// than once (when the database is busy, or another write of its group
// failed), so it must reset what it collects.
//
// ctx bounds the wait: while queued, or while its group waits for the
// writer connection, a caller whose context ends returns its error and
// the write never runs. Once fn has started, the write is carried through
// to its commit whatever happens to ctx, and the caller is told the
// outcome: fn's statements run without ctx, so that one caller giving up
// cannot undo the writes of the others in its group.
func (s *Store) write(ctx context.Context, fn func(querier) error) error {
	if s.closed.Load() {
		return execution.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan struct{})}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, r)
	if !g.running {
		g.running = true
		go s.commit()
	}
	g.mu.Unlock()

	select {
	case <-r.done:
	case <-ctx.Done():
		if g.withdraw(r) || r.state.CompareAndSwap(queued, abandoned) {
			return ctx.Err()
		}
		<-r.done // it started: wait for the outcome
	}
	if r.panicked != nil {
		panic(r.panicked)
	}
	return r.err
}

// withdraw takes r out of the queue if no group has taken it yet, and
// reports whether it did.
func (g *group) withdraw(r *writeReq) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := slices.Index(g.queue, r)
	if i < 0 {
		return false
	}
	g.queue = slices.Delete(g.queue, i, i+1)
	return true
}

// commit is the committer goroutine: it commits groups until the queue is
// empty.
func (s *Store) commit() {
	g := &s.group
	for {
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		n := min(len(g.queue), maxGroup)
		batch := slices.Clone(g.queue[:n])
		g.queue = slices.Delete(g.queue, 0, n)
		g.mu.Unlock()

		s.commitGroup(batch)
		for _, r := range batch {
			close(r.done)
		}
		// Statements first seen in this group are prepared now that the
		// connection is back in the pool; briefly, as a host may hold it.
		pctx, cancel := context.WithTimeout(context.Background(), prepareWait)
		s.wstmts.prepareWanted(pctx)
		cancel()
	}
}

// prepareWait bounds the wait for the connection to prepare statements;
// those not prepared run unprepared and are tried again later.
const prepareWait = 50 * time.Millisecond

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
			err = s.commitOnce(carry(wait, batch), batch, true)
		}
		// Only a transaction that failed as a whole is tried again; in a
		// group, a write that failed on its own was undone alone.
		busy := isBusy(err) || (len(batch) == 1 && isBusy(batch[0].err))
		wait = carry(wait, batch)
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

// carry returns the context a group waits for the writer under: wait,
// until one of its writes has started; from then on none, since a started
// write is carried through to its commit.
func carry(wait context.Context, batch []*writeReq) context.Context {
	for _, r := range batch {
		if r.state.Load() == started {
			return context.Background()
		}
	}
	return wait
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
		if !r.start() {
			r.err = r.ctx.Err() // its caller has left
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
