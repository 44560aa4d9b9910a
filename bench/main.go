// Bench measures execkit beside peer libraries on the same machine, in one
// run, and prints one table. See BENCHMARKS.md.
//
//	go run . -n 2000
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"maragu.dev/goqite"
	_ "modernc.org/sqlite"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
	"github.com/execkit/execkit/webhook"
)

type row struct {
	name, unit string
	value      float64
	note       string
}

func main() {
	n := flag.Int("n", 2000, "executions, jobs, messages, transitions and deliveries per measurement")
	small := flag.Int("scale-small", 10_000, "stored executions for the small scaling point")
	large := flag.Int("scale-large", 1_000_000, "stored executions for the large scaling point (0 skips it)")
	only := flag.String("only", "", "run only the measurements whose name contains this text")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	blockprofile := flag.String("blockprofile", "", "write a profile of where goroutines waited to this file")
	flag.StringVar(&memprofile, "memprofile", "", "write a heap profile to this file once the lifecycle measurement's executions are done")
	flag.Parse()
	if *blockprofile != "" {
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
		defer func() {
			f, err := os.Create(*blockprofile)
			check(err)
			check(pprof.Lookup("block").WriteTo(f, 0))
			check(f.Close())
		}()
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}

	dir, err := os.MkdirTemp("", "execkit-bench")
	check(err)
	defer os.RemoveAll(dir)
	ctx := context.Background()

	var rows []row
	add := func(r row, err error) {
		check(err)
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "  %-46s %12.0f %s\n", r.name, r.value, r.unit)
	}
	type measurement struct {
		key string
		run func() error
	}
	one := func(f func() (row, error)) func() error {
		return func() error { r, err := f(); add(r, err); return nil }
	}
	ms := []measurement{
		{"lifecycle", one(func() (row, error) { return execkitLifecycle(ctx, filepath.Join(dir, "lifecycle.db"), *n) })},
		{"transitions", one(func() (row, error) { return execkitTransitions(ctx, filepath.Join(dir, "apply.db"), *n) })},
		{"river", one(func() (row, error) { return riverJobs(ctx, filepath.Join(dir, "river.db"), *n) })},
		{"goqite", one(func() (row, error) { return goqiteMessages(ctx, filepath.Join(dir, "goqite.db"), *n) })},
		{"raw1", one(func() (row, error) { return rawTransitions(ctx, filepath.Join(dir, "raw1.db"), *n, 1) })},
		{"raw100", one(func() (row, error) { return rawTransitions(ctx, filepath.Join(dir, "raw100.db"), *n, 100) })},
		{"webhook", one(func() (row, error) { return webhookDeliveries(ctx, filepath.Join(dir, "hooks.db"), *n) })},
	}
	for _, size := range []int{*small, *large} {
		if size == 0 {
			continue
		}
		ms = append(ms, measurement{fmt.Sprintf("scale%d", size), func() error {
			claim, get, err := scaling(ctx, filepath.Join(dir, fmt.Sprintf("scale%d.db", size)), size)
			add(claim, err)
			add(get, err)
			return nil
		}})
	}
	fmt.Fprintf(os.Stderr, "measuring with n=%d ...\n", *n)
	for _, m := range ms {
		if strings.Contains(m.key, *only) {
			check(m.run())
		}
	}
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	fmt.Fprintf(os.Stderr, "  Go heap in use %d MB, Go runtime total %d MB\n", mem.HeapInuse>>20, mem.Sys>>20)
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	rows = append(rows, row{name: "peak RSS of this run", unit: "MB", value: float64(ru.Maxrss) / 1024})

	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "measurement\tvalue\tunit\t")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\n", r.name, r.value, r.unit, r.note)
	}
	w.Flush()
}

var memprofile string

// writeHeapProfile writes the heap profile -memprofile asks for.
func writeHeapProfile() {
	if memprofile == "" {
		return
	}
	f, err := os.Create(memprofile)
	check(err)
	runtime.GC()
	check(pprof.Lookup("heap").WriteTo(f, 0))
	check(f.Close())
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// execkitLifecycle creates n executions and drives each through accept,
// start and complete with a provider that answers at once.
func execkitLifecycle(ctx context.Context, path string, n int) (row, error) {
	store, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		return row{}, err
	}
	defer store.Close()
	engine, err := execution.New(store, execution.Config{PollInterval: 5 * time.Millisecond, Workers: 16})
	if err != nil {
		return row{}, err
	}
	if err := engine.Register("servers.provision", instant{}); err != nil {
		return row{}, err
	}
	start := time.Now()
	if err := engine.Start(ctx); err != nil {
		return row{}, err
	}
	defer engine.Stop(ctx)
	var last execution.Execution
	for range n {
		if last, err = engine.Create(ctx, execution.CreateRequest{Action: "servers.provision"}); err != nil {
			return row{}, err
		}
	}
	if err := waitFor(func() (bool, error) {
		page, err := engine.List(ctx, execution.Filter{Status: "completed", Limit: 1})
		if err != nil || len(page.Executions) == 0 {
			return false, err
		}
		done, err := countStatus(store.DB(), "completed")
		return done == n, err
	}); err != nil {
		return row{}, err
	}
	_ = last
	writeHeapProfile()
	return row{name: "execkit lifecycle (3 transitions + events each)", unit: "executions/s",
		value: float64(n) / time.Since(start).Seconds()}, nil
}

// execkitTransitions creates n executions, then applies one pushed update
// (pending → accepted) to each from 16 concurrent callers, as a provider's
// webhooks would: single transitions, each a conditional write with its
// history row and outbox event. Only the updates are timed.
func execkitTransitions(ctx context.Context, path string, n int) (row, error) {
	store, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		return row{}, err
	}
	defer store.Close()
	engine, err := execution.New(store, execution.Config{})
	if err != nil {
		return row{}, err
	}
	if err := engine.Register("servers.provision", fake.New(nil)); err != nil {
		return row{}, err
	}
	ids := make(chan string, n)
	for range n {
		e, err := engine.Create(ctx, execution.CreateRequest{Action: "servers.provision"})
		if err != nil {
			return row{}, err
		}
		ids <- e.ID
	}
	close(ids)
	const callers = 16
	errs := make(chan error, callers)
	start := time.Now()
	for range callers {
		go func() {
			for id := range ids {
				if _, err := engine.Apply(ctx, id, execution.Update{Status: fsm.Accepted}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range callers {
		if err := <-errs; err != nil {
			return row{}, err
		}
	}
	elapsed := time.Since(start)
	if done, err := countStatus(store.DB(), "accepted"); err != nil || done != n {
		return row{}, fmt.Errorf("%d accepted of %d: %v", done, n, err)
	}
	return row{name: "execkit single transitions (Apply, 16 callers)", unit: "transitions/s",
		value: float64(n) / elapsed.Seconds()}, nil
}

// instant is a provider that completes every submission at once and keeps
// nothing, so that a run of a million executions measures execkit's
// memory rather than a test double's record of every call (fake.Provider
// keeps one).
type instant struct{}

func (instant) Name() string { return "instant" }

func (instant) Submit(context.Context, execution.Execution) (execution.Update, error) {
	return execution.Update{Status: fsm.Completed, Output: json.RawMessage(`{}`)}, nil
}

func (instant) Check(context.Context, execution.Execution) (execution.Update, error) {
	return execution.Update{Status: fsm.Completed, Output: json.RawMessage(`{}`)}, nil
}

func countStatus(db *sql.DB, status string) (int, error) {
	var n int
	err := db.QueryRow(`SELECT count(*) FROM executions WHERE status = ?`, status).Scan(&n)
	return n, err
}

func waitFor(done func() (bool, error)) error {
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return errors.New("timed out")
}

// noopArgs is River's job.
type noopArgs struct{}

func (noopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
}

func (noopWorker) Work(context.Context, *river.Job[noopArgs]) error { return nil }

// riverJobs inserts n no-op jobs one by one and works them, as River's
// SQLite driver advises: WAL and one open connection.
func riverJobs(ctx context.Context, path string, n int) (row, error) {
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return row{}, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	driver := riversqlite.New(db)
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return row{}, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return row{}, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{})
	client, err := river.NewClient(driver, &river.Config{
		Queues:        map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 16}},
		Workers:       workers,
		FetchCooldown: time.Millisecond,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return row{}, err
	}
	completed, cancel := client.Subscribe(river.EventKindJobCompleted)
	defer cancel()
	start := time.Now()
	if err := client.Start(ctx); err != nil {
		return row{}, err
	}
	defer client.Stop(ctx)
	var done atomic.Int32
	go func() {
		for range completed {
			done.Add(1)
		}
	}()
	for range n {
		if _, err := client.Insert(ctx, noopArgs{}, nil); err != nil {
			return row{}, err
		}
	}
	if err := waitFor(func() (bool, error) { return int(done.Load()) >= n, nil }); err != nil {
		return row{}, err
	}
	return row{name: "River (riversqlite, 1 connection, 1 ms cooldown)", unit: "jobs/s",
		value: float64(n) / time.Since(start).Seconds()}, nil
}

// goqiteMessages sends n messages, then receives and deletes them.
func goqiteMessages(ctx context.Context, path string, n int) (row, error) {
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return row{}, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(goqiteSchema); err != nil {
		return row{}, err
	}
	q := goqite.New(goqite.NewOpts{DB: db, Name: "bench"})
	start := time.Now()
	for range n {
		if err := q.Send(ctx, goqite.Message{Body: []byte("x")}); err != nil {
			return row{}, err
		}
	}
	for range n {
		m, err := q.Receive(ctx)
		if err != nil || m == nil {
			return row{}, fmt.Errorf("receive: %v", err)
		}
		if err := q.Delete(ctx, m.ID); err != nil {
			return row{}, err
		}
	}
	return row{name: "goqite (send, receive, delete)", unit: "messages/s", value: float64(n) / time.Since(start).Seconds()}, nil
}

// goqiteSchema is the table goqite reads, as its documentation gives it.
const goqiteSchema = `create table goqite (
  id text primary key default ('m_' || lower(hex(randomblob(16)))),
  created text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  updated text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  queue text not null,
  body blob not null,
  timeout text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  received integer not null default 0,
  priority integer not null default 0
) strict;
create trigger goqite_updated_timestamp after update on goqite begin
  update goqite set updated = strftime('%Y-%m-%dT%H:%M:%fZ') where id = old.id;
end;
create index goqite_queue_priority_created_idx on goqite (queue, priority desc, created);`

// rawTransitions commits n transactions of one execkit transition's shape
// (conditional update, history insert, outbox insert) on execkit's own
// schema, batch of them per commit: the ceiling execkit works against.
func rawTransitions(ctx context.Context, path string, n, batch int) (row, error) {
	store, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		return row{}, err
	}
	defer store.Close()
	db := store.DB()
	if _, err := db.Exec(`INSERT INTO executions (id, action, provider, owner, status, version, revision, input,
		request_hash, created_at, updated_at, next_check_at) VALUES ('exe_raw', 'a', 'p', '', 'running', 1, 1, '{}', 'h', 0, 0, 0)`); err != nil {
		return row{}, err
	}
	start := time.Now()
	version := int64(1)
	for done := 0; done < n; {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return row{}, err
		}
		for range min(batch, n-done) {
			res, err := tx.Exec(`UPDATE executions SET version = ?, revision = ?, updated_at = ?
				WHERE id = 'exe_raw' AND status = 'running' AND version = ?`, version+1, version+1, version, version)
			if err != nil {
				return row{}, err
			}
			if k, _ := res.RowsAffected(); k != 1 {
				return row{}, errors.New("conditional update missed")
			}
			version++
			if _, err := tx.Exec(`INSERT INTO transitions (execution_id, version, from_status, to_status, event, reason, at)
				VALUES ('exe_raw', ?, 'running', 'running', 'progress', '', 0)`, version); err != nil {
				return row{}, err
			}
			if _, err := tx.Exec(`INSERT INTO outbox (id, execution_id, type, version, payload, created_at)
				VALUES (?, 'exe_raw', 'execution.progress', ?, ?, 0)`, fmt.Sprintf("evt_%d", version), version,
				[]byte(`{"id":"evt","event":"execution.progress"}`)); err != nil {
				return row{}, err
			}
			done++
		}
		if err := tx.Commit(); err != nil {
			return row{}, err
		}
	}
	name := "raw SQLite transition, one per commit"
	if batch > 1 {
		name = fmt.Sprintf("raw SQLite transition, %d per commit", batch)
	}
	return row{name: name, unit: "transitions/s", value: float64(n) / time.Since(start).Seconds()}, nil
}

// webhookDeliveries delivers n events to a loopback receiver that
// verifies every signature.
func webhookDeliveries(ctx context.Context, path string, n int) (row, error) {
	store, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		return row{}, err
	}
	defer store.Close()
	secret := webhook.NewSecret()
	var got, bad atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := webhook.Verify(r.Header, body, time.Now(), 0, secret); err != nil {
			bad.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	engine, err := execution.New(store, execution.Config{})
	if err != nil {
		return row{}, err
	}
	if err := engine.Register("servers.provision", fake.New(nil)); err != nil {
		return row{}, err
	}
	for range n {
		if _, err := engine.Create(ctx, execution.CreateRequest{Action: "servers.provision"}); err != nil {
			return row{}, err
		}
	}
	d, err := webhook.NewDispatcher(webhook.Config{Store: store, Policy: webhook.AddressPolicy{AllowLoopback: true},
		Workers: 32, PerEndpoint: 32, PollInterval: 5 * time.Millisecond})
	if err != nil {
		return row{}, err
	}
	if _, _, err := d.AddEndpoint(ctx, webhook.EndpointConfig{URL: srv.URL, Secret: secret}); err != nil {
		return row{}, err
	}
	start := time.Now()
	if err := d.Start(ctx); err != nil {
		return row{}, err
	}
	defer d.Stop(ctx)
	if err := waitFor(func() (bool, error) { return int(got.Load()) >= n, nil }); err != nil {
		return row{}, err
	}
	if bad.Load() > 0 {
		return row{}, fmt.Errorf("%d deliveries failed verification", bad.Load())
	}
	return row{name: "webhook deliveries to a verifying loopback receiver", unit: "deliveries/s",
		value: float64(n) / time.Since(start).Seconds()}, nil
}

// scaling measures a claim pass and a GET with size stored executions.
func scaling(ctx context.Context, path string, size int) (row, row, error) {
	store, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		return row{}, row{}, err
	}
	defer store.Close()
	// Terminal history, written straight in SQL so that a million builds
	// in seconds; 100 live executions are due.
	if _, err := store.DB().Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
		INSERT INTO executions (id, action, provider, owner, status, version, revision, input, request_hash,
			created_at, updated_at, completed_at, next_check_at)
		SELECT printf('exe_0%025d', i), 'servers.provision', 'fake', 'cus_' || (i % 100), CASE WHEN i <= 100 THEN 'running' ELSE 'completed' END,
			4, 4, '{}', 'h', i, i, CASE WHEN i <= 100 THEN NULL ELSE i END, CASE WHEN i <= 100 THEN 0 END FROM n`, size); err != nil {
		return row{}, row{}, err
	}
	engine, err := execution.New(store, execution.Config{})
	if err != nil {
		return row{}, row{}, err
	}
	const ops = 2000
	start := time.Now()
	for i := range ops {
		now := time.UnixMilli(int64(10 + i))
		claimed, err := store.Claim(ctx, execution.ClaimParams{Now: now, Until: now.Add(time.Hour), Owner: "bench",
			Actions: []string{"servers.provision"}, Limit: 8})
		if err != nil {
			return row{}, row{}, err
		}
		for _, c := range claimed {
			if err := store.Release(ctx, c.ID, "bench", time.UnixMilli(0)); err != nil {
				return row{}, row{}, err
			}
		}
	}
	claimCost := time.Since(start) / ops
	h, err := httpapi.NewHandler(httpapi.Config{Engine: engine, Authenticate: func(r *http.Request) (string, error) {
		return r.Header.Get("X-Owner"), nil
	}})
	if err != nil {
		return row{}, row{}, err
	}
	start = time.Now()
	for i := range ops {
		k := 101 + (i*7919)%(size-100)
		req := httptest.NewRequest("GET", fmt.Sprintf("/executions/exe_0%025d", k), nil)
		req.Header.Set("X-Owner", fmt.Sprintf("cus_%d", k%100))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			return row{}, row{}, fmt.Errorf("GET: %d %s", w.Code, strings.TrimSpace(w.Body.String()))
		}
	}
	getCost := time.Since(start) / ops
	label := fmt.Sprintf("%d stored", size)
	return row{name: "claim 8 due and release, " + label, unit: "µs/op", value: float64(claimCost.Microseconds())},
		row{name: "GET /executions/{id}, " + label, unit: "µs/op", value: float64(getCost.Microseconds())}, nil
}
