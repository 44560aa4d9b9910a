package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/execkit/execkit/sqlite"
)

// fill writes n completed executions, completed at old, each with four
// transitions and events, a delivered webhook with one attempt, an inbox
// row and an ignored report, straight in SQL so that large files build
// fast.
func fill(t *testing.T, s *sqlite.Store, n int, old time.Time) {
	t.Helper()
	at := old.UnixMilli()
	stmts := []string{
		`INSERT INTO webhook_endpoints (id, url, event_types, created_at, updated_at)
			VALUES ('wep_1', 'https://hooks.example.com/', '["*"]', 0, 0)`,
		`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
		 INSERT INTO executions (id, action, provider, owner, status, version, revision, input, request_hash,
			created_at, updated_at, completed_at)
		 SELECT printf('exe_%026d', i), 'servers.provision', 'fake', 'o', 'completed', 4, 4, '{}', 'h', ?2, ?2, ?2 FROM n`,
		`WITH v(k) AS (VALUES (1), (2), (3), (4))
		 INSERT INTO transitions (execution_id, version, from_status, to_status, event, reason, at)
		 SELECT e.id, k, '', 'completed', 'complete', '', ?2 FROM executions e, v WHERE ?1 > 0`,
		`WITH v(k) AS (VALUES (1), (2), (3), (4))
		 INSERT INTO outbox (id, execution_id, type, version, payload, created_at, fanned_out)
		 SELECT printf('evt_%s_%d', substr(e.id, 5), k), e.id, 'execution.completed', k, CAST('{}' AS BLOB), ?2, 1
		 FROM executions e, v WHERE ?1 > 0`,
		`INSERT INTO webhook_deliveries (event_id, endpoint_id, execution_id, version, state, attempts,
			created_at, updated_at) SELECT o.id, 'wep_1', o.execution_id, o.version, 'delivered', 1, ?2, ?2
		 FROM outbox o WHERE ?1 > 0`,
		`INSERT INTO webhook_attempts (delivery_id, at, status_code, latency_ms) SELECT id, ?2, 204, 3
		 FROM webhook_deliveries WHERE ?1 > 0`,
		`INSERT INTO webhook_inbox (event_id, execution_id, type, status, previous_status, version, received_at, processed_at)
		 SELECT id, execution_id, type, 'completed', 'running', version, ?2, ?2 FROM outbox WHERE version = 4 AND ?1 > 0`,
		`INSERT INTO ignored_updates (execution_id, status, version, reported, reason, at)
		 SELECT id, 'completed', 4, 'running', 'late', ?2 FROM executions WHERE ?1 > 0`,
	}
	for _, q := range stmts {
		if _, err := s.DB().Exec(q, n, at); err != nil {
			t.Fatalf("fill: %v\n%s", err, q)
		}
	}
}

// orphans counts rows whose parent is gone.
func orphans(t *testing.T, s *sqlite.Store) int {
	t.Helper()
	var n int
	err := s.DB().QueryRow(`SELECT
		(SELECT count(*) FROM transitions t LEFT JOIN executions e ON e.id = t.execution_id WHERE e.id IS NULL) +
		(SELECT count(*) FROM outbox o LEFT JOIN executions e ON e.id = o.execution_id WHERE e.id IS NULL) +
		(SELECT count(*) FROM ignored_updates u LEFT JOIN executions e ON e.id = u.execution_id WHERE e.id IS NULL) +
		(SELECT count(*) FROM webhook_deliveries d LEFT JOIN outbox o ON o.id = d.event_id WHERE o.id IS NULL) +
		(SELECT count(*) FROM webhook_attempts a LEFT JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.id IS NULL) +
		(SELECT count(*) FROM webhook_inbox i LEFT JOIN executions e ON e.id = i.execution_id WHERE e.id IS NULL)`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPruneLeavesNoOrphansAndKeepsUndelivered(t *testing.T) {
	t.Parallel()
	n := 100_000
	if raceEnabled || testing.Short() {
		n = 1_000
	}
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "prune.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	fill(t, s, n, now.Add(-60*24*time.Hour))

	// Four old executions that must stay: an event not fanned out yet, a
	// pending delivery, a parked one, a dead one. One recent one stays too.
	for i, q := range []string{
		`UPDATE outbox SET fanned_out = 0 WHERE execution_id = printf('exe_%026d', 1) AND version = 4`,
		`UPDATE webhook_deliveries SET state = 'pending' WHERE execution_id = printf('exe_%026d', 2) AND version = 4`,
		`UPDATE webhook_deliveries SET state = 'parked' WHERE execution_id = printf('exe_%026d', 3) AND version = 4`,
		`UPDATE webhook_deliveries SET state = 'dead' WHERE execution_id = printf('exe_%026d', 4) AND version = 4`,
		`UPDATE executions SET completed_at = ? WHERE id = printf('exe_%026d', 5)`,
	} {
		if _, err := s.DB().Exec(q, now.UnixMilli()); err != nil {
			t.Fatalf("blocker %d: %v", i, err)
		}
	}
	before, _ := s.Stats(ctx)

	res, err := s.Prune(ctx, sqlite.PruneOptions{Before: now.Add(-30 * 24 * time.Hour), BatchSize: 1000, Vacuum: true})
	if err != nil {
		t.Fatal(err)
	}
	after, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Executions != n-5 || after.Executions != 5 || res.Batches != (n-5+999)/1000 {
		t.Fatalf("pruned %d in %d batches, %d left; want %d pruned, 5 left", res.Executions, res.Batches, after.Executions, n-5)
	}
	if after.Transitions != 5*4 || after.Outbox != 5*4 || after.Deliveries != 5*4 || after.Attempts != 5*4 ||
		after.Inbox != 5 || after.Ignored != 5 {
		t.Fatalf("rows left: %+v", after)
	}
	if o := orphans(t, s); o != 0 {
		t.Fatalf("%d orphaned rows", o)
	}
	if after.FreePages != 0 || after.Pages >= before.Pages {
		t.Fatalf("vacuum: %d free pages, %d pages (was %d)", after.FreePages, after.Pages, before.Pages)
	}
	t.Logf("pruned %d executions in %d batches; file %d → %d pages", res.Executions, res.Batches, before.Pages, after.Pages)
}

func TestOpenMustExist(t *testing.T) {
	t.Parallel()
	_, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "missing.db"), sqlite.Options{MustExist: true})
	if !errors.Is(err, sqlite.ErrNoDatabase) {
		t.Fatalf("Open = %v", err)
	}
}
