package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/fake"
)

func TestCanceledContextMidTransitionChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, err := Open(ctx, filepath.Join(t.TempDir(), "x.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
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

	// The context is canceled after the update and its history rows are
	// written, just before the commit.
	cctx, cancel := context.WithCancel(ctx)
	store.beforeCommit = func(context.Context) { cancel() }
	_, err = engine.Apply(cctx, x.ID, execution.Update{Status: fsm.Running})
	store.beforeCommit = nil
	if !errors.Is(err, context.Canceled) && !errors.Is(err, sql.ErrTxDone) {
		t.Fatalf("Apply = %v, want a canceled commit", err)
	}
	got, err := engine.Get(ctx, x.ID)
	if err != nil || got.Status != fsm.Pending || got.Version != 1 {
		t.Fatalf("after canceled transition: %s v%d, %v", got.Status, got.Version, err)
	}
	if h, _ := engine.History(ctx, x.ID); len(h) != 1 {
		t.Fatalf("history has %d rows", len(h))
	}
	if evs, _ := engine.Events(ctx, x.ID); len(evs) != 1 {
		t.Fatalf("outbox has %d events", len(evs))
	}

	// The next transition on the same execution goes through.
	got, err = engine.Apply(ctx, x.ID, execution.Update{Status: fsm.Running})
	if err != nil || got.Status != fsm.Running || got.Version != 3 {
		t.Fatalf("next transition: %s v%d, %v", got.Status, got.Version, err)
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
