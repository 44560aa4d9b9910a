package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/execkit/execkit/execution"
)

// executionColumns is the column list every query of whole executions
// selects, in the order scanExecution reads.
const executionColumns = `id, action, provider, owner, status, version, revision, input, output, progress,
	error_code, error_message, idempotency_key, request_hash, external_ref, checks, failed_attempts,
	submitted_at, created_at, updated_at, completed_at, next_check_at, deadline_at, lease_owner`

type scanner interface {
	Scan(dest ...any) error
}

func scanExecution(row scanner) (execution.Execution, error) {
	var (
		e                                       execution.Execution
		output, progress, errCode, errMsg, idem sql.NullString
		lease                                   sql.NullString
		input                                   string
		submitted, created, updated, completed  sql.NullInt64
		next, deadline                          sql.NullInt64
	)
	err := row.Scan(&e.ID, &e.Action, &e.Provider, &e.Owner, &e.Status, &e.Version, &e.Revision, &input,
		&output, &progress, &errCode, &errMsg, &idem, &e.RequestHash, &e.ExternalRef, &e.Checks,
		&e.FailedAttempts, &submitted, &created, &updated, &completed, &next, &deadline, &lease)
	if err != nil {
		return execution.Execution{}, err
	}
	e.Input = json.RawMessage(input)
	if output.Valid {
		e.Output = json.RawMessage(output.String)
	}
	if progress.Valid {
		e.Progress = json.RawMessage(progress.String)
	}
	if errCode.Valid {
		e.Error = &execution.Error{Code: errCode.String, Message: errMsg.String}
	}
	e.IdempotencyKey = idem.String
	e.LeaseOwner = lease.String
	e.SubmittedAt = fromMillis(submitted)
	e.CreatedAt = fromMillis(created)
	e.UpdatedAt = fromMillis(updated)
	e.CompletedAt = fromMillis(completed)
	e.NextCheckAt = fromMillis(next)
	e.Deadline = fromMillis(deadline)
	return e, nil
}

// Create implements [execution.Store.Create].
func (s *Store) Create(ctx context.Context, c execution.Creation) (execution.Execution, bool, error) {
	var (
		e       execution.Execution
		created bool
	)
	err := s.write(ctx, func(tx querier) error {
		var err error
		e, created, err = create(ctx, tx, c)
		return err
	})
	return e, created, err
}

// CreateTx implements [execution.Store.CreateTx].
func (s *Store) CreateTx(ctx context.Context, tx *sql.Tx, c execution.Creation) (execution.Execution, bool, error) {
	if s.closed.Load() {
		return execution.Execution{}, false, execution.ErrClosed
	}
	var file string
	if err := tx.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&file); err != nil {
		return execution.Execution{}, false, fmt.Errorf("check transaction: %w", err)
	}
	if file != s.file {
		return execution.Execution{}, false, fmt.Errorf("check transaction: %w", &execution.ValidationError{
			Field: "tx", Problem: "belongs to another database than the store's; begin it on Store.DB()"})
	}
	return create(ctx, tx, c)
}

func create(ctx context.Context, tx querier, c execution.Creation) (execution.Execution, bool, error) {
	e := c.Execution
	if e.IdempotencyKey != "" {
		prior, err := scanExecution(tx.QueryRowContext(ctx,
			`SELECT `+executionColumns+` FROM executions WHERE owner = ? AND idempotency_key = ?`,
			e.Owner, e.IdempotencyKey))
		switch {
		case err == nil && prior.RequestHash == e.RequestHash:
			return prior, false, nil
		case err == nil:
			return execution.Execution{}, false, fmt.Errorf("%w: key %q was used for %s",
				execution.ErrIdempotencyConflict, e.IdempotencyKey, prior.ID)
		case !errors.Is(err, sql.ErrNoRows):
			return execution.Execution{}, false, fmt.Errorf("look up idempotency key: %w", err)
		}
	}

	_, err := tx.ExecContext(ctx, `INSERT INTO executions (`+executionColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.Action, e.Provider, e.Owner, e.Status, e.Version, e.Revision, string(e.Input),
		nullJSON(e.Output), nullJSON(e.Progress), errorCode(e.Error), errorMessage(e.Error),
		nullString(e.IdempotencyKey), e.RequestHash, e.ExternalRef, e.Checks, e.FailedAttempts,
		millis(e.SubmittedAt), millis(e.CreatedAt), millis(e.UpdatedAt), millis(e.CompletedAt),
		millis(e.NextCheckAt), millis(e.Deadline), nullString(e.LeaseOwner))
	if isUniqueViolation(err) && e.IdempotencyKey != "" {
		// Another transaction that was not immediate won the race for
		// the key; its row is not visible to this one.
		return execution.Execution{}, false, fmt.Errorf("insert execution: %w: key %q is being used concurrently",
			execution.ErrConflict, e.IdempotencyKey)
	}
	if err != nil {
		return execution.Execution{}, false, fmt.Errorf("insert execution: %w", err)
	}
	if err := appendHistory(ctx, tx, []execution.Transition{c.Transition}, []execution.Event{c.Event}); err != nil {
		return execution.Execution{}, false, err
	}
	return e, true, nil
}

// appendHistory inserts history rows and their outbox events, each kind in
// one statement (per maxRows rows).
func appendHistory(ctx context.Context, tx querier, ts []execution.Transition, evs []execution.Event) error {
	for chunk := range slices.Chunk(ts, maxRows) {
		args := make([]any, 0, 7*len(chunk))
		for _, t := range chunk {
			args = append(args, t.ExecutionID, t.Version, t.From, t.To, t.Event, t.Reason, t.At.UnixMilli())
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO transitions
			(execution_id, version, from_status, to_status, event, reason, at) VALUES `+rowsOf(7, len(chunk)), args...)
		if err != nil {
			return fmt.Errorf("insert transitions %d to %d of %s: %w",
				chunk[0].Version, chunk[len(chunk)-1].Version, chunk[0].ExecutionID, err)
		}
	}
	for chunk := range slices.Chunk(evs, maxRows) {
		args := make([]any, 0, 6*len(chunk))
		for _, ev := range chunk {
			args = append(args, ev.ID, ev.ExecutionID, ev.Type, ev.Version, ev.Payload, ev.CreatedAt.UnixMilli())
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO outbox
			(id, execution_id, type, version, payload, created_at) VALUES `+rowsOf(6, len(chunk)), args...)
		if err != nil {
			return fmt.Errorf("insert outbox events %s to %s: %w", chunk[0].ID, chunk[len(chunk)-1].ID, err)
		}
	}
	return nil
}

// maxRows bounds the rows of one insert, and so the statement texts.
const maxRows = 16

// rowsOf returns the VALUES list of an insert of n rows of k columns:
// "(?, ?), (?, ?)". A change writes a handful of rows, so the texts are
// few and each is prepared once.
func rowsOf(k, n int) string {
	row := "(" + strings.Repeat("?, ", k-1) + "?)"
	return strings.Repeat(row+", ", n-1) + row
}

func errorCode(e *execution.Error) any {
	if e == nil {
		return nil
	}
	return e.Code
}

func errorMessage(e *execution.Error) any {
	if e == nil {
		return nil
	}
	return e.Message
}

// Get implements [execution.Store.Get].
func (s *Store) Get(ctx context.Context, id string) (execution.Execution, error) {
	if _, err := s.read(); err != nil {
		return execution.Execution{}, err
	}
	st, err := s.rstmts.get(ctx, `SELECT `+executionColumns+` FROM executions WHERE id = ?`)
	if err != nil {
		return execution.Execution{}, s.closedOr(fmt.Errorf("prepare select execution: %w", err))
	}
	e, err := scanExecution(st.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return execution.Execution{}, execution.ErrNotFound
	}
	if err != nil {
		return execution.Execution{}, s.closedOr(fmt.Errorf("select execution: %w", err))
	}
	return e, nil
}

// List implements [execution.Store.List].
func (s *Store) List(ctx context.Context, f execution.Filter) (execution.Page, error) {
	db, err := s.read()
	if err != nil {
		return execution.Page{}, err
	}
	var (
		conds []string
		args  []any
	)
	where := func(cond string, arg any) {
		conds = append(conds, cond)
		args = append(args, arg)
	}
	if f.Status != "" {
		where("status = ?", f.Status)
	}
	if f.Action != "" {
		where("action = ?", f.Action)
	}
	if f.Owner != "" {
		where("owner = ?", f.Owner)
	}
	if !f.CreatedAfter.IsZero() {
		where("created_at >= ?", ceilMillis(f.CreatedAfter))
	}
	if !f.CreatedBefore.IsZero() {
		where("created_at < ?", ceilMillis(f.CreatedBefore))
	}
	if f.Cursor != "" {
		where("id < ?", f.Cursor)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = execution.DefaultPageSize
	}
	limit = min(limit, execution.MaxPageSize)

	query := `SELECT ` + executionColumns + ` FROM executions`
	if len(conds) > 0 {
		query += ` WHERE ` + strings.Join(conds, " AND ")
	}
	query += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit+1)

	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return execution.Page{}, s.closedOr(fmt.Errorf("select executions: %w", err))
	}
	defer rows.Close()
	var page execution.Page
	for rows.Next() {
		e, err := scanExecution(rows)
		if err != nil {
			return execution.Page{}, fmt.Errorf("scan execution: %w", err)
		}
		page.Executions = append(page.Executions, e)
	}
	if err := rows.Err(); err != nil {
		return execution.Page{}, s.closedOr(fmt.Errorf("select executions: %w", err))
	}
	if len(page.Executions) > limit {
		page.Executions = page.Executions[:limit]
		page.Next = page.Executions[limit-1].ID
	}
	return page, nil
}

// Write implements [execution.Store.Write].
func (s *Store) Write(ctx context.Context, w execution.Write) error {
	// TODO(perf): a transition costs the writer about a third more than
	// SQLite's bare batched transition: this update sets the indexed due
	// and completion times even when they do not change, and the outbox
	// row goes into four b-trees (rowid, id, execution and version, not
	// fanned out). It keeps single transitions near half the batched
	// ceiling on two cores (see BENCHMARKS.md).
	return s.write(ctx, func(tx querier) error {
		e := w.Execution
		leased := w.Expect.LeaseOwner != ""
		res, err := tx.ExecContext(ctx, `UPDATE executions SET
			status = ?1, version = ?2, output = ?3, progress = ?4, error_code = ?5, error_message = ?6,
			external_ref = ?7, checks = ?8, failed_attempts = ?9, submitted_at = ?10, updated_at = ?11,
			completed_at = ?12, deadline_at = ?13, revision = ?21,
			next_check_at = CASE WHEN ?14 OR ?15 OR lease_owner IS NULL THEN ?16 ELSE next_check_at END,
			lease_owner = CASE WHEN ?14 OR ?15 THEN NULL ELSE lease_owner END
			WHERE id = ?17 AND status = ?18 AND version = ?19 AND (?20 = '' OR lease_owner = ?20)
				AND revision = ?22`,
			e.Status, e.Version, nullJSON(e.Output), nullJSON(e.Progress), errorCode(e.Error),
			errorMessage(e.Error), e.ExternalRef, e.Checks, e.FailedAttempts, millis(e.SubmittedAt),
			millis(e.UpdatedAt), millis(e.CompletedAt), millis(e.Deadline),
			leased, e.Status.Terminal(), millis(e.NextCheckAt),
			e.ID, w.Expect.Status, w.Expect.Version, w.Expect.LeaseOwner, e.Revision, w.Expect.Revision)
		if err != nil {
			return fmt.Errorf("update execution %s: %w", e.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("update execution %s: %w", e.ID, err)
		} else if n == 0 {
			return fmt.Errorf("update execution %s from %s v%d r%d: %w",
				e.ID, w.Expect.Status, w.Expect.Version, w.Expect.Revision, execution.ErrConflict)
		}
		return appendHistory(ctx, tx, w.Transitions, w.Events)
	})
}

// maxClaim is the most executions one claim takes; a larger limit is cut
// to it, and the caller claims again for more.
const maxClaim = 1000

// Claim implements [execution.Store.Claim].
func (s *Store) Claim(ctx context.Context, p execution.ClaimParams) ([]execution.Execution, error) {
	if len(p.Actions) == 0 || p.Limit <= 0 {
		return nil, nil
	}
	p.Limit = min(p.Limit, maxClaim)
	actions, err := json.Marshal(p.Actions)
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	var claimed []execution.Execution
	err = s.write(ctx, func(tx querier) error {
		claimed = claimed[:0]
		// The limit is written into the text: a bound LIMIT that changes
		// makes SQLite plan the statement again on every call. The texts
		// are few (one per limit up to the engine's worker count), and
		// each is prepared once.
		rows, err := tx.QueryContext(ctx, `UPDATE executions SET lease_owner = ?, next_check_at = ?, revision = revision + 1
			WHERE id IN (
				SELECT id FROM executions
				WHERE next_check_at <= ? AND action IN (SELECT value FROM json_each(?))
				ORDER BY next_check_at LIMIT `+strconv.Itoa(p.Limit)+`)
			RETURNING `+executionColumns,
			p.Owner, p.Until.UnixMilli(), p.Now.UnixMilli(), string(actions))
		if err != nil {
			return fmt.Errorf("claim executions: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			e, err := scanExecution(rows)
			if err != nil {
				return fmt.Errorf("scan claimed execution: %w", err)
			}
			claimed = append(claimed, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	// RETURNING gives no order; hand out the oldest executions first.
	slices.SortFunc(claimed, func(a, b execution.Execution) int { return strings.Compare(a.ID, b.ID) })
	return claimed, nil
}

// Release implements [execution.Store.Release].
func (s *Store) Release(ctx context.Context, id, owner string, next time.Time) error {
	return s.write(ctx, func(tx querier) error {
		_, err := tx.ExecContext(ctx, `UPDATE executions SET lease_owner = NULL, next_check_at = ?, revision = revision + 1
			WHERE id = ? AND lease_owner = ? AND next_check_at IS NOT NULL`, next.UnixMilli(), id, owner)
		if err != nil {
			return fmt.Errorf("release execution %s: %w", id, err)
		}
		return nil
	})
}

// NextDue implements [execution.Store.NextDue].
func (s *Store) NextDue(ctx context.Context, actions []string) (time.Time, bool, error) {
	db, err := s.read()
	if err != nil {
		return time.Time{}, false, err
	}
	list, err := json.Marshal(actions)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next due: %w", err)
	}
	var next sql.NullInt64
	err = db.QueryRowContext(ctx, `SELECT next_check_at FROM executions
		WHERE next_check_at IS NOT NULL AND action IN (SELECT value FROM json_each(?))
		ORDER BY next_check_at LIMIT 1`, string(list)).Scan(&next)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, s.closedOr(fmt.Errorf("select next due: %w", err))
	}
	return fromMillis(next), true, nil
}

// LiveActions implements [execution.Store.LiveActions].
func (s *Store) LiveActions(ctx context.Context) ([]string, error) {
	db, err := s.read()
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx,
		`SELECT DISTINCT action FROM executions WHERE next_check_at IS NOT NULL ORDER BY action`)
	if err != nil {
		return nil, s.closedOr(fmt.Errorf("select live actions: %w", err))
	}
	return collect(rows, func(r *sql.Rows) (string, error) {
		var a string
		return a, r.Scan(&a)
	})
}

// RecordIgnored implements [execution.Store.RecordIgnored].
func (s *Store) RecordIgnored(ctx context.Context, u execution.IgnoredUpdate) error {
	return s.write(ctx, func(tx querier) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO ignored_updates
			(execution_id, status, version, reported, reason, at) VALUES (?, ?, ?, ?, ?, ?)`,
			u.ExecutionID, u.Status, u.Version, u.Reported, u.Reason, u.At.UnixMilli())
		if err != nil {
			return fmt.Errorf("insert ignored update for %s: %w", u.ExecutionID, err)
		}
		return nil
	})
}

// History implements [execution.Store.History].
func (s *Store) History(ctx context.Context, id string) ([]execution.Transition, error) {
	return listOf(ctx, s, id, `SELECT execution_id, version, from_status, to_status, event, reason, at
		FROM transitions WHERE execution_id = ? ORDER BY version`,
		func(r *sql.Rows) (execution.Transition, error) {
			var (
				t  execution.Transition
				at int64
			)
			err := r.Scan(&t.ExecutionID, &t.Version, &t.From, &t.To, &t.Event, &t.Reason, &at)
			t.At = time.UnixMilli(at).UTC()
			return t, err
		})
}

// Events implements [execution.Store.Events].
func (s *Store) Events(ctx context.Context, id string) ([]execution.Event, error) {
	return listOf(ctx, s, id, `SELECT id, execution_id, type, version, payload, created_at
		FROM outbox WHERE execution_id = ? ORDER BY version`,
		func(r *sql.Rows) (execution.Event, error) {
			var (
				ev execution.Event
				at int64
			)
			err := r.Scan(&ev.ID, &ev.ExecutionID, &ev.Type, &ev.Version, &ev.Payload, &at)
			ev.CreatedAt = time.UnixMilli(at).UTC()
			return ev, err
		})
}

// IgnoredUpdates implements [execution.Store.IgnoredUpdates].
func (s *Store) IgnoredUpdates(ctx context.Context, id string) ([]execution.IgnoredUpdate, error) {
	return listOf(ctx, s, id, `SELECT execution_id, status, version, reported, reason, at
		FROM ignored_updates WHERE execution_id = ? ORDER BY id`,
		func(r *sql.Rows) (execution.IgnoredUpdate, error) {
			var (
				u  execution.IgnoredUpdate
				at int64
			)
			err := r.Scan(&u.ExecutionID, &u.Status, &u.Version, &u.Reported, &u.Reason, &at)
			u.At = time.UnixMilli(at).UTC()
			return u, err
		})
}

// listOf reads the rows one execution owns, and returns ErrNotFound if the
// execution does not exist.
func listOf[T any](ctx context.Context, s *Store, id, query string, scan func(*sql.Rows) (T, error)) ([]T, error) {
	db, err := s.read()
	if err != nil {
		return nil, err
	}
	out, err := readList(ctx, db, id, query, scan)
	return out, s.closedOr(err)
}

func readList[T any](ctx context.Context, db *sql.DB, id, query string, scan func(*sql.Rows) (T, error)) ([]T, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("begin read: %w", err)
	}
	defer tx.Rollback()

	var exists bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM executions WHERE id = ?)`, id).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up execution: %w", err)
	}
	if !exists {
		return nil, execution.ErrNotFound
	}
	rows, err := tx.QueryContext(ctx, query, id)
	if err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	return collect(rows, scan)
}

func collect[T any](rows *sql.Rows, scan func(*sql.Rows) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read rows: %w", err)
	}
	return out, nil
}
