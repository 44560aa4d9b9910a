package sqlite_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/execution/storetest"
	"github.com/execkit/execkit/sqlite"
)

// open returns a store on a new file in the test's temporary directory,
// closed when the test ends.
func open(t *testing.T) *sqlite.Store {
	t.Helper()
	store, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "x.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return store
}

func TestStore(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) execution.Store { return open(t) })
}

func TestCreateTx(t *testing.T) {
	t.Parallel()

	t.Run("a rolled back transaction leaves nothing", func(t *testing.T) {
		t.Parallel()
		ctx, store := t.Context(), open(t)
		c := storetest.NewCreation("servers.provision")
		tx, err := store.DB().BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, created, err := store.CreateTx(ctx, tx, c); err != nil || !created {
			t.Fatalf("CreateTx = created %t, %v; want created", created, err)
		}

		if err := tx.Rollback(); err != nil {
			t.Fatalf("Rollback: %v", err)
		}

		if _, err := store.Get(ctx, c.Execution.ID); !errors.Is(err, execution.ErrNotFound) {
			t.Errorf("Get after rollback = %v, want ErrNotFound", err)
		}
		page, err := store.List(ctx, execution.Filter{})
		if err != nil || len(page.Executions) != 0 {
			t.Errorf("List after rollback = %d executions, %v; want none", len(page.Executions), err)
		}
		if _, created, err := store.Create(ctx, c); err != nil || !created {
			t.Errorf("Create after rollback = created %t, %v; want created", created, err)
		}
	})

	t.Run("a committed transaction keeps the execution with its history", func(t *testing.T) {
		t.Parallel()
		ctx, store := t.Context(), open(t)
		c := storetest.NewCreation("servers.provision")
		c.Execution.IdempotencyKey = "order-1"
		again := storetest.NewCreation("servers.provision")
		again.Execution.IdempotencyKey = "order-1"
		tx, err := store.DB().BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, created, err := store.CreateTx(ctx, tx, c); err != nil || !created {
			t.Fatalf("CreateTx = created %t, %v; want created", created, err)
		}
		e, created, err := store.CreateTx(ctx, tx, again)
		if err != nil || created || e.ID != c.Execution.ID {
			t.Fatalf("CreateTx with the same key = %s, created %t, %v; want %s, not created",
				e.ID, created, err, c.Execution.ID)
		}

		if err := tx.Commit(); err != nil {
			t.Fatalf("Commit: %v", err)
		}

		got, err := store.Get(ctx, c.Execution.ID)
		if err != nil {
			t.Fatalf("Get after commit: %v", err)
		}
		if got.ID != c.Execution.ID || got.Status != c.Execution.Status || got.Version != 1 ||
			got.IdempotencyKey != "order-1" {
			t.Errorf("Get after commit = %s %s v%d key %q, want %s pending v1 key order-1",
				got.ID, got.Status, got.Version, got.IdempotencyKey, c.Execution.ID)
		}
		history, err := store.History(ctx, c.Execution.ID)
		if err != nil || len(history) != 1 || history[0].Event != execution.EventCreate {
			t.Errorf("History after commit = %+v, %v; want the creation row", history, err)
		}
		events, err := store.Events(ctx, c.Execution.ID)
		if err != nil || len(events) != 1 || events[0].ID != c.Event.ID {
			t.Errorf("Events after commit = %+v, %v; want %s", events, err, c.Event.ID)
		}
		page, err := store.List(ctx, execution.Filter{})
		if err != nil || len(page.Executions) != 1 {
			t.Errorf("List after commit = %d executions, %v; want 1", len(page.Executions), err)
		}
	})
}
