package execution_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
)

// t0 is where every fake clock starts.
var t0 = time.Date(2026, 5, 30, 12, 0, 0, 0, time.UTC)

// env is one engine on a fresh SQLite file, with a fake clock and a fake
// provider registered for the actions the test names.
type env struct {
	t        *testing.T
	ctx      context.Context
	path     string
	store    *sqlite.Store
	clock    *fake.Clock
	provider *fake.Provider
	engine   *execution.Engine
	logs     *logRecorder
}

// setup opens a store in a temp dir and an engine on it. cfg's Clock and
// Logger are filled in unless set.
func setup(t *testing.T, cfg execution.Config, scripts map[string]fake.Script) *env {
	t.Helper()
	e := &env{t: t, ctx: context.Background(), path: filepath.Join(t.TempDir(), "execkit.db"), logs: &logRecorder{}}
	var err error
	e.store, err = sqlite.Open(e.ctx, e.path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	e.clock = fake.NewClock(t0)
	if cfg.Clock == nil {
		cfg.Clock = e.clock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(e.logs)
	}
	e.provider = fake.New(cfg.Clock)
	e.engine = e.newEngine(e.store, cfg, scripts)
	return e
}

// newEngine returns another engine on store, sharing the env's provider.
func (e *env) newEngine(store execution.Store, cfg execution.Config, scripts map[string]fake.Script) *execution.Engine {
	e.t.Helper()
	g, err := execution.New(store, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	for action, s := range scripts {
		e.provider.Script(action, s)
		if err := g.Register(action, e.provider); err != nil {
			e.t.Fatal(err)
		}
	}
	return g
}

func (e *env) create(action string) execution.Execution {
	e.t.Helper()
	x, err := e.engine.Create(e.ctx, execution.CreateRequest{Action: action, Input: []byte(`{"n":1}`)})
	if err != nil {
		e.t.Fatal(err)
	}
	return x
}

func (e *env) get(id string) execution.Execution {
	e.t.Helper()
	x, err := e.engine.Get(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return x
}

// runOnce runs one pass of the engine and returns how many executions it
// processed.
func (e *env) runOnce() int {
	e.t.Helper()
	n, err := e.engine.RunOnce(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// runUntilDone alternates passes and clock moves to the next check until
// the execution is terminal, and returns it.
func (e *env) runUntilDone(id string, maxPasses int) execution.Execution {
	e.t.Helper()
	for range maxPasses {
		e.runOnce()
		x := e.get(id)
		if x.Done() {
			return x
		}
		if x.NextCheckAt.After(e.clock.Now()) {
			e.clock.Set(x.NextCheckAt)
		}
	}
	e.t.Fatalf("execution %s not terminal after %d passes", id, maxPasses)
	return execution.Execution{}
}

func (e *env) history(id string) []execution.Transition {
	e.t.Helper()
	h, err := e.engine.History(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

func (e *env) events(id string) []execution.Event {
	e.t.Helper()
	evs, err := e.engine.Events(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func (e *env) ignored(id string) []execution.IgnoredUpdate {
	e.t.Helper()
	u, err := e.store.IgnoredUpdates(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// path returns the (from, to, event) triples of a history, as "from>to:event".
func path(h []execution.Transition) string {
	var parts []string
	for _, t := range h {
		parts = append(parts, string(t.From)+">"+string(t.To)+":"+string(t.Event))
	}
	return strings.Join(parts, " ")
}

// checkHistory asserts that a history is a legal path through the graph
// with consecutive versions, and that there is exactly one event per
// transition with the matching version.
func checkHistory(t *testing.T, h []execution.Transition, evs []execution.Event) {
	t.Helper()
	if len(h) == 0 || h[0].Event != execution.EventCreate || h[0].To != fsm.Pending || h[0].Version != 1 {
		t.Fatalf("history does not start with creation: %s", path(h))
	}
	for i, tr := range h[1:] {
		if tr.Version != int64(i+2) {
			t.Fatalf("transition %d has version %d: %s", i+1, tr.Version, path(h))
		}
		to, err := fsm.Apply(context.Background(), tr.From, tr.Event)
		if err != nil || to != tr.To || tr.From != h[i].To {
			t.Fatalf("illegal step %s>%s:%s in %s", tr.From, tr.To, tr.Event, path(h))
		}
	}
	if len(evs) != len(h) {
		t.Fatalf("%d events for %d transitions", len(evs), len(h))
	}
	for i, ev := range evs {
		if ev.Version != h[i].Version {
			t.Fatalf("event %d has version %d, transition has %d", i, ev.Version, h[i].Version)
		}
	}
}

// logRecorder is a slog.Handler that keeps records of level Warn and
// above.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelWarn }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// messages returns "level message attrs" for each record.
func (l *logRecorder) messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		s := r.Level.String() + " " + r.Message
		r.Attrs(func(a slog.Attr) bool {
			s += " " + a.String()
			return true
		})
		out = append(out, s)
	}
	return out
}

// openStore opens a second store on the same file, as another process
// would.
func openStore(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func slogOf(h slog.Handler) *slog.Logger { return slog.New(h) }
