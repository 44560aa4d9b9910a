package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// querier is what statements run on: a transaction, or one wrapped to
// reuse prepared statements.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// stmtCache prepares each statement text once per pool, so that SQLite
// parses it once instead of on every call.
type stmtCache struct {
	db     *sql.DB
	mu     sync.Mutex
	m      map[string]*sql.Stmt
	wanted map[string]bool
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: map[string]*sql.Stmt{}, wanted: map[string]bool{}}
}

// lookup returns the prepared statement, or nil after noting that it is
// wanted. Inside a transaction on the one writer connection a statement
// cannot be prepared on the pool (that needs the connection the
// transaction holds), so it is prepared after the transaction ends.
func (c *stmtCache) lookup(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.m[query]
	if !ok {
		c.wanted[query] = true
	}
	return st
}

// prepareWanted prepares the statements noted as wanted. It must run
// outside any transaction of the pool.
func (c *stmtCache) prepareWanted(ctx context.Context) {
	c.mu.Lock()
	var queries []string
	for q := range c.wanted {
		queries = append(queries, q)
	}
	clear(c.wanted)
	c.mu.Unlock()
	for _, q := range queries {
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			continue // it runs unprepared, and is tried again when next wanted
		}
		c.mu.Lock()
		if old, ok := c.m[q]; ok {
			old.Close()
		}
		c.m[q] = st
		c.mu.Unlock()
	}
}

func (c *stmtCache) get(ctx context.Context, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.m[query] = st
	return st, nil
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	c.m = map[string]*sql.Stmt{}
	return errors.Join(errs...)
}

// preparedTx runs a write transaction's statements through the cache,
// all under its own context: the one a statement is given is ignored.
type preparedTx struct {
	ctx   context.Context
	tx    *sql.Tx
	cache *stmtCache
}

func (p preparedTx) stmt(ctx context.Context, query string) *sql.Stmt {
	st := p.cache.lookup(query)
	if st == nil {
		return nil
	}
	return p.tx.StmtContext(ctx, st)
}

func (p preparedTx) ExecContext(_ context.Context, query string, args ...any) (sql.Result, error) {
	ctx := p.ctx
	if st := p.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.tx.ExecContext(ctx, query, args...)
}

func (p preparedTx) QueryContext(_ context.Context, query string, args ...any) (*sql.Rows, error) {
	ctx := p.ctx
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.tx.QueryContext(ctx, query, args...)
}

func (p preparedTx) QueryRowContext(_ context.Context, query string, args ...any) *sql.Row {
	ctx := p.ctx
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.tx.QueryRowContext(ctx, query, args...)
}
