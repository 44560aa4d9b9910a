// Package sqlite is execkit's [execution.Store] on SQLite, through the
// pure-Go driver modernc.org/sqlite: no cgo.
//
// One file holds everything. The store keeps one writer connection, whose
// transactions begin IMMEDIATE so that writers of other processes queue on
// the busy timeout instead of failing, and a pool of read-only
// connections; WAL lets the readers run while a write is in progress.
// Several processes may open the same file at once. Within a process,
// writes that arrive together are committed together, each still
// succeeding or failing on its own (see group.go).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/execkit/execkit/execution"
)

// Options tunes [Open]. The zero value of every field selects the default
// named in its comment.
type Options struct {
	// SyncFull sets synchronous=FULL, which makes every commit durable
	// through a power loss at the cost of an fsync per commit. The default,
	// NORMAL, is durable through a crash of the process; in WAL mode a
	// power loss may lose the last commits but never corrupts the file.
	SyncFull bool
	// BusyTimeout is how long a connection waits for another writer's lock
	// before giving up. Zero means 10 seconds.
	BusyTimeout time.Duration
	// Readers is the size of the read pool. Zero means 4.
	Readers int
	// Logger receives the store's logs. Nil discards them.
	Logger *slog.Logger
	// MustExist refuses to create the file: Open fails with an error
	// wrapping [ErrNoDatabase] if it is missing.
	MustExist bool
	// ReadOnly opens the file for reading only: no migration, no write
	// lock taken, and every write fails. The file must exist and be at
	// this build's schema version; an older one fails with an error
	// wrapping [ErrSchemaTooOld].
	ReadOnly bool
}

// ErrNoDatabase is returned by [Open] with MustExist for a missing file.
var ErrNoDatabase = errors.New("database file does not exist")

// Store is an [execution.Store] on one SQLite file. It is safe for
// concurrent use.
type Store struct {
	w      *sql.DB // one connection, immediate transactions
	r      *sql.DB // read-only pool
	file   string  // the main database file, as SQLite names it
	wstmts *stmtCache
	rstmts *stmtCache
	log    *slog.Logger
	closed atomic.Bool
	group  group // writes waiting for a transaction

	// beforeCommit, when set by a test, runs inside every write
	// transaction just before it commits.
	beforeCommit func(context.Context)
}

var _ execution.Store = (*Store)(nil)

// Open opens or creates the SQLite file at path and brings its schema up
// to date. It fails with an error wrapping [ErrSchemaTooNew] for a file
// written by a newer version of execkit.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?\x00") || strings.HasPrefix(path, ":memory:") || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("open store: path %q must be a plain file path", path)
	}
	if opts.MustExist || opts.ReadOnly {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open store %s: %w", path, ErrNoDatabase)
		}
	}
	if opts.BusyTimeout == 0 {
		opts.BusyTimeout = 10 * time.Second
	}
	if opts.Readers == 0 {
		opts.Readers = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	sync := "NORMAL"
	if opts.SyncFull {
		sync = "FULL"
	}

	// _busy_timeout, unlike a busy_timeout _pragma, is applied before
	// anything else, auto_vacuum included: opening a file another process
	// is writing then waits instead of failing.
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous("+sync+")")
	writerQuery := url.Values{"_pragma": append([]string{"journal_mode(WAL)"}, q["_pragma"]...),
		"_busy_timeout": q["_busy_timeout"]}
	writerQuery.Set("_txlock", "immediate")
	writerQuery.Set("_auto_vacuum", "incremental")
	readerQuery := url.Values{"_pragma": append([]string{"query_only(1)"}, q["_pragma"]...),
		"_busy_timeout": q["_busy_timeout"]}

	if opts.ReadOnly {
		return openReadOnly(ctx, path, readerQuery, opts)
	}
	w, err := sql.Open("sqlite", path+"?"+writerQuery.Encode())
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}

	var file string
	if err := w.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&file); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: read file name: %w", path, err)
	}

	r, err := sql.Open("sqlite", path+"?"+readerQuery.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: readers: %w", path, err)
	}
	r.SetMaxOpenConns(opts.Readers)
	r.SetMaxIdleConns(opts.Readers)
	return &Store{w: w, r: r, file: file, log: opts.Logger, wstmts: newStmtCache(w), rstmts: newStmtCache(r)}, nil
}

// openReadOnly opens only the read pool, and serves writes from it too,
// so that they fail.
func openReadOnly(ctx context.Context, path string, q url.Values, opts Options) (*Store, error) {
	r, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r.SetMaxOpenConns(opts.Readers)
	v, err := userVersion(ctx, r)
	if err == nil {
		switch want := SchemaVersion(); {
		case v > want:
			err = fmt.Errorf("%w: the file has version %d, this build knows up to %d", ErrSchemaTooNew, v, want)
		case v < want:
			err = fmt.Errorf("%w: the file has version %d, this build needs %d", ErrSchemaTooOld, v, want)
		}
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{w: r, r: r, log: opts.Logger, wstmts: newStmtCache(r), rstmts: newStmtCache(r)}, nil
}

// DB returns the writer connection pool, so that a host can run its own
// statements and begin the transactions it passes to
// [execution.Engine.CreateTx]. Its transactions begin IMMEDIATE. The pool
// has one connection: hold a transaction only as long as needed, since
// the engine waits for it.
func (s *Store) DB() *sql.DB { return s.w }

// Close closes the file. It is safe to call more than once.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return errors.Join(s.wstmts.close(), s.rstmts.close(), s.r.Close(), s.w.Close())
}

// closedOr returns ErrClosed if the store was closed while a call was in
// flight, so that callers see one error for it whatever step failed.
func (s *Store) closedOr(err error) error {
	if err != nil && s.closed.Load() {
		return fmt.Errorf("%w (%v)", execution.ErrClosed, err)
	}
	return err
}

// read returns the pool for reads, or ErrClosed.
func (s *Store) read() (*sql.DB, error) {
	if s.closed.Load() {
		return nil, execution.ErrClosed
	}
	return s.r, nil
}

func isBusy(err error) bool {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	code := se.Code() & 0xff
	return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
}

func isUniqueViolation(err error) bool {
	var se *msqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

// millis stores t as Unix milliseconds, and the zero time as NULL.
func millis(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

// ceilMillis is t in Unix milliseconds, rounded up, so that a bound finer
// than a millisecond compares right with stored times.
func ceilMillis(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.Sub(time.UnixMilli(ms)) > 0 {
		ms++
	}
	return ms
}

// fromMillis reads a time stored by millis, in UTC.
func fromMillis(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMilli(v.Int64).UTC()
}

// nullString stores "" as NULL.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// nullJSON stores a nil document as NULL.
func nullJSON(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}
