package execution_test

import (
	"context"
	"errors"
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

// funcProvider answers every call with the same function.
type funcProvider struct {
	answer func(ctx context.Context) (execution.Update, error)
}

func (f funcProvider) Name() string { return "func" }
func (f funcProvider) Submit(ctx context.Context, _ execution.Execution) (execution.Update, error) {
	return f.answer(ctx)
}
func (f funcProvider) Check(ctx context.Context, _ execution.Execution) (execution.Update, error) {
	return f.answer(ctx)
}

func withProvider(t *testing.T, cfg execution.Config, answer func(ctx context.Context) (execution.Update, error)) (*env, execution.Execution) {
	t.Helper()
	e := setup(t, cfg, nil)
	if err := e.engine.Register("bad.job", funcProvider{answer}); err != nil {
		t.Fatal(err)
	}
	return e, e.create("bad.job")
}

func TestPermanentErrorsAreMadeToFit(t *testing.T) {
	t.Parallel()
	var typedNil *execution.PermanentError
	tests := []struct {
		name     string
		err      error
		wantCode string
		wantLen  int
	}{
		{"a nil *PermanentError is a transient error", typedNil, "", 0},
		{"an empty code", &execution.PermanentError{Message: "x"}, execution.CodeProviderError, 1},
		{"a code with control characters", &execution.PermanentError{Code: "a\x1b[31m", Message: "x"}, execution.CodeProviderError, 1},
		{"a huge message", execution.Permanent("too_big", strings.Repeat("m", 10_000)), "too_big", 2000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, x := withProvider(t, execution.Config{}, func(context.Context) (execution.Update, error) {
				return execution.Update{}, tt.err
			})
			e.runOnce()
			got := e.get(x.ID)
			if tt.wantCode == "" {
				if got.Status != fsm.Pending || got.FailedAttempts != 1 {
					t.Fatalf("got %s with %d failed attempts", got.Status, got.FailedAttempts)
				}
				return
			}
			if got.Status != fsm.Failed || got.Error == nil || got.Error.Code != tt.wantCode || len(got.Error.Message) != tt.wantLen {
				t.Fatalf("got %s with %+v", got.Status, got.Error)
			}
		})
	}
}

func TestProviderThatIgnoresItsDeadlineIsAbandoned(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	e, x := withProvider(t, execution.Config{LeaseDuration: time.Second, ProviderTimeout: 20 * time.Millisecond},
		func(context.Context) (execution.Update, error) {
			<-block
			return execution.Update{Status: fsm.Completed}, nil
		})
	e.runOnce() // returns although the provider never does
	got := e.get(x.ID)
	if got.FailedAttempts != 1 || got.Status != fsm.Pending || got.LeaseOwner != "" {
		t.Fatalf("after an overrun: attempts %d, status %s, lease %q", got.FailedAttempts, got.Status, got.LeaseOwner)
	}
}

func TestMalformedProviderAnswerIsRecordedAndCounted(t *testing.T) {
	t.Parallel()
	e, x := withProvider(t, execution.Config{}, func(context.Context) (execution.Update, error) {
		return execution.Update{Status: fsm.Completed, Output: []byte(`[1,2]`)}, nil
	})
	e.runOnce()
	got := e.get(x.ID)
	if got.Status != fsm.Pending || got.FailedAttempts != 1 || got.Version != 1 {
		t.Fatalf("got %s v%d with %d failed attempts", got.Status, got.Version, got.FailedAttempts)
	}
	ign := e.ignored(x.ID)
	if len(ign) != 1 || ign[0].Reported != fsm.Completed || !strings.Contains(ign[0].Reason, "invalid output: must be a JSON object") {
		t.Fatalf("ignored = %+v", ign)
	}
}

func TestRetriesExhaustedCountsEveryAttempt(t *testing.T) {
	t.Parallel()
	e, x := withProvider(t, execution.Config{MaxFailedAttempts: 3}, func(context.Context) (execution.Update, error) {
		return execution.Update{}, errors.New(strings.Repeat("e", 5000))
	})
	got := e.runUntilDone(x.ID, 10)
	if got.FailedAttempts != 3 || got.Error.Code != execution.CodeRetriesExhausted || len(got.Error.Message) > 1100 {
		t.Fatalf("attempts %d, error %s (%d bytes)", got.FailedAttempts, got.Error.Code, len(got.Error.Message))
	}
}

func TestApplyRefusesFieldsThatDoNotFitTheState(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	x := e.create("servers.provision")
	huge := strings.Repeat("x", 3000)
	tests := []struct {
		name  string
		u     execution.Update
		field string
	}{
		{"output without completion", execution.Update{Output: []byte(`{"secret":"x"}`)}, "output"},
		{"output with running", execution.Update{Status: fsm.Running, Output: []byte(`{}`)}, "output"},
		{"error while pending", execution.Update{Error: &execution.Error{Code: "boom"}}, "error"},
		{"error with completion", execution.Update{Status: fsm.Completed, Error: &execution.Error{Code: "boom"}}, "error"},
		{"progress while pending", execution.Update{Progress: []byte(`{"p":1}`)}, "progress"},
		{"error without a code", execution.Update{Status: fsm.Failed, Error: &execution.Error{Message: "x"}}, "error code"},
		{"huge error message", execution.Update{Status: fsm.Failed, Error: &execution.Error{Code: "x", Message: huge}}, "error message"},
		{"huge reason", execution.Update{Status: fsm.Failed, Reason: huge}, "reason"},
		{"control characters in the reference", execution.Update{ExternalRef: "a\x00b"}, "external reference"},
		{"a status 100k long", execution.Update{Status: fsm.State(strings.Repeat("z", 100_000))}, "status"},
	}
	for _, tt := range tests {
		_, err := e.engine.Apply(e.ctx, x.ID, tt.u)
		var ve *execution.ValidationError
		if !errors.As(err, &ve) || ve.Field != tt.field || len(err.Error()) > 300 {
			t.Errorf("%s: err = %.300v, want a ValidationError on %q", tt.name, err, tt.field)
		}
	}
	if _, err := e.engine.Cancel(e.ctx, x.ID, huge); !errors.Is(err, execution.ErrInvalid) {
		t.Errorf("huge cancel reason: err = %v", err)
	}
	got := e.get(x.ID)
	if got.Version != 1 || got.Revision != 1 || got.Output != nil || got.Error != nil || got.ExternalRef != "" {
		t.Fatalf("refused updates changed the execution: %+v", got)
	}
}

// pausingStore runs a hook once, before the first Write after it is
// set: between a change's decision and its write.
type pausingStore struct {
	*sqlite.Store
	mu   sync.Mutex
	hook func()
}

func (s *pausingStore) Write(ctx context.Context, w execution.Write) error {
	s.mu.Lock()
	hook := s.hook
	s.hook = nil
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return s.Store.Write(ctx, w)
}

func TestApplyNeverUndoesANewerWrite(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, nil)
	ps := &pausingStore{Store: e.store}
	g := e.newEngine(ps, execution.Config{Clock: e.clock}, map[string]fake.Script{"servers.provision": provisionScript})
	x, err := g.Create(e.ctx, execution.CreateRequest{Action: "servers.provision"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Running}); err != nil {
		t.Fatal(err)
	}

	// Between the outer Apply's decision and its write, another update
	// lands.
	ps.mu.Lock()
	ps.hook = func() {
		if _, err := g.Apply(e.ctx, x.ID, execution.Update{ExternalRef: "ref-42"}); err != nil {
			t.Error(err)
		}
	}
	ps.mu.Unlock()
	if _, err := g.Apply(e.ctx, x.ID, execution.Update{Progress: []byte(`{"percent":10}`)}); err != nil {
		t.Fatal(err)
	}
	got := e.get(x.ID)
	// Create, Apply running (two transitions), the reference, the progress.
	if got.ExternalRef != "ref-42" || string(got.Progress) != `{"percent":10}` || got.Version != 4 || got.Revision != 4 {
		t.Fatalf("ref %q, progress %s, v%d r%d: one write undid the other", got.ExternalRef, got.Progress, got.Version, got.Revision)
	}
}

func TestHostileCreateAndRegister(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	var typedNil *fake.Provider
	if err := e.engine.Register("typed.nil", typedNil); !errors.Is(err, execution.ErrInvalid) {
		t.Errorf("typed-nil provider: err = %v", err)
	}
	if err := e.engine.Register("nil.provider", nil); !errors.Is(err, execution.ErrInvalid) {
		t.Errorf("nil provider: err = %v", err)
	}
	if _, err := e.engine.CreateTx(e.ctx, nil, execution.CreateRequest{Action: "servers.provision"}); !errors.Is(err, execution.ErrInvalid) {
		t.Errorf("nil tx: err = %v", err)
	}

	other, err := sqlite.Open(e.ctx, filepath.Join(t.TempDir(), "other.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx, err := other.DB().BeginTx(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := e.engine.CreateTx(e.ctx, tx, execution.CreateRequest{Action: "servers.provision"}); !errors.Is(err, execution.ErrInvalid) {
		t.Errorf("tx of another database: err = %v", err)
	}

	req := execution.CreateRequest{Action: "servers.provision", IdempotencyKey: "k", Input: []byte(`{"amount":1000,"amount":1}`)}
	if _, err := e.engine.Create(e.ctx, req); !errors.Is(err, execution.ErrInvalid) || !strings.Contains(err.Error(), `key "amount" appears twice`) {
		t.Errorf("duplicate keys: err = %v", err)
	}
	for _, d := range []time.Time{t0.Add(-time.Second), t0, time.Unix(1<<40, 0)} {
		if _, err := e.engine.Create(e.ctx, execution.CreateRequest{Action: "servers.provision", Deadline: d}); !errors.Is(err, execution.ErrInvalid) {
			t.Errorf("deadline %s: err = %v", d, err)
		}
	}
	// A deadline is part of the request an idempotency key stands for.
	req = execution.CreateRequest{Action: "servers.provision", IdempotencyKey: "d", Deadline: t0.Add(time.Hour)}
	if _, err := e.engine.Create(e.ctx, req); err != nil {
		t.Fatal(err)
	}
	req.Deadline = t0.Add(2 * time.Hour)
	if _, err := e.engine.Create(e.ctx, req); !errors.Is(err, execution.ErrIdempotencyConflict) {
		t.Errorf("same key, other deadline: err = %v", err)
	}
	// Sub-millisecond deadlines round up, never down to now.
	x, err := e.engine.Create(e.ctx, execution.CreateRequest{Action: "servers.provision", Deadline: t0.Add(time.Microsecond)})
	if err != nil || !x.Deadline.Equal(t0.Add(time.Millisecond)) {
		t.Errorf("deadline now+1µs = %s, %v", x.Deadline, err)
	}

	lower := "exe_" + strings.ToLower(x.ID[4:])
	if _, err := e.engine.Get(e.ctx, lower); !errors.Is(err, execution.ErrInvalid) {
		t.Errorf("lower-case id: err = %v", err)
	}
	if _, err := e.engine.List(e.ctx, execution.Filter{Action: "NOT AN ACTION"}); !errors.Is(err, execution.ErrInvalid) {
		t.Errorf("bad action filter: err = %v", err)
	}
}

func TestConfigErrorsAreTyped(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, nil)
	for _, cfg := range []execution.Config{
		{LeaseDuration: -time.Second},
		{LeaseDuration: time.Nanosecond},
		{Workers: -1},
	} {
		if _, err := execution.New(e.store, cfg); !errors.Is(err, execution.ErrInvalid) {
			t.Errorf("%+v: err = %v", cfg, err)
		}
	}
	if _, err := execution.New(e.store, execution.Config{LeaseDuration: -time.Second}); !strings.Contains(err.Error(), "must not be negative") {
		t.Errorf("negative lease: %v", err)
	}
}

func TestStartOnAClosedStoreFails(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, nil)
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.engine.Start(e.ctx); !errors.Is(err, execution.ErrClosed) {
		t.Fatalf("Start = %v", err)
	}
	if err := e.engine.Start(context.Background()); !errors.Is(err, execution.ErrClosed) {
		t.Fatalf("second Start = %v", err)
	}
}

func TestEventsOverTheCapAreRefusedWhenWritten(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	x := e.create("servers.provision")
	limit := len(e.events(x.ID)[0].Payload) + 10 // room for this action's events, not a longer one's
	long := "servers.provision-with-a-much-longer-name"
	g := e.newEngine(e.store, execution.Config{Clock: e.clock, MaxEventBytes: limit},
		map[string]fake.Script{"servers.provision": provisionScript, long: provisionScript})

	if _, err := g.Create(e.ctx, execution.CreateRequest{Action: "servers.provision"}); err != nil {
		t.Fatalf("an event within the cap: %v", err)
	}
	_, err := g.Create(e.ctx, execution.CreateRequest{Action: long})
	var ve *execution.ValidationError
	if !errors.As(err, &ve) || ve.Field != "event" {
		t.Fatalf("Create = %v, want a ValidationError on event", err)
	}
	page, _ := e.engine.List(e.ctx, execution.Filter{Action: long})
	if len(page.Executions) != 0 {
		t.Fatalf("%d executions stored", len(page.Executions))
	}
}
