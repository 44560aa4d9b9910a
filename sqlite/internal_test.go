package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/webhook"
)

func TestContextCanceledAfterAWriteStartedStillCommitsIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := openTemp(t)
	clock := fake.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	engine, err := execution.New(store, execution.Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Register("servers.provision", fake.New(clock)); err != nil {
		t.Fatal(err)
	}
	x, err := engine.Create(ctx, execution.CreateRequest{Action: "servers.provision"})
	if err != nil {
		t.Fatal(err)
	}

	// The context ends after the update and its history rows are
	// written, just before the commit: the write is carried through, and
	// the caller is told so.
	cctx, cancel := context.WithCancel(ctx)
	store.beforeCommit = func(context.Context) { cancel() }
	got, err := engine.Apply(cctx, x.ID, execution.Update{Status: fsm.Running})
	store.beforeCommit = nil
	// pending → accepted → running: two transitions after the creation.
	if err != nil || got.Status != fsm.Running || got.Version != 3 {
		t.Fatalf("Apply = %s v%d, %v; want running v3", got.Status, got.Version, err)
	}
	got, err = engine.Get(ctx, x.ID)
	if err != nil || got.Status != fsm.Running || got.Version != 3 {
		t.Fatalf("stored: %s v%d, %v; want running v3", got.Status, got.Version, err)
	}
	if h, _ := engine.History(ctx, x.ID); len(h) != 3 {
		t.Fatalf("history has %d rows, want 3", len(h))
	}
	if evs, _ := engine.Events(ctx, x.ID); len(evs) != 3 {
		t.Fatalf("outbox has %d events, want 3", len(evs))
	}
}

// holdGroup makes the next group block just before its commit until the
// returned release is called; it returns once that group is waiting.
func holdGroup(t *testing.T, s *Store) (release func()) {
	t.Helper()
	held, proceed := make(chan struct{}), make(chan struct{})
	s.beforeCommit = func(context.Context) {
		s.beforeCommit = nil
		close(held)
		<-proceed
	}
	errc := make(chan error, 1)
	go func() {
		errc <- s.write(context.Background(), func(querier) error { return nil })
	}()
	<-held
	return func() {
		close(proceed)
		if err := <-errc; err != nil {
			t.Errorf("held write: %v", err)
		}
	}
}

func TestWriteCanceledWhileQueuedIsNotRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := openTemp(t)
	release := holdGroup(t, store)

	cctx, cancel := context.WithCancel(ctx)
	ran := false
	errc := make(chan error, 1)
	go func() { errc <- store.write(cctx, func(querier) error { ran = true; return nil }) }()
	waitQueued(t, store, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("write = %v, want context.Canceled", err)
	}
	release()
	if ran {
		t.Fatal("a write withdrawn from the queue ran")
	}
	// The store goes on: the next write leads its own group.
	if err := store.write(ctx, func(querier) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// waitQueued waits until n writes are queued behind a running group.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		s.group.mu.Lock()
		k := len(s.group.queue)
		s.group.mu.Unlock()
		if k == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", k, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGroupedWritesFailAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := openTemp(t)
	if _, err := store.w.Exec(`CREATE TABLE t (k TEXT UNIQUE)`); err != nil {
		t.Fatal(err)
	}
	release := holdGroup(t, store)

	// Five writes queue behind the held group and then run as one: the
	// second fails after inserting, the fourth panics after inserting.
	insert := func(k string) func(querier) error {
		return func(q querier) error {
			_, err := q.ExecContext(ctx, `INSERT INTO t (k) VALUES (?)`, k)
			return err
		}
	}
	errFail := errors.New("refused")
	fns := []func(querier) error{
		insert("a"),
		func(q querier) error { _ = insert("b")(q); return errFail },
		insert("c"),
		func(q querier) error { _ = insert("d")(q); panic("boom") },
		insert("a"), // a unique violation: fails alone
	}
	type result struct {
		err      error
		panicked any
	}
	results := make([]chan result, len(fns))
	for i, fn := range fns {
		results[i] = make(chan result, 1)
		go func() {
			defer func() {
				if p := recover(); p != nil {
					results[i] <- result{panicked: p}
				}
			}()
			results[i] <- result{err: store.write(ctx, fn)}
		}()
		waitQueued(t, store, i+1)
	}
	release()

	got := make([]result, len(fns))
	for i := range fns {
		got[i] = <-results[i]
	}
	if got[0].err != nil || got[2].err != nil {
		t.Errorf("writes a and c: %v, %v; want both committed", got[0].err, got[2].err)
	}
	if !errors.Is(got[1].err, errFail) {
		t.Errorf("write b: %v, want its own error", got[1].err)
	}
	if got[3].panicked != "boom" {
		t.Errorf("write d: panicked with %v, want boom in its own goroutine", got[3].panicked)
	}
	if !isUniqueViolation(got[4].err) {
		t.Errorf("second write of a: %v, want a unique violation", got[4].err)
	}
	rows, err := store.r.Query(`SELECT k FROM t ORDER BY k`)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if strings.Join(keys, ",") != "a,c" {
		t.Fatalf("stored keys %v, want [a c]", keys)
	}
}

func TestOpenRefusesANewerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	store, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.DB().Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	store.Close()

	_, err = Open(ctx, path, Options{})
	if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), "the file has version 99") {
		t.Fatalf("Open = %v, want ErrSchemaTooNew naming version 99", err)
	}
}

func TestOpenAppliesPragmasToEveryConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, err := Open(ctx, filepath.Join(t.TempDir(), "x.db"), Options{SyncFull: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if v, _ := userVersion(ctx, store.w); v != SchemaVersion() || v < 1 {
		t.Fatalf("schema version %d, want %d", v, SchemaVersion())
	}
	for name, db := range map[string]*sql.DB{"writer": store.w, "reader": store.r} {
		var mode string
		var sync, fk, busy int
		row := db.QueryRow("SELECT * FROM pragma_journal_mode, pragma_synchronous, pragma_foreign_keys, pragma_busy_timeout")
		if err := row.Scan(&mode, &sync, &fk, &busy); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" || sync != 2 || fk != 1 || busy != 10000 {
			t.Errorf("%s: journal_mode %s, synchronous %d, foreign_keys %d, busy_timeout %d", name, mode, sync, fk, busy)
		}
	}
	if _, err := store.r.Exec("DELETE FROM executions"); err == nil {
		t.Fatal("the read pool accepted a write")
	}
}

func TestOpenRejectsNonFilePaths(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro", "nul\x00.db"} {
		if _, err := Open(context.Background(), p, Options{}); err == nil || !strings.Contains(err.Error(), "plain file path") {
			t.Errorf("Open(%q) = %v", p, err)
		}
	}
	if _, err := Open(context.Background(), filepath.Join(t.TempDir(), "missing", "x.db"), Options{}); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

func TestClosedStoreReturnsErrClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, err := Open(ctx, filepath.Join(t.TempDir(), "x.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := store.Get(ctx, "exe_01J00000000000000000000000"); !errors.Is(err, execution.ErrClosed) {
		t.Fatalf("Get = %v", err)
	}
	if err := store.Release(ctx, "exe_01J00000000000000000000000", "x", time.Now()); !errors.Is(err, execution.ErrClosed) {
		t.Fatalf("Release = %v", err)
	}
}

func TestOpenAcceptsHashInPaths(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "run#1.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestWriteWaitingForAHostTransactionEndsWithItsContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := openTemp(t)
	// The host holds the one writer connection in a transaction of its own.
	tx, err := store.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := store.write(cctx, func(querier) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write behind a host transaction = %v, want its deadline", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := store.write(ctx, func(querier) error { return nil }); err != nil {
		t.Fatalf("write after the host's transaction ended: %v", err)
	}
}

func TestQueuedWritesShareOneCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := openTemp(t)
	release := holdGroup(t, store)
	var commits atomic.Int32
	const n = 5
	errc := make(chan error, n)
	for i := range n {
		go func() {
			errc <- store.write(ctx, func(q querier) error {
				_, err := q.ExecContext(ctx, `INSERT INTO ignored_updates (execution_id, status, version, reported, reason, at)
					SELECT 'exe_none', 'running', ?, 'running', 'grouped', 0 WHERE 0`, i)
				return err
			})
		}()
		waitQueued(t, store, i+1)
	}
	store.beforeCommit = func(context.Context) { commits.Add(1) }
	release()
	for range n {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if got := commits.Load(); got != 1 {
		t.Fatalf("%d writes queued together took %d commits, want 1", n, got)
	}
}

// TestWritesRunAgainCountOnce runs writes that count what they did in a
// group with a failing write, which runs the group twice: each must count
// its work once.
func TestWritesRunAgainCountOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := openTemp(t)
	engine, err := execution.New(store, execution.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Register("servers.provision", fake.New(nil)); err != nil {
		t.Fatal(err)
	}
	x, err := engine.Create(ctx, execution.CreateRequest{Action: "servers.provision"})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := engine.Events(ctx, x.ID)
	if err != nil || len(evs) != 1 {
		t.Fatalf("events: %v, %v", evs, err)
	}
	now := time.Now().UTC()
	ep := webhook.Endpoint{ID: "wep_01J0000000000000000000000A", URL: "https://hooks.example.com/a",
		EventTypes: []string{"*"}, CreatedAt: now, UpdatedAt: now}
	if err := store.AddEndpoint(ctx, ep, "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0"); err != nil {
		t.Fatal(err)
	}

	// The replay runs first in its group; the failing write after it
	// makes the group run again.
	release := holdGroup(t, store)
	type replayed struct {
		n   int
		err error
	}
	replay := make(chan replayed, 1)
	go func() {
		n, err := store.Replay(ctx, ep.ID, []string{evs[0].ID}, now)
		replay <- replayed{n, err}
	}()
	waitQueued(t, store, 1)
	failed := make(chan error, 1)
	go func() { failed <- store.write(ctx, func(querier) error { return errors.New("refused") }) }()
	waitQueued(t, store, 2)
	release()
	if err := <-failed; err == nil {
		t.Fatal("the failing write succeeded")
	}
	if got := <-replay; got.err != nil || got.n != 1 {
		t.Fatalf("Replay of one event = %d, %v; want 1", got.n, got.err)
	}
}

// hostHolds begins a transaction on the store's DB, as a host would, and
// returns once it holds the writer connection; end rolls it back.
func hostHolds(t *testing.T, s *Store) (end func()) {
	t.Helper()
	tx, err := s.DB().BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := tx.Rollback(); err != nil {
			t.Error(err)
		}
	}
}

// within fails the test unless c delivers within a generous bound: what is
// checked is that the call returns at all while something else is held.
func within[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
		panic("unreachable")
	}
}

func TestCallerLeavesItsGroupWhenItsContextEnds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := openTemp(t)
	end := hostHolds(t, store)

	// Two writes wait for the connection the host holds: one whose context
	// lives on (as the engine loop's does), one with a short deadline (as
	// an HTTP request's).
	long := make(chan error, 1)
	go func() { long <- store.write(ctx, func(querier) error { return nil }) }()
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	var ran atomic.Bool
	short := make(chan error, 1)
	go func() { short <- store.write(sctx, func(querier) error { ran.Store(true); return nil }) }()

	if err := within(t, short, "a write whose deadline passed"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("short write = %v, want its deadline", err)
	}
	end()
	if err := within(t, long, "the write that waited on"); err != nil {
		t.Fatal(err)
	}
	if ran.Load() {
		t.Fatal("the write whose caller left ran")
	}
}

func TestCommittedWriteReturnsWhileAHostTakesTheConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := openTemp(t)
	// Just before the commit, a host asks for the connection; it gets it
	// as soon as the group gives it back.
	hostHas := make(chan func(), 1)
	store.beforeCommit = func(context.Context) {
		store.beforeCommit = nil
		waits := store.w.Stats().WaitCount
		go func() { hostHas <- hostHolds(t, store) }()
		for store.w.Stats().WaitCount == waits {
			runtime.Gosched()
		}
	}
	done := make(chan error, 1)
	go func() {
		done <- store.write(ctx, func(q querier) error {
			// A statement never seen before, to be prepared after the commit.
			_, err := q.ExecContext(ctx, `SELECT 1 WHERE 0 -- first seen here`)
			return err
		})
	}()
	if err := within(t, done, "a committed write"); err != nil {
		t.Fatal(err)
	}
	end := within(t, hostHas, "the host's transaction")
	end()
}

func TestStartedWriteIsCarriedThroughWhenItsGroupRunsAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := openTemp(t)
	if _, err := store.w.Exec(`CREATE TABLE t (k TEXT)`); err != nil {
		t.Fatal(err)
	}
	release := holdGroup(t, store)
	actx, cancelA := context.WithCancel(ctx)
	var runsA atomic.Int32
	a := make(chan error, 1)
	go func() {
		a <- store.write(actx, func(q querier) error {
			runsA.Add(1)
			_, err := q.ExecContext(ctx, `INSERT INTO t VALUES ('a')`)
			return err
		})
	}()
	waitQueued(t, store, 1)
	b := make(chan error, 1)
	go func() {
		b <- store.write(ctx, func(querier) error {
			cancelA() // A's caller gives up after A's statements ran
			return errors.New("refused")
		})
	}()
	waitQueued(t, store, 2)
	release()
	if err := within(t, a, "the started write"); err != nil {
		t.Fatalf("a write that started = %v, want it carried through", err)
	}
	if err := within(t, b, "the failing write"); err == nil {
		t.Fatal("the failing write succeeded")
	}
	var n int
	if err := store.r.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 || runsA.Load() != 2 {
		t.Fatalf("%d rows (%v) after %d runs; want 1 row, the write run twice", n, err, runsA.Load())
	}
}

// openTemp opens a store on a new file that the test's end closes.
func openTemp(t *testing.T) *Store {
	t.Helper()
	store, err := Open(context.Background(), filepath.Join(t.TempDir(), "x.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func TestStartedWriteIsCarriedThroughWhenEveryCallerLeft(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := openTemp(t)
	if _, err := store.w.Exec(`CREATE TABLE t (k TEXT)`); err != nil {
		t.Fatal(err)
	}
	release := holdGroup(t, store)
	actx, cancelA := context.WithCancel(ctx)
	bctx, cancelB := context.WithCancel(ctx)
	a := make(chan error, 1)
	go func() {
		a <- store.write(actx, func(q querier) error {
			_, err := q.ExecContext(ctx, `INSERT INTO t VALUES ('a')`)
			return err
		})
	}()
	waitQueued(t, store, 1)
	b := make(chan error, 1)
	go func() {
		b <- store.write(bctx, func(querier) error {
			// Every caller of the group gives up after A started; the
			// group then runs again.
			cancelA()
			cancelB()
			for range 100 {
				runtime.Gosched()
			}
			return errors.New("refused")
		})
	}()
	waitQueued(t, store, 2)
	release()
	if err := within(t, a, "the started write"); err != nil {
		t.Fatalf("a write that started = %v, want it carried through", err)
	}
	<-b
	var n int
	if err := store.r.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d rows, %v; want 1", n, err)
	}
}
