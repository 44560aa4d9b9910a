package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/execkit/execkit/execution"
)

// PruneOptions selects what [Store.Prune] removes.
type PruneOptions struct {
	// Before removes terminal executions completed before this time.
	Before time.Time
	// BatchSize is how many executions one transaction removes, so that
	// no batch holds the writer for long. Zero means 500.
	BatchSize int
	// Vacuum gives the freed pages back to the file system afterwards.
	Vacuum bool
}

// PruneResult counts what [Store.Prune] removed.
type PruneResult struct {
	Executions int `json:"executions"`
	Batches    int `json:"batches"`
}

// Prune removes terminal executions completed before opts.Before, with
// their history, ignored reports, outbox events, deliveries, attempts and
// inbox rows, in batches of one transaction each. An execution with an
// event not yet fanned out, or a delivery that is pending, parked or dead,
// is kept: nothing undelivered is dropped. With opts.Vacuum the freed
// pages go back to the file system (incremental vacuum).
func (s *Store) Prune(ctx context.Context, opts PruneOptions) (PruneResult, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	var res PruneResult
	for {
		n, err := s.pruneBatch(ctx, opts.Before, opts.BatchSize)
		if err != nil {
			return res, fmt.Errorf("prune: %w", err)
		}
		if n == 0 {
			break
		}
		res.Executions += n
		res.Batches++
	}
	if opts.Vacuum {
		if err := s.vacuum(ctx); err != nil {
			return res, fmt.Errorf("prune: %w", err)
		}
	}
	return res, nil
}

func (s *Store) pruneBatch(ctx context.Context, before time.Time, limit int) (int, error) {
	var n int
	err := s.write(ctx, func(tx querier) error {
		n = 0 // a write may run again
		rows, err := tx.QueryContext(ctx, `SELECT e.id FROM executions e
			WHERE e.next_check_at IS NULL AND e.completed_at < ?
			  AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.execution_id = e.id AND o.fanned_out = 0)
			  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
			                  WHERE d.execution_id = e.id AND d.state IN ('pending', 'parked', 'dead'))
			ORDER BY e.completed_at LIMIT ?`, before.UnixMilli(), limit)
		if err != nil {
			return fmt.Errorf("select prunable executions: %w", err)
		}
		ids, err := collect(rows, func(r *sql.Rows) (string, error) {
			var id string
			return id, r.Scan(&id)
		})
		if err != nil || len(ids) == 0 {
			return err
		}
		list, err := json.Marshal(ids)
		if err != nil {
			return err
		}
		// Children first, so that no row ever points at a missing parent.
		for _, q := range []string{
			`DELETE FROM webhook_attempts WHERE delivery_id IN (
				SELECT id FROM webhook_deliveries WHERE execution_id IN (SELECT value FROM json_each(?)))`,
			`DELETE FROM webhook_deliveries WHERE execution_id IN (SELECT value FROM json_each(?))`,
			`DELETE FROM webhook_inbox WHERE execution_id IN (SELECT value FROM json_each(?))`,
			`DELETE FROM outbox WHERE execution_id IN (SELECT value FROM json_each(?))`,
			`DELETE FROM transitions WHERE execution_id IN (SELECT value FROM json_each(?))`,
			`DELETE FROM ignored_updates WHERE execution_id IN (SELECT value FROM json_each(?))`,
			`DELETE FROM executions WHERE id IN (SELECT value FROM json_each(?))`,
		} {
			if _, err := tx.ExecContext(ctx, q, string(list)); err != nil {
				return fmt.Errorf("delete pruned rows: %w", err)
			}
		}
		n = len(ids)
		return nil
	})
	return n, err
}

// vacuum returns free pages to the file system, a slice at a time.
func (s *Store) vacuum(ctx context.Context) error {
	if s.closed.Load() {
		return execution.ErrClosed
	}
	for {
		var free int
		if err := s.w.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free); err != nil {
			return s.closedOr(fmt.Errorf("read free pages: %w", err))
		}
		if free == 0 {
			return nil
		}
		if _, err := s.w.ExecContext(ctx, `PRAGMA incremental_vacuum(2000)`); err != nil {
			return s.closedOr(fmt.Errorf("incremental vacuum: %w", err))
		}
	}
}

// Stats counts rows, for inspection and tests.
type Stats struct {
	Executions, Transitions, Outbox, Deliveries, Attempts, Inbox, Ignored int
	// FreePages and Pages describe the file.
	FreePages, Pages int
}

// Stats returns row counts and page counts.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	db, err := s.read()
	if err != nil {
		return st, err
	}
	err = db.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM executions), (SELECT count(*) FROM transitions), (SELECT count(*) FROM outbox),
		(SELECT count(*) FROM webhook_deliveries), (SELECT count(*) FROM webhook_attempts),
		(SELECT count(*) FROM webhook_inbox), (SELECT count(*) FROM ignored_updates),
		(SELECT freelist_count FROM pragma_freelist_count), (SELECT page_count FROM pragma_page_count)`).Scan(
		&st.Executions, &st.Transitions, &st.Outbox, &st.Deliveries, &st.Attempts, &st.Inbox, &st.Ignored,
		&st.FreePages, &st.Pages)
	if err != nil {
		return st, s.closedOr(fmt.Errorf("count rows: %w", err))
	}
	return st, nil
}
