package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/execkit/execkit/webhook"
)

var (
	_ webhook.Store = (*Store)(nil)
	_ webhook.Inbox = (*Store)(nil)
)

const endpointColumns = `id, url, event_types, ordered, disabled_at, disabled_reason, failing_since,
	created_at, updated_at`

func scanEndpoint(row scanner) (webhook.Endpoint, error) {
	var (
		e                                   webhook.Endpoint
		types                               string
		disabled, failing, created, updated sql.NullInt64
	)
	err := row.Scan(&e.ID, &e.URL, &types, &e.Ordered, &disabled, &e.DisabledReason, &failing, &created, &updated)
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal([]byte(types), &e.EventTypes); err != nil {
		return e, fmt.Errorf("decode event types of %s: %w", e.ID, err)
	}
	e.DisabledAt, e.FailingSince = fromMillis(disabled), fromMillis(failing)
	e.CreatedAt, e.UpdatedAt = fromMillis(created), fromMillis(updated)
	return e, nil
}

// AddEndpoint implements [webhook.Store.AddEndpoint].
func (s *Store) AddEndpoint(ctx context.Context, e webhook.Endpoint, secret string) error {
	types, err := json.Marshal(e.EventTypes)
	if err != nil {
		return fmt.Errorf("encode event types: %w", err)
	}
	return s.write(ctx, func(tx querier) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO webhook_endpoints (`+endpointColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			e.ID, e.URL, string(types), e.Ordered, millis(e.DisabledAt), e.DisabledReason, millis(e.FailingSince),
			millis(e.CreatedAt), millis(e.UpdatedAt))
		if err != nil {
			return fmt.Errorf("insert endpoint: %w", err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO webhook_secrets (endpoint_id, secret, created_at) VALUES (?, ?, ?)`,
			e.ID, secret, millis(e.CreatedAt))
		if err != nil {
			return fmt.Errorf("insert secret: %w", err)
		}
		return nil
	})
}

// GetEndpoint implements [webhook.Store.GetEndpoint].
func (s *Store) GetEndpoint(ctx context.Context, id string) (webhook.Endpoint, error) {
	db, err := s.read()
	if err != nil {
		return webhook.Endpoint{}, err
	}
	e, err := scanEndpoint(db.QueryRowContext(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return e, webhook.ErrEndpointNotFound
	}
	if err != nil {
		return e, s.closedOr(fmt.Errorf("select endpoint: %w", err))
	}
	return e, nil
}

// ListEndpoints implements [webhook.Store.ListEndpoints].
func (s *Store) ListEndpoints(ctx context.Context) ([]webhook.Endpoint, error) {
	db, err := s.read()
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints ORDER BY id`)
	if err != nil {
		return nil, s.closedOr(fmt.Errorf("select endpoints: %w", err))
	}
	return collect(rows, func(r *sql.Rows) (webhook.Endpoint, error) { return scanEndpoint(r) })
}

// UpdateEndpoint implements [webhook.Store.UpdateEndpoint].
func (s *Store) UpdateEndpoint(ctx context.Context, e webhook.Endpoint) error {
	types, err := json.Marshal(e.EventTypes)
	if err != nil {
		return fmt.Errorf("encode event types: %w", err)
	}
	return s.endpointWrite(ctx, e.ID, `UPDATE webhook_endpoints SET url = ?, event_types = ?, ordered = ?, updated_at = ?
		WHERE id = ?`, e.URL, string(types), e.Ordered, millis(e.UpdatedAt), e.ID)
}

// DisableEndpoint implements [webhook.Store.DisableEndpoint].
func (s *Store) DisableEndpoint(ctx context.Context, id, reason string, at time.Time) error {
	return s.write(ctx, func(tx querier) error { return disable(ctx, tx, id, reason, at) })
}

func disable(ctx context.Context, tx querier, id, reason string, at time.Time) error {
	res, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET disabled_at = ?, disabled_reason = ?, updated_at = ?
		WHERE id = ?`, at.UnixMilli(), reason, at.UnixMilli(), id)
	if err := mustTouch(res, err, id); err != nil {
		return err
	}
	// Deliveries in flight keep their lease; their attempt's outcome is
	// recorded, and parks them if they are to be tried again.
	_, err = tx.ExecContext(ctx, `UPDATE webhook_deliveries SET state = 'parked',
		next_attempt_at = NULL, updated_at = ? WHERE endpoint_id = ? AND state = 'pending' AND lease_owner IS NULL`,
		at.UnixMilli(), id)
	if err != nil {
		return fmt.Errorf("park deliveries of %s: %w", id, err)
	}
	return nil
}

// EnableEndpoint implements [webhook.Store.EnableEndpoint].
func (s *Store) EnableEndpoint(ctx context.Context, id string, at time.Time) error {
	return s.write(ctx, func(tx querier) error {
		res, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = '',
			failing_since = NULL, updated_at = ? WHERE id = ?`, at.UnixMilli(), id)
		if err := mustTouch(res, err, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = ?,
			updated_at = ? WHERE endpoint_id = ? AND state = 'parked'`, at.UnixMilli(), at.UnixMilli(), id)
		if err != nil {
			return fmt.Errorf("resume deliveries of %s: %w", id, err)
		}
		return nil
	})
}

// RotateSecret implements [webhook.Store.RotateSecret].
func (s *Store) RotateSecret(ctx context.Context, id, secret string, at, retireAt time.Time) error {
	return s.write(ctx, func(tx querier) error {
		res, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET updated_at = ? WHERE id = ?`, at.UnixMilli(), id)
		if err := mustTouch(res, err, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE webhook_secrets SET expires_at = ?
			WHERE endpoint_id = ? AND secret != ? AND (expires_at IS NULL OR expires_at > ?)`,
			retireAt.UnixMilli(), id, secret, retireAt.UnixMilli())
		if err != nil {
			return fmt.Errorf("retire secrets: %w", err)
		}
		// Rotating to a secret the endpoint already has makes it current.
		_, err = tx.ExecContext(ctx, `INSERT INTO webhook_secrets (endpoint_id, secret, created_at) VALUES (?, ?, ?)
			ON CONFLICT (endpoint_id, secret) DO UPDATE SET expires_at = NULL`, id, secret, at.UnixMilli())
		if err != nil {
			return fmt.Errorf("insert secret: %w", err)
		}
		return nil
	})
}

func (s *Store) endpointWrite(ctx context.Context, id, query string, args ...any) error {
	return s.write(ctx, func(tx querier) error {
		res, err := tx.ExecContext(ctx, query, args...)
		return mustTouch(res, err, id)
	})
}

// mustTouch turns "no row changed" into ErrEndpointNotFound.
func mustTouch(res sql.Result, err error, id string) error {
	if err != nil {
		return fmt.Errorf("update endpoint %.40s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update endpoint %.40s: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("endpoint %.40s: %w", id, webhook.ErrEndpointNotFound)
	}
	return nil
}

// FanOut implements [webhook.Store.FanOut].
func (s *Store) FanOut(ctx context.Context, now time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	// The same earliest events, by the partial index, in both statements
	// of one transaction; the limit is written into the text, as in Claim.
	unfanned := `SELECT id FROM outbox WHERE fanned_out = 0 ORDER BY id LIMIT ` + strconv.Itoa(min(limit, maxClaim))
	var n int
	err := s.write(ctx, func(tx querier) error {
		// WHERE true tells SQLite's parser that ON CONFLICT belongs to the
		// INSERT, not to a join.
		_, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries
			(event_id, endpoint_id, execution_id, version, state, next_attempt_at, created_at, updated_at)
			SELECT o.id, w.id, o.execution_id, o.version, CASE WHEN w.disabled_at IS NULL THEN 'pending' ELSE 'parked' END,
				CASE WHEN w.disabled_at IS NULL THEN ?1 END, ?1, ?1
			FROM outbox o JOIN webhook_endpoints w
			WHERE o.id IN (`+unfanned+`)
			  AND EXISTS (SELECT 1 FROM json_each(w.event_types) f
				WHERE f.value = o.type OR f.value = '*'
				   OR (substr(f.value, -2) = '.*' AND substr(o.type, 1, length(f.value) - 1) = substr(f.value, 1, length(f.value) - 1)))
			ORDER BY o.id, w.id
			ON CONFLICT (event_id, endpoint_id) DO NOTHING`, now.UnixMilli())
		if err != nil {
			return fmt.Errorf("create deliveries: %w", err)
		}
		res, err := tx.ExecContext(ctx, `UPDATE outbox SET fanned_out = 1 WHERE id IN (`+unfanned+`)`)
		if err != nil {
			return fmt.Errorf("mark events fanned out: %w", err)
		}
		k, err := res.RowsAffected()
		n = int(k)
		return err
	})
	return n, err
}

const deliveryColumns = `d.id, d.event_id, d.endpoint_id, d.execution_id, d.version, d.state, d.attempts,
	d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.updated_at, d.delivered_at`

func scanDelivery(row scanner, extra ...any) (webhook.Delivery, error) {
	var (
		d                           webhook.Delivery
		next, status                sql.NullInt64
		created, updated, delivered sql.NullInt64
	)
	dest := append([]any{&d.ID, &d.EventID, &d.EndpointID, &d.ExecutionID, &d.Version, &d.State, &d.Attempts,
		&next, &status, &d.LastError, &created, &updated, &delivered}, extra...)
	if err := row.Scan(dest...); err != nil {
		return d, err
	}
	d.NextAttemptAt, d.LastStatus = fromMillis(next), int(status.Int64)
	d.CreatedAt, d.UpdatedAt, d.DeliveredAt = fromMillis(created), fromMillis(updated), fromMillis(delivered)
	return d, nil
}

// ClaimDeliveries implements [webhook.Store.ClaimDeliveries].
func (s *Store) ClaimDeliveries(ctx context.Context, p webhook.ClaimParams) ([]webhook.Job, error) {
	if p.Limit <= 0 || p.PerEndpoint <= 0 {
		return nil, nil
	}
	p.PerEndpoint = min(p.PerEndpoint, maxClaim)
	var jobs []webhook.Job
	err := s.write(ctx, func(tx querier) error {
		jobs = jobs[:0]
		ids, err := dueDeliveries(ctx, tx, p)
		if err != nil || len(ids) == 0 {
			return err
		}
		list, err := json.Marshal(ids)
		if err != nil {
			return fmt.Errorf("claim deliveries: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET lease_owner = ?, next_attempt_at = ?
			WHERE id IN (SELECT value FROM json_each(?))`, p.Owner, p.Until.UnixMilli(), string(list)); err != nil {
			return fmt.Errorf("lease deliveries: %w", err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+deliveryColumns+`, o.payload, w.url
			FROM webhook_deliveries d JOIN outbox o ON o.id = d.event_id JOIN webhook_endpoints w ON w.id = d.endpoint_id
			WHERE d.id IN (SELECT value FROM json_each(?))`, string(list))
		if err != nil {
			return fmt.Errorf("load claimed deliveries: %w", err)
		}
		byID := map[int64]webhook.Job{}
		_, err = collect(rows, func(r *sql.Rows) (struct{}, error) {
			var job webhook.Job
			var err error
			job.Delivery, err = scanDelivery(r, &job.Payload, &job.URL)
			byID[job.Delivery.ID] = job
			return struct{}{}, err
		})
		if err != nil {
			return fmt.Errorf("load claimed deliveries: %w", err)
		}
		secrets := map[string][]string{}
		for _, id := range ids { // in the order chosen
			job := byID[id]
			sec, ok := secrets[job.Delivery.EndpointID]
			if !ok {
				if sec, err = liveSecrets(ctx, tx, job.Delivery.EndpointID, p.Now); err != nil {
					return err
				}
				secrets[job.Delivery.EndpointID] = sec
			}
			job.Secrets = sec
			jobs = append(jobs, job)
		}
		return nil
	})
	return jobs, err
}

// dueDeliveries chooses the deliveries a claim takes: each enabled
// endpoint's earliest due ones, at most PerEndpoint of them less those the
// caller has in flight, taken in turns across endpoints (every endpoint's
// first, then every endpoint's second, ...) up to Limit, the endpoints
// with fewest in flight first. An ordered endpoint's delivery waits while
// an earlier version for the same execution is pending or parked, or not
// fanned out yet (events are fanned out in id order, which need not be
// version order when several processes write).
func dueDeliveries(ctx context.Context, tx querier, p webhook.ClaimParams) ([]int64, error) {
	// The per-endpoint limit is written into the text, as in Claim.
	rows, err := tx.QueryContext(ctx, `SELECT d.endpoint_id, d.next_attempt_at, d.id FROM webhook_endpoints w, webhook_deliveries d
		WHERE w.disabled_at IS NULL AND d.id IN (
			SELECT x.id FROM webhook_deliveries x
			WHERE x.endpoint_id = w.id AND x.state = 'pending' AND x.next_attempt_at <= ?
			  AND (w.ordered = 0 OR (NOT EXISTS (
				SELECT 1 FROM webhook_deliveries e
				WHERE e.endpoint_id = x.endpoint_id AND e.execution_id = x.execution_id
				  AND e.version < x.version AND e.state IN ('pending', 'parked'))
			  AND NOT EXISTS (
				SELECT 1 FROM outbox o
				WHERE o.execution_id = x.execution_id AND o.version < x.version AND o.fanned_out = 0)))
			ORDER BY x.next_attempt_at, x.id LIMIT `+strconv.Itoa(p.PerEndpoint)+`)`, p.Now.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("select due deliveries: %w", err)
	}
	type cand struct {
		ep      string
		due, id int64
		turn    int
	}
	cands, err := collect(rows, func(r *sql.Rows) (cand, error) {
		var c cand
		return c, r.Scan(&c.ep, &c.due, &c.id)
	})
	if err != nil {
		return nil, fmt.Errorf("select due deliveries: %w", err)
	}
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(strings.Compare(a.ep, b.ep), cmp.Compare(a.due, b.due), cmp.Compare(a.id, b.id))
	})
	taken := map[string]int{}
	kept := cands[:0]
	for _, c := range cands {
		if p.Busy[c.ep]+taken[c.ep] >= p.PerEndpoint {
			continue
		}
		// An endpoint's turn counts what it has in flight already, so that
		// a busy endpoint's backlog does not go before an idle endpoint.
		c.turn = p.Busy[c.ep] + taken[c.ep]
		taken[c.ep]++
		kept = append(kept, c)
	}
	slices.SortFunc(kept, func(a, b cand) int { return cmp.Or(cmp.Compare(a.turn, b.turn), cmp.Compare(a.id, b.id)) })
	ids := make([]int64, 0, min(len(kept), p.Limit))
	for _, c := range kept[:min(len(kept), p.Limit)] {
		ids = append(ids, c.id)
	}
	return ids, nil
}

// liveSecrets returns an endpoint's secrets that have not expired, the
// newest first.
func liveSecrets(ctx context.Context, tx querier, endpointID string, now time.Time) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT secret FROM webhook_secrets
		WHERE endpoint_id = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at DESC`,
		endpointID, now.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("load secrets: %w", err)
	}
	secrets, err := collect(rows, func(r *sql.Rows) (string, error) {
		var s string
		return s, r.Scan(&s)
	})
	if err != nil {
		return nil, fmt.Errorf("load secrets: %w", err)
	}
	return secrets, nil
}

// RecordAttempt implements [webhook.Store.RecordAttempt].
func (s *Store) RecordAttempt(ctx context.Context, o webhook.Outcome) error {
	return s.write(ctx, func(tx querier) error {
		a := o.Attempt
		at := a.At.UnixMilli()
		var next any
		if o.State == webhook.Pending {
			next = o.NextAttemptAt.UnixMilli()
		}
		var deliveredAt any
		if o.State == webhook.Delivered {
			deliveredAt = at
		}
		var endpointID string
		err := tx.QueryRowContext(ctx, `UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1,
			next_attempt_at = ?, lease_owner = NULL, last_status = ?, last_error = ?, updated_at = ?,
			delivered_at = COALESCE(?, delivered_at)
			WHERE id = ? AND lease_owner = ? RETURNING endpoint_id`,
			o.State, next, a.StatusCode, a.Error, at, deliveredAt, o.DeliveryID, o.LeaseOwner).Scan(&endpointID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("record attempt of delivery %d: %w", o.DeliveryID, webhook.ErrLeaseLost)
		}
		if err != nil {
			return fmt.Errorf("record attempt of delivery %d: %w", o.DeliveryID, err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO webhook_attempts
			(delivery_id, at, status_code, latency_ms, error, response) VALUES (?, ?, ?, ?, ?, ?)`,
			o.DeliveryID, at, a.StatusCode, a.Latency.Milliseconds(), a.Error, a.Response)
		if err != nil {
			return fmt.Errorf("insert attempt: %w", err)
		}
		if o.State == webhook.Pending {
			// The endpoint was disabled while the attempt ran: the retry waits.
			_, err = tx.ExecContext(ctx, `UPDATE webhook_deliveries SET state = 'parked', next_attempt_at = NULL
				WHERE id = ? AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = ? AND w.disabled_at IS NOT NULL)`,
				o.DeliveryID, endpointID)
			if err != nil {
				return fmt.Errorf("park delivery: %w", err)
			}
		}

		switch {
		case o.Disable != "":
			return disable(ctx, tx, endpointID, o.Disable, a.At)
		case !o.Failed:
			// Only a failing endpoint's row is written: the usual success
			// leaves the endpoint's page untouched.
			_, err = tx.ExecContext(ctx, `UPDATE webhook_endpoints SET failing_since = NULL
				WHERE id = ? AND failing_since IS NOT NULL`, endpointID)
			if err != nil {
				return fmt.Errorf("clear endpoint failure: %w", err)
			}
			return nil
		}
		var since int64
		err = tx.QueryRowContext(ctx, `UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, ?)
			WHERE id = ? RETURNING failing_since`, at, endpointID).Scan(&since)
		if err != nil {
			return fmt.Errorf("mark endpoint failing: %w", err)
		}
		if o.DisableAfter > 0 && at-since >= o.DisableAfter.Milliseconds() {
			reason := fmt.Sprintf("failing since %s", time.UnixMilli(since).UTC().Format(time.RFC3339))
			return disable(ctx, tx, endpointID, reason, a.At)
		}
		return nil
	})
}

// ReleaseDelivery implements [webhook.Store.ReleaseDelivery].
func (s *Store) ReleaseDelivery(ctx context.Context, id int64, owner string, next time.Time) error {
	return s.write(ctx, func(tx querier) error {
		_, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET lease_owner = NULL, next_attempt_at = ?
			WHERE id = ? AND lease_owner = ? AND state = 'pending'`, next.UnixMilli(), id, owner)
		return err
	})
}

// NextDeliveryDue implements [webhook.Store.NextDeliveryDue].
func (s *Store) NextDeliveryDue(ctx context.Context) (time.Time, bool, error) {
	db, err := s.read()
	if err != nil {
		return time.Time{}, false, err
	}
	var next sql.NullInt64
	// The earliest of each enabled endpoint's earliest, through the
	// per-endpoint index.
	err = db.QueryRowContext(ctx, `SELECT min((SELECT d.next_attempt_at FROM webhook_deliveries d
			WHERE d.endpoint_id = w.id AND d.state = 'pending' ORDER BY d.next_attempt_at LIMIT 1))
		FROM webhook_endpoints w WHERE w.disabled_at IS NULL`).Scan(&next)
	if err == nil && !next.Valid {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, s.closedOr(fmt.Errorf("select next delivery: %w", err))
	}
	return fromMillis(next), true, nil
}

// ListDeliveries implements [webhook.Store.ListDeliveries].
func (s *Store) ListDeliveries(ctx context.Context, f webhook.DeliveryFilter) ([]webhook.Delivery, error) {
	db, err := s.read()
	if err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	rows, err := db.QueryContext(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries d
		WHERE (?1 = '' OR d.state = ?1) AND (?2 = '' OR d.endpoint_id = ?2) AND (?3 = '' OR d.event_id = ?3)
		  AND (?5 = '' OR d.execution_id = ?5)
		ORDER BY d.id DESC LIMIT ?4`, f.State, f.EndpointID, f.EventID, limit, f.ExecutionID)
	if err != nil {
		return nil, s.closedOr(fmt.Errorf("select deliveries: %w", err))
	}
	return collect(rows, func(r *sql.Rows) (webhook.Delivery, error) { return scanDelivery(r) })
}

// Attempts implements [webhook.Store.Attempts].
func (s *Store) Attempts(ctx context.Context, deliveryID int64) ([]webhook.Attempt, error) {
	db, err := s.read()
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT delivery_id, at, status_code, latency_ms, error, response
		FROM webhook_attempts WHERE delivery_id = ? ORDER BY id`, deliveryID)
	if err != nil {
		return nil, s.closedOr(fmt.Errorf("select attempts: %w", err))
	}
	return collect(rows, func(r *sql.Rows) (webhook.Attempt, error) {
		var (
			a      webhook.Attempt
			at, ms int64
		)
		err := r.Scan(&a.DeliveryID, &at, &a.StatusCode, &ms, &a.Error, &a.Response)
		a.At, a.Latency = time.UnixMilli(at).UTC(), time.Duration(ms)*time.Millisecond
		return a, err
	})
}

// Replay implements [webhook.Store.Replay].
func (s *Store) Replay(ctx context.Context, endpointID string, eventIDs []string, now time.Time) (int, error) {
	var n int
	err := s.write(ctx, func(tx querier) error {
		n = 0 // a write may run again
		var disabled sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT disabled_at FROM webhook_endpoints WHERE id = ?`, endpointID).Scan(&disabled)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("replay to %.40s: %w", endpointID, webhook.ErrEndpointNotFound)
		}
		if err != nil {
			return fmt.Errorf("replay to %.40s: %w", endpointID, err)
		}
		state := webhook.Pending
		var next any = now.UnixMilli()
		if disabled.Valid {
			state, next = webhook.Parked, nil
		}
		for _, id := range eventIDs {
			res, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries
				(event_id, endpoint_id, execution_id, version, state, next_attempt_at, created_at, updated_at)
				SELECT o.id, ?2, o.execution_id, o.version, ?3, ?4, ?5, ?5 FROM outbox o WHERE o.id = ?1
				ON CONFLICT (event_id, endpoint_id) DO UPDATE SET state = excluded.state, attempts = 0,
					next_attempt_at = excluded.next_attempt_at, lease_owner = NULL, updated_at = excluded.updated_at`,
				id, endpointID, state, next, now.UnixMilli())
			if err != nil {
				return fmt.Errorf("replay %.40s: %w", id, err)
			}
			if k, _ := res.RowsAffected(); k == 0 {
				return fmt.Errorf("replay %.40s: %w", id, webhook.ErrEventNotFound)
			}
			n++
		}
		return nil
	})
	return n, err
}

// EventsSince implements [webhook.Store.EventsSince].
func (s *Store) EventsSince(ctx context.Context, since time.Time) ([]string, error) {
	db, err := s.read()
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT id FROM outbox WHERE created_at >= ? ORDER BY created_at, id`,
		ceilMillis(since))
	if err != nil {
		return nil, s.closedOr(fmt.Errorf("select events: %w", err))
	}
	return collect(rows, func(r *sql.Rows) (string, error) {
		var id string
		return id, r.Scan(&id)
	})
}

// InboxBegin implements [webhook.Inbox.InboxBegin].
func (s *Store) InboxBegin(ctx context.Context, e webhook.InboxEntry, leaseUntil time.Time) (webhook.InboxState, error) {
	var state webhook.InboxState
	err := s.write(ctx, func(tx querier) error {
		state = webhook.InboxNew // a write may run again
		now := e.ReceivedAt.UnixMilli()
		res, err := tx.ExecContext(ctx, `INSERT INTO webhook_inbox
			(event_id, execution_id, type, status, previous_status, version, received_at, lease_until)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (event_id) DO UPDATE SET lease_until = excluded.lease_until
			WHERE processed_at IS NULL AND (lease_until IS NULL OR lease_until <= ?)`,
			e.EventID, e.ExecutionID, e.Type, e.Status, e.PreviousStatus, e.Version, now, leaseUntil.UnixMilli(), now)
		if err != nil {
			return fmt.Errorf("record received event: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		var processed sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT processed_at FROM webhook_inbox WHERE event_id = ?`,
			e.EventID).Scan(&processed); err != nil {
			return fmt.Errorf("look up received event: %w", err)
		}
		state = webhook.InboxBusy
		if processed.Valid {
			state = webhook.InboxProcessed
		}
		return nil
	})
	return state, err
}

// InboxFinish implements [webhook.Inbox.InboxFinish].
func (s *Store) InboxFinish(ctx context.Context, eventID string, at time.Time) error {
	return s.write(ctx, func(tx querier) error {
		_, err := tx.ExecContext(ctx, `UPDATE webhook_inbox SET processed_at = ?, lease_until = NULL WHERE event_id = ?`,
			at.UnixMilli(), eventID)
		return err
	})
}

// InboxRelease implements [webhook.Inbox.InboxRelease].
func (s *Store) InboxRelease(ctx context.Context, eventID string) error {
	return s.write(ctx, func(tx querier) error {
		_, err := tx.ExecContext(ctx, `UPDATE webhook_inbox SET lease_until = NULL
			WHERE event_id = ? AND processed_at IS NULL`, eventID)
		return err
	})
}
