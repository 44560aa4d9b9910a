package execution_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
)

var provisionScript = fake.Script{Steps: []fake.Step{
	fake.Accept(time.Second),
	fake.Start(2 * time.Second),
	fake.Progress(3*time.Second, `{"percent":50}`),
	fake.Complete(5*time.Second, `{"ipv4":"203.0.113.10"}`),
}}

func TestLifecycleFollowsTheProviderTimeline(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	x := e.create("servers.provision")
	if x.Status != fsm.Pending || x.Version != 1 || x.Provider != "fake" || !x.NextCheckAt.Equal(t0) {
		t.Fatalf("created = %+v", x)
	}

	// The first pass submits; the provider asks to be checked after 1s.
	if n := e.runOnce(); n != 1 {
		t.Fatalf("first pass processed %d", n)
	}
	x = e.get(x.ID)
	if x.Status != fsm.Pending || !x.SubmittedAt.Equal(t0) || !x.NextCheckAt.Equal(t0.Add(time.Second)) || x.Checks != 1 {
		t.Fatalf("after submit: status %s submitted %s next %s checks %d", x.Status, x.SubmittedAt, x.NextCheckAt, x.Checks)
	}
	// Nothing is due before then.
	if n := e.runOnce(); n != 0 {
		t.Fatalf("pass before the check time processed %d", n)
	}

	x = e.runUntilDone(x.ID, 10)
	if x.Status != fsm.Completed || x.Version != 5 || string(x.Output) != `{"ipv4":"203.0.113.10"}` ||
		string(x.Progress) != `{"percent":50}` || x.ExternalRef != "fake-1" {
		t.Fatalf("done = %+v", x)
	}
	if !x.CompletedAt.Equal(t0.Add(5*time.Second)) || !x.NextCheckAt.IsZero() || x.LeaseOwner != "" || x.Checks != 5 {
		t.Fatalf("done: completed %s next %s lease %q checks %d", x.CompletedAt, x.NextCheckAt, x.LeaseOwner, x.Checks)
	}

	h := e.history(x.ID)
	want := ">pending:create pending>accepted:accept accepted>running:start running>running:progress running>completed:complete"
	if got := path(h); got != want {
		t.Fatalf("history = %s\nwant      %s", got, want)
	}
	evs := e.events(x.ID)
	checkHistory(t, h, evs)
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	wantTypes := []string{"execution.created", "execution.accepted", "execution.running", "execution.progress", "execution.completed"}
	if !slices.Equal(types, wantTypes) {
		t.Fatalf("event types = %v", types)
	}
	last := evs[4]
	wantPayload := fmt.Sprintf(`{"id":"%s","event":"execution.completed","executionId":"%s",`+
		`"action":"servers.provision","status":"completed","previousStatus":"running","version":5,`+
		`"timestamp":"2026-05-30T12:00:05.000Z"}`, last.ID, x.ID)
	if string(last.Payload) != wantPayload {
		t.Fatalf("payload = %s\nwant      %s", last.Payload, wantPayload)
	}
	if got := e.provider.CallsFor(x.ID, fake.MethodSubmit); got != 1 {
		t.Fatalf("submitted %d times", got)
	}
}

// TestApplyEveryPairOfStates pushes an update for every target state to
// an execution in every state and checks the outcome against the graph.
func TestApplyEveryPairOfStates(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	for _, from := range fsm.States() {
		for _, to := range fsm.States() {
			t.Run(fmt.Sprintf("%s to %s", from, to), func(t *testing.T) {
				x := e.create("servers.provision")
				if from != fsm.Pending {
					var err error
					if x, err = e.engine.Apply(e.ctx, x.ID, execution.Update{Status: from}); err != nil {
						t.Fatal(err)
					}
				}
				before, beforeEvents := e.get(x.ID), e.events(x.ID)

				u := execution.Update{Status: to}
				if to == fsm.Completed {
					u.Output = []byte(`{"ok":true}`)
				}
				got, err := e.engine.Apply(e.ctx, x.ID, u)
				after, afterEvents := e.get(x.ID), e.events(x.ID)
				steps, pathErr := fsm.Path(from, to)

				switch {
				case from.Terminal():
					if !errors.Is(err, execution.ErrTerminal) {
						t.Fatalf("err = %v, want ErrTerminal", err)
					}
				case pathErr != nil:
					if !errors.Is(err, execution.ErrInvalidTransition) {
						t.Fatalf("err = %v, want ErrInvalidTransition", err)
					}
				default:
					if err != nil {
						t.Fatal(err)
					}
					if after.Status != to || after.Version != before.Version+int64(len(steps)) ||
						len(afterEvents) != len(beforeEvents)+len(steps) || got.Version != after.Version {
						t.Fatalf("after: %s v%d with %d events; before v%d with %d events; path %v",
							after.Status, after.Version, len(afterEvents), before.Version, len(beforeEvents), steps)
					}
					checkHistory(t, e.history(x.ID), afterEvents)
					return
				}
				// Rejected: nothing changed, and the report is on record.
				if after.Status != before.Status || after.Version != before.Version ||
					len(afterEvents) != len(beforeEvents) || after.Output != nil {
					t.Fatalf("rejected update changed the execution: %+v", after)
				}
				ign := e.ignored(x.ID)
				if len(ign) != 1 || ign[0].Reported != to || ign[0].Status != from || ign[0].Version != before.Version {
					t.Fatalf("ignored updates = %+v", ign)
				}
			})
		}
	}
}

func TestProgressIsASelfLoopOnlyWhenItChanges(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	x := e.create("servers.provision")
	p := execution.Update{Status: fsm.Running, Progress: []byte(`{"percent": 10}`)}
	x, err := e.engine.Apply(e.ctx, x.ID, p)
	if err != nil {
		t.Fatal(err)
	}
	if x.Version != 4 || string(x.Progress) != `{"percent":10}` {
		t.Fatalf("first progress: v%d %s", x.Version, x.Progress)
	}
	if x, err = e.engine.Apply(e.ctx, x.ID, p); err != nil || x.Version != 4 {
		t.Fatalf("same progress again: v%d, %v", x.Version, err)
	}
	p.Progress = []byte(`{"percent":20}`)
	if x, err = e.engine.Apply(e.ctx, x.ID, p); err != nil || x.Version != 5 {
		t.Fatalf("new progress: v%d, %v", x.Version, err)
	}
	evs := e.events(x.ID)
	if len(evs) != 5 || evs[3].Type != "execution.progress" || evs[4].Type != "execution.progress" {
		t.Fatalf("events: %d", len(evs))
	}
}

func TestApplyRejectsBadUpdates(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{MaxInputBytes: 64}, map[string]fake.Script{"servers.provision": provisionScript})
	x := e.create("servers.provision")
	tests := []struct {
		name  string
		id    string
		u     execution.Update
		want  error
		field string
	}{
		{"unknown status", x.ID, execution.Update{Status: "paused"}, execution.ErrInvalid, "status"},
		{"output that is an array", x.ID, execution.Update{Status: fsm.Completed, Output: []byte(`[1]`)}, execution.ErrInvalid, "output"},
		{"output that is not JSON", x.ID, execution.Update{Output: []byte(`{"a":`)}, execution.ErrInvalid, "output"},
		{"output over the size cap", x.ID, execution.Update{Output: fmt.Appendf(nil, `{"a":"%0100d"}`, 0)}, execution.ErrInvalid, "output"},
		{"malformed id", "exe_nope", execution.Update{}, execution.ErrInvalid, "id"},
		{"SQL in the id", "exe_' OR 1=1 --", execution.Update{}, execution.ErrInvalid, "id"},
		{"unknown id", "exe_01JZZZZZZZZZZZZZZZZZZZZZZZ", execution.Update{}, execution.ErrNotFound, ""},
	}
	for _, tt := range tests {
		_, err := e.engine.Apply(e.ctx, tt.id, tt.u)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
			continue
		}
		var ve *execution.ValidationError
		if tt.field != "" && (!errors.As(err, &ve) || ve.Field != tt.field) {
			t.Errorf("%s: err = %v, want a ValidationError on %s", tt.name, err, tt.field)
		}
	}
	if got := e.get(x.ID); got.Version != 1 || got.Output != nil || len(e.events(x.ID)) != 1 {
		t.Fatalf("rejected updates changed the execution: %+v", got)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	scripts := map[string]fake.Script{
		"servers.provision": provisionScript,
		"domains.register": {Cancelable: true, Steps: []fake.Step{
			fake.Accept(0), fake.Start(time.Second), fake.Complete(time.Hour, `{}`)}},
	}
	e := setup(t, execution.Config{}, scripts)

	t.Run("pending without a provider call", func(t *testing.T) {
		x := e.create("servers.provision")
		got, err := e.engine.Cancel(e.ctx, x.ID, "customer changed their mind")
		if err != nil || got.Status != fsm.Canceled || got.Version != 2 || got.CompletedAt.IsZero() {
			t.Fatalf("cancel = %+v, %v", got, err)
		}
		if n := e.provider.CallsFor(x.ID, fake.MethodCancel); n != 0 {
			t.Fatalf("provider cancel called %d times", n)
		}
		h := e.history(x.ID)
		if h[1].Reason != "customer changed their mind" || h[1].Event != fsm.Cancel {
			t.Fatalf("history = %+v", h[1])
		}
		again, err := e.engine.Cancel(e.ctx, x.ID, "")
		if err != nil || again.Version != 2 || len(e.events(x.ID)) != 2 {
			t.Fatalf("second cancel = v%d, %v", again.Version, err)
		}
	})

	t.Run("running without a canceler is refused", func(t *testing.T) {
		if err := e.engine.Register("plain.work", noCancel{e.provider}); err != nil {
			t.Fatal(err)
		}
		x := e.create("plain.work")
		if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Running}); err != nil {
			t.Fatal(err)
		}
		_, err := e.engine.Cancel(e.ctx, x.ID, "")
		if !errors.Is(err, execution.ErrInvalidTransition) {
			t.Fatalf("err = %v", err)
		}
		if got := e.get(x.ID); got.Status != fsm.Running || got.Version != 3 {
			t.Fatalf("after refused cancel: %s v%d", got.Status, got.Version)
		}
	})

	t.Run("running whose provider refuses stays running", func(t *testing.T) {
		x := e.create("servers.provision")
		if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Running}); err != nil {
			t.Fatal(err)
		}
		_, err := e.engine.Cancel(e.ctx, x.ID, "")
		if !errors.Is(err, execution.ErrInvalidTransition) || !strings.Contains(err.Error(), "provider cancel: fake:") {
			t.Fatalf("err = %v", err)
		}
		if got := e.get(x.ID); got.Status != fsm.Running || got.Version != 3 {
			t.Fatalf("after refused cancel: %s v%d", got.Status, got.Version)
		}
	})

	t.Run("running with a canceler asks the provider first", func(t *testing.T) {
		x := e.create("domains.register")
		e.runOnce() // submit: accepted at once
		e.clock.Advance(time.Second)
		e.runOnce() // running
		if got := e.get(x.ID); got.Status != fsm.Running {
			t.Fatalf("status %s", got.Status)
		}
		got, err := e.engine.Cancel(e.ctx, x.ID, "")
		if err != nil || got.Status != fsm.Canceled {
			t.Fatalf("cancel = %s, %v", got.Status, err)
		}
		if n := e.provider.CallsFor(x.ID, fake.MethodCancel); n != 1 {
			t.Fatalf("provider cancel called %d times", n)
		}
	})

	t.Run("terminal is refused and writes nothing", func(t *testing.T) {
		x := e.create("servers.provision")
		if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Completed}); err != nil {
			t.Fatal(err)
		}
		got, err := e.engine.Cancel(e.ctx, x.ID, "")
		if !errors.Is(err, execution.ErrTerminal) || got.Status != fsm.Completed {
			t.Fatalf("cancel of completed = %s, %v", got.Status, err)
		}
		if ign := e.ignored(x.ID); len(ign) != 0 {
			t.Fatalf("ignored = %+v", ign)
		}
	})
}

// TestCancelRacingCompletion runs a cancel and a completion at the same
// time, many times: each execution ends in exactly one terminal state
// with exactly one terminal event, and exactly one of the two calls wins.
func TestCancelRacingCompletion(t *testing.T) {
	t.Parallel()
	scripts := map[string]fake.Script{"domains.register": {Cancelable: true}}
	e := setup(t, execution.Config{}, scripts)
	rounds := 40
	if raceEnabled {
		rounds = 10
	}
	for range rounds {
		x := e.create("domains.register")
		if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Running}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var applyErr, cancelErr error
		wg.Go(func() {
			_, applyErr = e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Completed, Output: []byte(`{}`)})
		})
		wg.Go(func() { _, cancelErr = e.engine.Cancel(e.ctx, x.ID, "") })
		wg.Wait()

		got := e.get(x.ID)
		winners := 0
		for _, err := range []error{applyErr, cancelErr} {
			switch {
			case err == nil:
				winners++
			case !errors.Is(err, execution.ErrTerminal):
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if winners != 1 {
			t.Fatalf("%d calls won (apply: %v, cancel: %v)", winners, applyErr, cancelErr)
		}
		h, evs := e.history(x.ID), e.events(x.ID)
		checkHistory(t, h, evs)
		terminal := 0
		for _, tr := range h {
			if tr.To.Terminal() {
				terminal++
			}
		}
		if terminal != 1 || got.Version != 4 || !got.Done() {
			t.Fatalf("status %s v%d with %d terminal transitions: %s", got.Status, got.Version, terminal, path(h))
		}
	}
}

func TestCreateRejectsBadRequests(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{MaxInputBytes: 1024}, map[string]fake.Script{"servers.provision": provisionScript})
	tests := []struct {
		name  string
		req   execution.CreateRequest
		want  error
		field string
	}{
		{"unregistered action", execution.CreateRequest{Action: "boats.launch"}, execution.ErrUnknownAction, ""},
		{"empty action", execution.CreateRequest{}, execution.ErrInvalid, "action"},
		{"action with spaces", execution.CreateRequest{Action: "servers provision"}, execution.ErrInvalid, "action"},
		{"SQL-looking action", execution.CreateRequest{Action: "x'; DROP TABLE executions; --"}, execution.ErrInvalid, "action"},
		{"input that is an array", execution.CreateRequest{Action: "servers.provision", Input: []byte(`[]`)}, execution.ErrInvalid, "input"},
		{"input that is a string", execution.CreateRequest{Action: "servers.provision", Input: []byte(`"x"`)}, execution.ErrInvalid, "input"},
		{"input with trailing data", execution.CreateRequest{Action: "servers.provision", Input: []byte(`{} {}`)}, execution.ErrInvalid, "input"},
		{"truncated input", execution.CreateRequest{Action: "servers.provision", Input: []byte(`{"a":`)}, execution.ErrInvalid, "input"},
		{"invalid UTF-8 in input", execution.CreateRequest{Action: "servers.provision", Input: []byte("{\"a\":\"\xff\"}")}, execution.ErrInvalid, "input"},
		{"input over the size cap", execution.CreateRequest{Action: "servers.provision", Input: fmt.Appendf(nil, `{"a":"%02000d"}`, 0)}, execution.ErrInvalid, "input"},
		{"control character in owner", execution.CreateRequest{Action: "servers.provision", Owner: "a\x00b"}, execution.ErrInvalid, "owner"},
		{"huge idempotency key", execution.CreateRequest{Action: "servers.provision", IdempotencyKey: string(make([]byte, 300))}, execution.ErrInvalid, "idempotency key"},
	}
	for _, tt := range tests {
		_, err := e.engine.Create(e.ctx, tt.req)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
			continue
		}
		var ve *execution.ValidationError
		if tt.field != "" && (!errors.As(err, &ve) || ve.Field != tt.field) {
			t.Errorf("%s: err = %v, want a ValidationError on %q", tt.name, err, tt.field)
		}
	}
	page, err := e.engine.List(e.ctx, execution.Filter{})
	if err != nil || len(page.Executions) != 0 {
		t.Fatalf("rejected creates wrote %d executions (%v)", len(page.Executions), err)
	}
}

func TestIdempotentCreate(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	req := execution.CreateRequest{Action: "servers.provision", Owner: "cus_1", IdempotencyKey: "order-7",
		Input: []byte(`{"plan":"cx22","region":"fsn1"}`)}
	first, err := e.engine.Create(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}

	// The same request, keys reordered and spaced differently.
	same := req
	same.Input = []byte(`{ "region": "fsn1", "plan": "cx22" }`)
	again, err := e.engine.Create(e.ctx, same)
	if err != nil || again.ID != first.ID {
		t.Fatalf("repeat = %s, %v; want %s", again.ID, err, first.ID)
	}

	other := req
	other.Input = []byte(`{"plan":"cx52","region":"fsn1"}`)
	if _, err := e.engine.Create(e.ctx, other); !errors.Is(err, execution.ErrIdempotencyConflict) {
		t.Fatalf("different input: err = %v", err)
	}

	otherOwner := req
	otherOwner.Owner = "cus_2"
	third, err := e.engine.Create(e.ctx, otherOwner)
	if err != nil || third.ID == first.ID {
		t.Fatalf("other owner = %s, %v", third.ID, err)
	}
	page, _ := e.engine.List(e.ctx, execution.Filter{})
	if len(page.Executions) != 2 {
		t.Fatalf("%d executions stored, want 2", len(page.Executions))
	}
}

// TestIdempotentCreateRacing creates with one key from many goroutines on
// two engines opened separately on one file, as two processes would.
func TestIdempotentCreateRacing(t *testing.T) {
	t.Parallel()
	scripts := map[string]fake.Script{"servers.provision": provisionScript}
	e := setup(t, execution.Config{}, scripts)
	store2 := openStore(t, e.path)
	engines := []*execution.Engine{e.engine, e.newEngine(store2, execution.Config{Clock: e.clock}, scripts)}

	req := execution.CreateRequest{Action: "servers.provision", IdempotencyKey: "k", Input: []byte(`{"a":1}`)}
	ids := make([]string, 16)
	errs := make([]error, 16)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			x, err := engines[i%2].Create(e.ctx, req)
			ids[i], errs[i] = x.ID, err
		})
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("create %d = %s, %v; want %s", i, ids[i], errs[i], ids[0])
		}
	}
	page, _ := e.engine.List(e.ctx, execution.Filter{})
	if len(page.Executions) != 1 || len(e.events(ids[0])) != 1 {
		t.Fatalf("%d executions stored", len(page.Executions))
	}
}

func TestCreateTxCommitsWithTheHost(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	db := e.store.DB()
	if _, err := db.Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, execution_id TEXT)`); err != nil {
		t.Fatal(err)
	}

	for _, commit := range []bool{false, true} {
		tx, err := db.BeginTx(e.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		x, err := e.engine.CreateTx(e.ctx, tx, execution.CreateRequest{Action: "servers.provision"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO orders VALUES (?, ?)`, fmt.Sprint(commit), x.ID); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.engine.Get(e.ctx, x.ID)
		if commit && err != nil {
			t.Fatalf("committed execution: %v", err)
		}
		if !commit && !errors.Is(err, execution.ErrNotFound) {
			t.Fatalf("rolled back execution: err = %v", err)
		}
	}
}

func TestTimesAreStoredAsInstantsWhateverTheZone(t *testing.T) {
	t.Parallel()
	kathmandu := time.FixedZone("NPT", 5*3600+45*60)
	samoa := time.FixedZone("SST", -11*3600)
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})

	// A is created at 10:00 in Kathmandu; B one minute later, read off a
	// clock in Samoa, where the wall time is the previous evening.
	aAt := time.Date(2026, 5, 30, 10, 0, 0, 0, kathmandu)
	e.clock.Set(aAt)
	a := e.create("servers.provision")
	bAt := aAt.Add(time.Minute).In(samoa)
	e.clock.Set(bAt)
	b := e.create("servers.provision")

	gotA := e.get(a.ID)
	if !gotA.CreatedAt.Equal(aAt) || gotA.CreatedAt.Location() != time.UTC {
		t.Fatalf("A created at %s, want %s in UTC", gotA.CreatedAt, aAt)
	}
	page, err := e.engine.List(e.ctx, execution.Filter{})
	if err != nil || len(page.Executions) != 2 || page.Executions[0].ID != b.ID {
		t.Fatalf("list = %v, %v; want B first", page.Executions, err)
	}
	between := aAt.Add(30 * time.Second).In(time.FixedZone("X", 3600))
	page, err = e.engine.List(e.ctx, execution.Filter{CreatedAfter: between})
	if err != nil || len(page.Executions) != 1 || page.Executions[0].ID != b.ID {
		t.Fatalf("created after %s = %v, %v; want B only", between, page.Executions, err)
	}

	// Due order follows the instants: with the clock past both, A (due
	// first) is claimed first.
	claimed, err := e.store.Claim(e.ctx, execution.ClaimParams{Now: bAt.Add(time.Hour),
		Until: bAt.Add(2 * time.Hour), Owner: "test", Actions: []string{"servers.provision"}, Limit: 1})
	if err != nil || len(claimed) != 1 || claimed[0].ID != a.ID {
		t.Fatalf("claimed %v, %v; want A", claimed, err)
	}
}

// noCancel hides a provider's Cancel method.
type noCancel struct{ execution.Provider }

// TestApplyFromAStaleRecordWritesNothingTwice: engine a wrote the
// execution last, then engine b (another process) moved it on; a's next
// update must be decided on the stored record.
func TestApplyFromAStaleRecordWritesNothingTwice(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	b := e.newEngine(e.store, execution.Config{Clock: e.clock}, map[string]fake.Script{"servers.provision": provisionScript})
	x := e.create("servers.provision")
	if _, err := b.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Accepted}); err != nil {
		t.Fatal(err)
	}
	got, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Running})
	if err != nil || got.Status != fsm.Running || got.Version != 3 {
		t.Fatalf("Apply = %s v%d, %v; want running v3", got.Status, got.Version, err)
	}
	var events []string
	for _, tr := range e.history(x.ID) {
		events = append(events, string(tr.Event))
	}
	if strings.Join(events, ",") != "create,accept,start" {
		t.Fatalf("history %v, want create, accept, start", events)
	}

	// b ends it; a's view is stale again, and its update is refused for
	// the stored reason.
	if _, err := b.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Completed, Output: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Progress: []byte(`{"p":1}`)}); !errors.Is(err, execution.ErrTerminal) {
		t.Fatalf("update after b completed it = %v, want ErrTerminal", err)
	}
	if got := e.get(x.ID); got.Status != fsm.Completed || got.Version != 4 || got.Progress != nil {
		t.Fatalf("stored %s v%d progress %s; want completed v4, no progress", got.Status, got.Version, got.Progress)
	}
}

// TestApplyAfterPruneFindsNothing: the engine's copy of an execution it
// ended does not outlive the record.
func TestApplyAfterPruneFindsNothing(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	x := e.create("servers.provision")
	if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Completed, Output: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.FanOut(e.ctx, t0, 100); err != nil {
		t.Fatal(err)
	}
	if res, err := e.store.Prune(e.ctx, sqlite.PruneOptions{Before: t0.Add(time.Hour)}); err != nil || res.Executions != 1 {
		t.Fatalf("Prune = %+v, %v", res, err)
	}
	if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Completed}); !errors.Is(err, execution.ErrNotFound) {
		t.Fatalf("Apply to a pruned execution = %v, want ErrNotFound", err)
	}
}
