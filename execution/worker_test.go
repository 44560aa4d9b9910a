package execution_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/fake"
)

func TestTransientFailuresBackOffExponentially(t *testing.T) {
	t.Parallel()
	scripts := map[string]fake.Script{"domains.register": {TransientErrors: 3,
		Steps: []fake.Step{fake.Complete(0, `{"domain":"example.org"}`)}}}
	e := setup(t, execution.Config{MinBackoff: time.Second, MaxBackoff: time.Minute}, scripts)
	x := e.create("domains.register")

	// Retry n waits between half and all of 1s, 2s, 4s.
	for attempt, full := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		now := e.clock.Now()
		e.runOnce()
		got := e.get(x.ID)
		wait := got.NextCheckAt.Sub(now)
		if got.FailedAttempts != attempt+1 || wait < full/2 || wait > full || got.Status != fsm.Pending {
			t.Fatalf("after failure %d: attempts %d, wait %s (want %s..%s), status %s",
				attempt+1, got.FailedAttempts, wait, full/2, full, got.Status)
		}
		if got.Checks != 0 || !got.SubmittedAt.IsZero() {
			t.Fatalf("failures counted as checks: %d, submitted %s", got.Checks, got.SubmittedAt)
		}
		e.clock.Set(got.NextCheckAt)
	}
	e.runOnce()
	got := e.get(x.ID)
	if got.Status != fsm.Completed || got.FailedAttempts != 0 || got.Checks != 1 {
		t.Fatalf("after success: %s, attempts %d, checks %d", got.Status, got.FailedAttempts, got.Checks)
	}
	if n := e.provider.CallsFor(x.ID, fake.MethodSubmit); n != 4 {
		t.Fatalf("submit called %d times, want 4", n)
	}
}

func TestRetriesExhaustedFailsTheExecution(t *testing.T) {
	t.Parallel()
	scripts := map[string]fake.Script{"domains.register": {TransientErrors: 100}}
	e := setup(t, execution.Config{MaxFailedAttempts: 3}, scripts)
	x := e.runUntilDone(e.create("domains.register").ID, 10)
	if x.Status != fsm.Failed || x.Error == nil || x.Error.Code != execution.CodeRetriesExhausted ||
		!strings.Contains(x.Error.Message, "3 failed attempts in a row, the last: fake: transient failure") {
		t.Fatalf("got %s with %+v", x.Status, x.Error)
	}
}

func TestPermanentErrorFailsAtOnce(t *testing.T) {
	t.Parallel()
	scripts := map[string]fake.Script{"companies.form": {
		Reject: &execution.Error{Code: "invalid_jurisdiction", Message: "XX is not served"}}}
	e := setup(t, execution.Config{}, scripts)
	x := e.create("companies.form")
	e.runOnce()
	got := e.get(x.ID)
	if got.Status != fsm.Failed || *got.Error != (execution.Error{Code: "invalid_jurisdiction", Message: "XX is not served"}) {
		t.Fatalf("got %s with %+v", got.Status, got.Error)
	}
	if h := path(e.history(x.ID)); h != ">pending:create pending>failed:fail" {
		t.Fatalf("history %s", h)
	}
}

func TestDeadlineFailsALiveExecution(t *testing.T) {
	t.Parallel()
	scripts := map[string]fake.Script{"servers.provision": {Steps: []fake.Step{
		fake.Accept(time.Second), fake.Complete(time.Hour, `{}`)}}}
	e := setup(t, execution.Config{CheckInterval: time.Minute}, scripts)
	x, err := e.engine.Create(e.ctx, execution.CreateRequest{Action: "servers.provision", Deadline: t0.Add(90 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		e.runOnce()
		got := e.get(x.ID)
		if got.Done() {
			break
		}
		if got.NextCheckAt.After(got.Deadline) {
			t.Fatalf("next check %s is after the deadline %s", got.NextCheckAt, got.Deadline)
		}
		e.clock.Set(got.NextCheckAt)
	}
	got := e.get(x.ID)
	if got.Status != fsm.Failed || got.Error.Code != execution.CodeTimeout || !got.CompletedAt.Equal(t0.Add(90*time.Second)) {
		t.Fatalf("got %s at %s with %+v", got.Status, got.CompletedAt, got.Error)
	}
}

// patient answers "still running" a set number of times, then fails.
type patient struct {
	runningAnswers int
	calls          int
}

func (p *patient) Name() string { return "patient" }

func (p *patient) Submit(context.Context, execution.Execution) (execution.Update, error) {
	return execution.Update{Status: fsm.Running, CheckAfter: time.Second}, nil
}

func (p *patient) Check(context.Context, execution.Execution) (execution.Update, error) {
	p.calls++
	if p.calls > p.runningAnswers {
		return execution.Update{}, errors.New("upstream unavailable")
	}
	return execution.Update{Status: fsm.Running, CheckAfter: time.Second}, nil
}

func TestManyStillRunningAnswersAreNotFailures(t *testing.T) {
	t.Parallel()
	answers := 20_000
	if raceEnabled {
		answers = 2_000
	}
	e := setup(t, execution.Config{Workers: 1, MinBackoff: 2 * time.Second}, nil)
	p := &patient{runningAnswers: answers}
	if err := e.engine.Register("long.job", p); err != nil {
		t.Fatal(err)
	}
	x := e.create("long.job")
	for range answers + 2 {
		if e.runOnce() != 1 {
			t.Fatal("nothing due")
		}
		e.clock.Advance(time.Second)
	}
	got := e.get(x.ID)
	wait := got.NextCheckAt.Sub(e.clock.Now().Add(-time.Second))
	if got.Status != fsm.Running || got.Checks != int64(answers+1) || got.FailedAttempts != 1 ||
		wait < time.Second || wait > 2*time.Second {
		t.Fatalf("status %s, checks %d, failed attempts %d, backoff %s (want 1s..2s)",
			got.Status, got.Checks, got.FailedAttempts, wait)
	}
	if got.Version != 3 {
		t.Fatalf("version %d: repeated running answers made transitions", got.Version)
	}
}

// gate is a provider whose first Submit blocks until released; later
// submissions answer at once.
type gate struct {
	entered  chan struct{}
	release  chan struct{}
	first    atomic.Bool
	late     execution.Update
	answered atomic.Int32
}

func (g *gate) Name() string { return "gate" }

func (g *gate) Submit(ctx context.Context, e execution.Execution) (execution.Update, error) {
	if g.first.CompareAndSwap(false, true) {
		close(g.entered)
		select {
		case <-g.release:
			return g.late, nil
		case <-ctx.Done():
			return execution.Update{}, ctx.Err()
		}
	}
	g.answered.Add(1)
	return execution.Update{Status: fsm.Running}, nil
}

func (g *gate) Check(ctx context.Context, e execution.Execution) (execution.Update, error) {
	return execution.Update{}, nil
}

func TestStaleWorkerWriteIsRejected(t *testing.T) {
	t.Parallel()
	cfg := execution.Config{LeaseDuration: time.Minute}
	e := setup(t, cfg, nil)
	g := &gate{entered: make(chan struct{}), release: make(chan struct{}),
		late: execution.Update{Status: fsm.Completed, Output: []byte(`{"stale":true}`)}}
	second := e.newEngine(openStore(t, e.path), execution.Config{Clock: e.clock, LeaseDuration: time.Minute}, nil)
	for _, eng := range []*execution.Engine{e.engine, second} {
		if err := eng.Register("slow.job", g); err != nil {
			t.Fatal(err)
		}
	}
	x := e.create("slow.job")

	done := make(chan struct{})
	go func() {
		defer close(done)
		e.runOnce()
	}()
	<-g.entered

	// The first worker hangs past its lease; the second engine takes over.
	e.clock.Advance(2 * time.Minute)
	if n, err := second.RunOnce(e.ctx); err != nil || n != 1 {
		t.Fatalf("second engine processed %d, %v", n, err)
	}
	close(g.release)
	<-done

	got := e.get(x.ID)
	if got.Status != fsm.Running || got.Version != 3 || got.Output != nil {
		t.Fatalf("stale write applied: %s v%d output %s", got.Status, got.Version, got.Output)
	}
	if h := path(e.history(x.ID)); h != ">pending:create pending>accepted:accept accepted>running:start" {
		t.Fatalf("history %s", h)
	}
}

func TestUnregisteredActionIsLeftAlone(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	x := e.create("servers.provision")

	logs := &logRecorder{}
	bare := e.newEngine(openStore(t, e.path), execution.Config{Clock: e.clock, Logger: slogOf(logs)}, nil)
	if err := bare.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := bare.RunOnce(e.ctx); err != nil || n != 0 {
		t.Fatalf("engine without the provider processed %d, %v", n, err)
	}
	if err := bare.Stop(e.ctx); err != nil {
		t.Fatal(err)
	}
	got := e.get(x.ID)
	if got.Version != 1 || got.LeaseOwner != "" || !got.NextCheckAt.Equal(t0) {
		t.Fatalf("execution touched: %+v", got)
	}
	msgs := logs.messages()
	if len(msgs) != 1 || !strings.Contains(msgs[0], "unregistered provider") || !strings.Contains(msgs[0], "action=servers.provision") {
		t.Fatalf("logs = %q", msgs)
	}
}

func TestStopReleasesInterruptedWorkWithoutCountingAFailure(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, nil)
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	if err := e.engine.Register("slow.job", g); err != nil {
		t.Fatal(err)
	}
	x := e.create("slow.job")
	if err := e.engine.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	<-g.entered

	ctx, cancel := context.WithCancel(e.ctx)
	cancel() // no grace: interrupt at once
	if err := e.engine.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop = %v, want context.Canceled", err)
	}
	got := e.get(x.ID)
	if got.FailedAttempts != 0 || got.LeaseOwner != "" || got.Status != fsm.Pending || !got.SubmittedAt.IsZero() {
		t.Fatalf("after interrupted stop: %+v", got)
	}
	if err := e.engine.Stop(e.ctx); err != nil {
		t.Fatalf("second Stop = %v", err)
	}
	if err := e.engine.Start(e.ctx); !errors.Is(err, execution.ErrClosed) {
		t.Fatalf("Start after Stop = %v", err)
	}
}

// TestTwoEnginesShareOneFile drives many executions with two engines
// opened separately on one file, as two processes would, through the
// background loop and the wall clock.
func TestTwoEnginesShareOneFile(t *testing.T) {
	t.Parallel()
	n := 1000
	if raceEnabled {
		n = 300
	}
	scripts := map[string]fake.Script{
		"servers.provision": {Steps: []fake.Step{fake.Accept(0), fake.Start(2 * time.Millisecond),
			fake.Progress(4*time.Millisecond, `{"p":1}`), fake.Complete(6*time.Millisecond, `{}`)}},
		"domains.register": {TransientErrors: 1, Steps: []fake.Step{fake.Complete(3*time.Millisecond, `{}`)}},
		"companies.form":   {Steps: []fake.Step{fake.Accept(0), fake.Refund(5*time.Millisecond, "rejected", "no")}},
		"boats.launch":     {Reject: &execution.Error{Code: "no_boats", Message: "none left"}},
	}
	actions := []string{"servers.provision", "domains.register", "companies.form", "boats.launch"}
	cfg := func(logs *logRecorder) execution.Config {
		return execution.Config{Clock: execution.SystemClock{}, Logger: slogOf(logs), Workers: 4,
			CheckInterval: 2 * time.Millisecond, MinBackoff: 2 * time.Millisecond, PollInterval: 20 * time.Millisecond}
	}
	e := setup(t, execution.Config{Clock: execution.SystemClock{}}, nil)
	logs := []*logRecorder{{}, {}}
	engines := []*execution.Engine{
		e.newEngine(e.store, cfg(logs[0]), scripts),
		e.newEngine(openStore(t, e.path), cfg(logs[1]), scripts),
	}
	for _, g := range engines {
		if err := g.Start(e.ctx); err != nil {
			t.Fatal(err)
		}
	}

	ids := make([]string, n)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := w; i < n; i += 2 {
				x, err := engines[w].Create(e.ctx, execution.CreateRequest{Action: actions[i%4], Input: fmt.Appendf(nil, `{"i":%d}`, i)})
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = x.ID
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	deadline := time.Now().Add(2 * time.Minute)
	for live := n; live > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d executions still live", live)
		}
		time.Sleep(20 * time.Millisecond)
		live = 0
		for _, s := range []fsm.State{fsm.Pending, fsm.Accepted, fsm.Running} {
			p, err := e.engine.List(e.ctx, execution.Filter{Status: s, Limit: execution.MaxPageSize})
			if err != nil {
				t.Fatal(err)
			}
			live += len(p.Executions)
		}
	}
	for _, g := range engines {
		if err := g.Stop(e.ctx); err != nil {
			t.Fatal(err)
		}
	}

	want := map[string]fsm.State{"servers.provision": fsm.Completed, "domains.register": fsm.Completed,
		"companies.form": fsm.Refunded, "boats.launch": fsm.Failed}
	for i, id := range ids {
		x := e.get(id)
		if x.Status != want[x.Action] {
			t.Fatalf("execution %d (%s) ended %s, want %s", i, x.Action, x.Status, want[x.Action])
		}
		checkHistory(t, e.history(id), e.events(id))
		// Leases never expired here, so each execution was submitted once;
		// the one transient failure makes two submissions of the same id.
		submits := e.provider.CallsFor(id, fake.MethodSubmit)
		if wantSubmits := 1 + scripts[x.Action].TransientErrors; submits != wantSubmits {
			t.Fatalf("execution %d (%s) submitted %d times, want %d", i, x.Action, submits, wantSubmits)
		}
	}
	for i, l := range logs {
		if msgs := l.messages(); len(msgs) != 0 {
			t.Fatalf("engine %d logged warnings or errors: %q", i, msgs)
		}
	}
}

// panicky panics on every call.
type panicky struct{}

func (panicky) Name() string { return "panicky" }
func (panicky) Submit(context.Context, execution.Execution) (execution.Update, error) {
	panic("index out of range")
}
func (panicky) Check(context.Context, execution.Execution) (execution.Update, error) {
	panic("unreachable")
}

func TestProviderPanicIsAFailedAttempt(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, nil)
	if err := e.engine.Register("bad.job", panicky{}); err != nil {
		t.Fatal(err)
	}
	x := e.create("bad.job")
	e.runOnce()
	got := e.get(x.ID)
	if got.FailedAttempts != 1 || got.Status != fsm.Pending || got.LeaseOwner != "" {
		t.Fatalf("after a panic: attempts %d, status %s, lease %q", got.FailedAttempts, got.Status, got.LeaseOwner)
	}
	if msgs := e.logs.messages(); len(msgs) != 1 || !strings.Contains(msgs[0], "provider panicked") {
		t.Fatalf("logs = %q", msgs)
	}
}

func TestCreateHandsNewWorkToAFreeWorker(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{Workers: 1}, nil)
	g := &gate{entered: make(chan struct{}), release: make(chan struct{}), late: execution.Update{Status: fsm.Running}}
	if err := e.engine.Register("slow.job", g); err != nil {
		t.Fatal(err)
	}
	if err := e.engine.Start(e.ctx); err != nil {
		t.Fatal(err)
	}

	// The one worker is free: the execution is born claimed by it.
	x := e.create("slow.job")
	if x.LeaseOwner == "" || !x.NextCheckAt.Equal(t0.Add(time.Minute)) || x.Status != fsm.Pending {
		t.Fatalf("created with a free worker: lease %q until %s, %s; want a lease until %s",
			x.LeaseOwner, x.NextCheckAt, x.Status, t0.Add(time.Minute))
	}
	<-g.entered

	// It is busy now: the next one waits for the loop to claim it.
	y := e.create("slow.job")
	if y.LeaseOwner != "" || !y.NextCheckAt.Equal(t0) {
		t.Fatalf("created with every worker busy: lease %q, next check %s; want none, due at %s",
			y.LeaseOwner, y.NextCheckAt, t0)
	}

	close(g.release)
	if err := e.engine.Stop(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.get(x.ID); got.Status != fsm.Running || got.LeaseOwner != "" || got.Version != 3 {
		t.Fatalf("after its worker answered: %s v%d lease %q; want running v3 and no lease",
			got.Status, got.Version, got.LeaseOwner)
	}

	// A stopped engine hands nothing out.
	if z := e.create("slow.job"); z.LeaseOwner != "" {
		t.Fatalf("created after Stop with lease %q", z.LeaseOwner)
	}
}

// createBehindAHost begins a host transaction on the store's writer, then
// starts a creation of action, which waits for the writer; it returns the
// host's transaction and where the created execution will arrive.
func (e *env) createBehindAHost(action string) (*sql.Tx, <-chan execution.Execution) {
	e.t.Helper()
	tx, err := e.store.DB().BeginTx(e.ctx, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	created := make(chan execution.Execution, 1)
	go func() {
		x, err := e.engine.Create(e.ctx, execution.CreateRequest{Action: action})
		if err != nil {
			e.t.Error(err)
		}
		created <- x
	}()
	for e.store.DB().Stats().WaitCount == 0 {
		runtime.Gosched()
	}
	return tx, created
}

// returns fails the test unless c delivers within a generous bound: what
// is checked is that the call returns at all while the writer is held.
func returns[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
		panic("unreachable")
	}
}

func TestStopKeepsItsDeadlineWhileACreationWaitsForTheWriter(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{
		"servers.provision": {Steps: []fake.Step{fake.Complete(0, `{}`)}}})
	if err := e.engine.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	// A host holds the writer; a creation takes a free worker and waits.
	tx, created := e.createBehindAHost("servers.provision")
	ctx, cancel := context.WithTimeout(e.ctx, 100*time.Millisecond)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- e.engine.Stop(ctx) }()
	// Nothing is in flight: the waiting creation holds a slot, not a worker.
	if err := returns(t, stopped, "Stop"); err != nil {
		t.Fatalf("Stop = %v", err)
	}

	// The creation goes through once the host is done; no worker takes it
	// after Stop, and it is left due for the next engine.
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	x := returns(t, created, "Create")
	if got := e.get(x.ID); got.LeaseOwner != "" || got.Status != fsm.Pending || got.NextCheckAt.After(t0) {
		t.Fatalf("after Stop: lease %q, %s, next check %s; want no lease, pending, due", got.LeaseOwner, got.Status, got.NextCheckAt)
	}
	if n := e.provider.CallsFor(x.ID, fake.MethodSubmit); n != 0 {
		t.Fatalf("%d submissions after Stop", n)
	}
}

// leaseWatcher completes every submission and counts those made on a
// lease that had already expired by its clock.
type leaseWatcher struct {
	clock   *fake.Clock
	expired atomic.Int32
	calls   atomic.Int32
}

func (w *leaseWatcher) Name() string { return "lease-watcher" }

func (w *leaseWatcher) Submit(ctx context.Context, e execution.Execution) (execution.Update, error) {
	w.calls.Add(1)
	if !w.clock.Now().Before(e.NextCheckAt) { // a claimed execution's NextCheckAt is its lease's expiry
		w.expired.Add(1)
	}
	return execution.Update{Status: fsm.Completed, Output: []byte(`{}`)}, nil
}

func (w *leaseWatcher) Check(ctx context.Context, e execution.Execution) (execution.Update, error) {
	return w.Submit(ctx, e)
}

func TestALeaseThatExpiredBeforeTheWorkBeganIsNotUsed(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{LeaseDuration: time.Second, ProviderTimeout: 500 * time.Millisecond}, nil)
	w := &leaseWatcher{clock: e.clock}
	if err := e.engine.Register("servers.provision", w); err != nil {
		t.Fatal(err)
	}
	if err := e.engine.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	// The creation's lease runs out while its write waits for the writer.
	tx, created := e.createBehindAHost("servers.provision")
	e.clock.Advance(5 * time.Second)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	x := returns(t, created, "Create")
	if err := e.engine.Stop(e.ctx); err != nil {
		t.Fatal(err)
	}
	// Whoever claims it next (the loop may have already) calls once, on a
	// live lease.
	for range 3 {
		if _, err := e.engine.RunOnce(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.get(x.ID); got.Status != fsm.Completed || w.expired.Load() != 0 || w.calls.Load() != 1 {
		t.Fatalf("%s after %d calls, %d of them on an expired lease; want completed by one call on a live lease",
			got.Status, w.calls.Load(), w.expired.Load())
	}
}

// meddler changes the execution it is handed, then answers as told.
type meddler struct{ err error }

func (meddler) Name() string { return "meddler" }

func (m meddler) Submit(ctx context.Context, e execution.Execution) (execution.Update, error) {
	e.Input[2] = 'Z'
	return execution.Update{Status: fsm.Accepted}, m.err
}

func (m meddler) Check(ctx context.Context, e execution.Execution) (execution.Update, error) {
	return m.Submit(ctx, e)
}

// TestWhatAProviderDoesToItsCopyStaysThere: Apply, planned from the
// engine's copy of the execution, returns the stored record, whatever the
// provider did to the execution it was handed, and to the millisecond.
func TestWhatAProviderDoesToItsCopyStaysThere(t *testing.T) {
	t.Parallel()
	for _, callErr := range []error{nil, errors.New("try again")} {
		e := setup(t, execution.Config{}, nil)
		if err := e.engine.Register("servers.provision", meddler{err: callErr}); err != nil {
			t.Fatal(err)
		}
		x := e.create("servers.provision")
		if _, err := e.engine.RunOnce(e.ctx); err != nil {
			t.Fatal(err)
		}
		got, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Running})
		if err != nil {
			t.Fatal(err)
		}
		stored := e.get(x.ID)
		if string(got.Input) != `{"n":1}` || !got.NextCheckAt.Equal(stored.NextCheckAt) || got.Revision != stored.Revision {
			t.Fatalf("call error %v: Apply returned input %s, next check %s, r%d; stored %s, %s, r%d",
				callErr, got.Input, got.NextCheckAt, got.Revision, stored.Input, stored.NextCheckAt, stored.Revision)
		}
	}
}
