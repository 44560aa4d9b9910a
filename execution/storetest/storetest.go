// Package storetest is the conformance suite of [execution.Store]. Every
// implementation runs [Run] from its own tests and must pass it unchanged;
// the suite holds the contract that the Store's doc comments state.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
)

// Run runs the suite against the stores newStore returns. Every subtest
// runs in parallel and calls newStore once for a fresh, empty store that
// must stay open until the subtest ends: newStore registers its cleanup
// with the t it is given.
func Run(t *testing.T, newStore func(t *testing.T) execution.Store) {
	s := suite{newStore: newStore}
	t.Run("Create", s.testCreate)
	t.Run("Idempotency", s.testIdempotency)
	t.Run("Write", s.testWrite)
	t.Run("Claim", s.testClaim)
	t.Run("Lease", s.testLease)
	t.Run("Release", s.testRelease)
	t.Run("Schedule", s.testSchedule)
	t.Run("Ignored", s.testIgnored)
	t.Run("List", s.testList)
}

// NewCreation returns a valid creation of a pending execution of action:
// an "exe_" id, version 1, input {}, the request hash of action and input,
// owner "owner-1", created, updated and due now in UTC at millisecond
// precision, with its creation history row and its event.
func NewCreation(action string) execution.Creation {
	now := time.Now().UTC().Truncate(time.Millisecond)
	e := execution.Execution{
		ID:          "exe_" + ulid.Make().String(),
		Action:      action,
		Provider:    "fake",
		Owner:       "owner-1",
		Status:      fsm.Pending,
		Version:     1,
		Input:       json.RawMessage(`{}`),
		RequestHash: requestHash(action, `{}`),
		CreatedAt:   now,
		UpdatedAt:   now,
		NextCheckAt: now,
	}
	t := execution.Transition{
		ExecutionID: e.ID,
		Version:     1,
		To:          fsm.Pending,
		Event:       execution.EventCreate,
		At:          now,
	}
	return execution.Creation{Execution: e, Transition: t, Event: newEvent(action, t)}
}

func requestHash(action, input string) string {
	sum := sha256.Sum256([]byte(action + "\x00" + input))
	return hex.EncodeToString(sum[:])
}

// newEvent returns the outbox event that announces t.
func newEvent(action string, t execution.Transition) execution.Event {
	typ := "execution." + string(t.To)
	if t.Event == execution.EventCreate {
		typ = "execution.created"
	}
	ev := execution.Event{
		ID:          "evt_" + ulid.Make().String(),
		ExecutionID: t.ExecutionID,
		Type:        typ,
		Version:     t.Version,
		CreatedAt:   t.At,
	}
	payload, err := json.Marshal(execution.EventPayload{
		ID:             ev.ID,
		Event:          typ,
		ExecutionID:    t.ExecutionID,
		Action:         action,
		Status:         t.To,
		PreviousStatus: t.From,
		Version:        t.Version,
		Timestamp:      t.At.UTC().Format(execution.TimeFormat),
	})
	if err != nil {
		panic(fmt.Sprintf("storetest: marshal event payload: %v", err))
	}
	ev.Payload = payload
	return ev
}

// advance returns the unleased write that applies the events to e at the
// given time, one version, history row and outbox event per event. A
// terminal result completes e and ends its schedule, as the engine does.
func advance(e execution.Execution, at time.Time, events ...fsm.Event) execution.Write {
	w := execution.Write{Expect: execution.Expect{Status: e.Status, Version: e.Version, Revision: e.Revision}}
	next := e
	next.Revision = e.Revision + 1
	next.UpdatedAt = at
	for _, ev := range events {
		t := execution.Transition{
			ExecutionID: e.ID,
			Version:     next.Version + 1,
			From:        next.Status,
			To:          target(next.Status, ev),
			Event:       ev,
			Reason:      "storetest " + string(ev),
			At:          at,
		}
		w.Transitions = append(w.Transitions, t)
		w.Events = append(w.Events, newEvent(e.Action, t))
		next.Status, next.Version = t.To, t.Version
	}
	if next.Done() {
		next.CompletedAt = at
		next.NextCheckAt = time.Time{}
		next.LeaseOwner = ""
	}
	w.Execution = next
	return w
}

// target returns the state ev leads to from from; the suite only uses
// legal moves.
func target(from fsm.State, ev fsm.Event) fsm.State {
	for _, t := range fsm.Transitions() {
		if t.From == from && t.Event == ev {
			return t.To
		}
	}
	panic(fmt.Sprintf("storetest: no transition %s from %s", ev, from))
}

// leased returns e as a claim by owner until until leaves it.
func leased(e execution.Execution, owner string, until time.Time) execution.Execution {
	e.LeaseOwner = owner
	e.NextCheckAt = until
	e.Revision++
	return e
}

type suite struct {
	newStore func(t *testing.T) execution.Store
}

// setup returns the subtest's context and a fresh store.
func (s suite) setup(t *testing.T) (context.Context, execution.Store) {
	t.Helper()
	return t.Context(), s.newStore(t)
}

// create stores c and returns the execution Create reports.
func create(t *testing.T, store execution.Store, c execution.Creation) execution.Execution {
	t.Helper()
	e, created, err := store.Create(t.Context(), c)
	if err != nil {
		t.Fatalf("Create %s: %v", c.Execution.ID, err)
	}
	if !created || e.ID != c.Execution.ID {
		t.Fatalf("Create %s = %s, created %t; want %[1]s, created true", c.Execution.ID, e.ID, created)
	}
	return e
}

// get returns the stored execution with the id.
func get(t *testing.T, store execution.Store, id string) execution.Execution {
	t.Helper()
	e, err := store.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get %s: %v", id, err)
	}
	return e
}

// write applies w and fails the test if the store refuses it.
func write(t *testing.T, store execution.Store, w execution.Write) {
	t.Helper()
	if err := store.Write(t.Context(), w); err != nil {
		t.Fatalf("Write %s v%d: %v", w.Execution.ID, w.Execution.Version, err)
	}
}

// claim runs Claim and returns the claimed executions sorted by id.
func claim(t *testing.T, store execution.Store, p execution.ClaimParams) []execution.Execution {
	t.Helper()
	got, err := store.Claim(t.Context(), p)
	if err != nil {
		t.Fatalf("Claim by %s: %v", p.Owner, err)
	}
	return sortedByID(got)
}

func sortedByID(es []execution.Execution) []execution.Execution {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b execution.Execution) int { return strings.Compare(a.ID, b.ID) })
	return es
}

func ids(es []execution.Execution) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// record is everything the store keeps about one execution.
type record struct {
	Execution execution.Execution
	History   []execution.Transition
	Events    []execution.Event
}

func load(t *testing.T, store execution.Store, id string) record {
	t.Helper()
	history, err := store.History(t.Context(), id)
	if err != nil {
		t.Fatalf("History %s: %v", id, err)
	}
	events, err := store.Events(t.Context(), id)
	if err != nil {
		t.Fatalf("Events %s: %v", id, err)
	}
	return record{Execution: get(t, store, id), History: history, Events: events}
}

// checkUnchanged fails the test if the execution's record differs from
// before.
func checkUnchanged(t *testing.T, store execution.Store, before record) {
	t.Helper()
	after := load(t, store, before.Execution.ID)
	if d := diff(after.Execution, before.Execution); d != "" {
		t.Errorf("execution changed: %s", d)
	}
	if d := diffAll(after.History, before.History); d != "" {
		t.Errorf("history changed: %s", d)
	}
	if d := diffAll(after.Events, before.Events); d != "" {
		t.Errorf("events changed: %s", d)
	}
}

// diff describes how got differs from want, two structs of one type, or
// returns "". Times must be equal instants, and a non-zero time in got
// must be in UTC; every other field must be deeply equal, so that a nil
// document is not an empty one.
func diff(got, want any) string {
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	var out []string
	for i := range g.NumField() {
		name := g.Type().Field(i).Name
		gf, wf := g.Field(i).Interface(), w.Field(i).Interface()
		if gt, ok := gf.(time.Time); ok {
			wt := wf.(time.Time)
			switch {
			case !gt.Equal(wt):
				out = append(out, fmt.Sprintf("%s = %v, want %v", name, gt, wt))
			case !gt.IsZero() && gt.Location() != time.UTC:
				out = append(out, fmt.Sprintf("%s = %v, want it in UTC", name, gt))
			}
			continue
		}
		if !reflect.DeepEqual(gf, wf) {
			out = append(out, fmt.Sprintf("%s = %s, want %s", name, show(gf), show(wf)))
		}
	}
	return strings.Join(out, "; ")
}

// diffAll is diff for lists.
func diffAll[T any](got, want []T) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d items, want %d", len(got), len(want))
	}
	var out []string
	for i := range got {
		if d := diff(got[i], want[i]); d != "" {
			out = append(out, fmt.Sprintf("[%d] %s", i, d))
		}
	}
	return strings.Join(out, "; ")
}

func show(v any) string {
	switch v := v.(type) {
	case json.RawMessage:
		if v == nil {
			return "nil"
		}
		return fmt.Sprintf("%q", v)
	case []byte:
		if v == nil {
			return "nil"
		}
		return fmt.Sprintf("%q", v)
	case *execution.Error:
		if v == nil {
			return "nil"
		}
		return fmt.Sprintf("%+v", *v)
	}
	return fmt.Sprintf("%#v", v)
}

func (s suite) testCreate(t *testing.T) {
	t.Run("Get returns a minimal execution as created, nil and zero fields included", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		c := NewCreation("servers.provision")

		create(t, store, c)

		got := load(t, store, c.Execution.ID)
		if d := diff(got.Execution, c.Execution); d != "" {
			t.Errorf("Get: %s", d)
		}
		if d := diffAll(got.History, []execution.Transition{c.Transition}); d != "" {
			t.Errorf("History: %s", d)
		}
		if d := diffAll(got.Events, []execution.Event{c.Event}); d != "" {
			t.Errorf("Events: %s", d)
		}
	})

	t.Run("Get returns every field in UTC at millisecond precision", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		c := NewCreation("domains.register")
		kolkata := time.FixedZone("IST", 5*3600+1800)
		at := time.Date(2031, 4, 5, 6, 7, 8, 9_000_000, kolkata)
		e := &c.Execution
		e.Owner = "customer-42"
		e.Input = json.RawMessage(`{"domain":"example.com","years":2}`)
		e.Output = json.RawMessage(`{"registered":true}`)
		e.Progress = json.RawMessage(`{"percent":50}`)
		e.Error = &execution.Error{Code: "registry_down", Message: "the registry did not answer"}
		e.IdempotencyKey = "order-7"
		e.RequestHash = requestHash(e.Action, string(e.Input))
		e.ExternalRef = "reg-123"
		e.Checks = 4
		e.FailedAttempts = 2
		e.SubmittedAt = at
		e.CreatedAt = at.Add(-time.Hour)
		e.UpdatedAt = at.Add(time.Minute)
		e.CompletedAt = at.Add(2 * time.Minute)
		e.NextCheckAt = at.Add(3 * time.Minute)
		e.Deadline = at.Add(24 * time.Hour)
		e.LeaseOwner = "lse_creator"

		create(t, store, c)

		if d := diff(get(t, store, e.ID), *e); d != "" {
			t.Errorf("Get: %s", d)
		}
	})

	t.Run("an unknown id is not found", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		create(t, store, NewCreation("servers.provision"))
		unknown := "exe_" + ulid.Make().String()

		calls := []struct {
			name string
			call func() error
		}{
			{"Get", func() error { _, err := store.Get(ctx, unknown); return err }},
			{"History", func() error { _, err := store.History(ctx, unknown); return err }},
			{"Events", func() error { _, err := store.Events(ctx, unknown); return err }},
			{"IgnoredUpdates", func() error { _, err := store.IgnoredUpdates(ctx, unknown); return err }},
		}
		for _, c := range calls {
			if err := c.call(); !errors.Is(err, execution.ErrNotFound) {
				t.Errorf("%s(unknown) = %v, want an error wrapping ErrNotFound", c.name, err)
			}
		}
	})

	t.Run("executions without an idempotency key never collide", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		first, second := NewCreation("servers.provision"), NewCreation("servers.provision")

		create(t, store, first)
		create(t, store, second)

		page, err := store.List(ctx, execution.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{second.Execution.ID, first.Execution.ID}
		if got := ids(page.Executions); !slices.Equal(got, want) {
			t.Errorf("List = %v, want %v", got, want)
		}
	})
}

func (s suite) testIdempotency(t *testing.T) {
	// keyed returns a creation with the idempotency key, for owner-1.
	keyed := func(key string) execution.Creation {
		c := NewCreation("servers.provision")
		c.Execution.IdempotencyKey = key
		return c
	}
	// checkOnly fails the test unless the store holds exactly the
	// execution with id, with its creation history row and event.
	checkOnly := func(t *testing.T, store execution.Store, id string) {
		t.Helper()
		page, err := store.List(t.Context(), execution.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(page.Executions); !slices.Equal(got, []string{id}) {
			t.Errorf("List = %v, want only %s", got, id)
		}
		r := load(t, store, id)
		if len(r.History) != 1 || len(r.Events) != 1 {
			t.Errorf("%s has %d history rows and %d events, want 1 and 1", id, len(r.History), len(r.Events))
		}
	}

	t.Run("a repeated key with the same request returns the stored execution", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		first, again := keyed("order-1"), keyed("order-1")
		create(t, store, first)
		stored := get(t, store, first.Execution.ID)

		got, created, err := store.Create(ctx, again)
		if err != nil {
			t.Fatalf("Create again: %v", err)
		}

		if created {
			t.Error("Create again reports created")
		}
		if d := diff(got, stored); d != "" {
			t.Errorf("Create again: %s", d)
		}
		checkOnly(t, store, first.Execution.ID)
		if _, err := store.Get(ctx, again.Execution.ID); !errors.Is(err, execution.ErrNotFound) {
			t.Errorf("Get of the repeated creation's id = %v, want ErrNotFound", err)
		}
	})

	t.Run("a repeated key with a different request conflicts", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		first, reused := keyed("order-1"), keyed("order-1")
		reused.Execution.Input = json.RawMessage(`{"size":"large"}`)
		reused.Execution.RequestHash = requestHash(reused.Execution.Action, `{"size":"large"}`)
		create(t, store, first)

		_, created, err := store.Create(ctx, reused)

		if !errors.Is(err, execution.ErrIdempotencyConflict) {
			t.Errorf("Create with a reused key = %v, want an error wrapping ErrIdempotencyConflict", err)
		}
		if created {
			t.Error("Create with a reused key reports created")
		}
		checkOnly(t, store, first.Execution.ID)
	})

	t.Run("the same key under another owner creates another execution", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		first, other := keyed("order-1"), keyed("order-1")
		other.Execution.Owner = "owner-2"

		create(t, store, first)
		create(t, store, other)

		page, err := store.List(ctx, execution.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{other.Execution.ID, first.Execution.ID}
		if got := ids(page.Executions); !slices.Equal(got, want) {
			t.Errorf("List = %v, want %v", got, want)
		}
		if d := diff(get(t, store, other.Execution.ID), other.Execution); d != "" {
			t.Errorf("Get of the other owner's execution: %s", d)
		}
	})
}

func (s suite) testWrite(t *testing.T) {
	t.Run("applies the new row and appends its history and events", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		c := NewCreation("servers.provision")
		e := create(t, store, c)
		at := e.CreatedAt.Add(time.Second)
		w := advance(e, at, fsm.Accept, fsm.Start)
		next := &w.Execution
		next.Output = json.RawMessage(`{"ip":"192.0.2.1"}`)
		next.Progress = json.RawMessage(`{"percent":10}`)
		next.Error = &execution.Error{Code: "slow", Message: "the provider is slow"}
		next.ExternalRef = "srv-9"
		next.Checks = 3
		next.FailedAttempts = 1
		next.SubmittedAt = at
		next.NextCheckAt = at.Add(time.Minute)
		next.Deadline = at.Add(time.Hour)

		write(t, store, w)

		got := load(t, store, e.ID)
		if d := diff(got.Execution, *next); d != "" {
			t.Errorf("Get: %s", d)
		}
		if got.Execution.Status != fsm.Running || got.Execution.Version != 3 {
			t.Errorf("Get = %s v%d, want running v3", got.Execution.Status, got.Execution.Version)
		}
		wantHistory := append([]execution.Transition{c.Transition}, w.Transitions...)
		if d := diffAll(got.History, wantHistory); d != "" {
			t.Errorf("History: %s", d)
		}
		wantEvents := append([]execution.Event{c.Event}, w.Events...)
		if d := diffAll(got.Events, wantEvents); d != "" {
			t.Errorf("Events: %s", d)
		}
	})

	t.Run("a terminal write completes the execution", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		e := create(t, store, NewCreation("servers.provision"))
		w := advance(e, e.CreatedAt.Add(time.Second), fsm.Cancel)

		write(t, store, w)

		got := get(t, store, e.ID)
		if d := diff(got, w.Execution); d != "" {
			t.Errorf("Get: %s", d)
		}
		if !got.NextCheckAt.IsZero() || got.CompletedAt.IsZero() {
			t.Errorf("Get: NextCheckAt %v, CompletedAt %v; want zero and set", got.NextCheckAt, got.CompletedAt)
		}
	})

	// Each case expects a state the execution is not in: running v3.
	stale := []struct {
		name   string
		expect func(e execution.Execution) execution.Expect
	}{
		{
			name: "a stale status conflicts and changes nothing",
			expect: func(e execution.Execution) execution.Expect {
				return execution.Expect{Status: fsm.Accepted, Version: e.Version, Revision: e.Revision}
			},
		},
		{
			name: "a stale version conflicts and changes nothing",
			expect: func(e execution.Execution) execution.Expect {
				return execution.Expect{Status: e.Status, Version: e.Version - 1, Revision: e.Revision}
			},
		},
		{
			name: "a newer version conflicts and changes nothing",
			expect: func(e execution.Execution) execution.Expect {
				return execution.Expect{Status: e.Status, Version: e.Version + 1, Revision: e.Revision}
			},
		},
		{
			name: "an expected lease on an unleased row conflicts and changes nothing",
			expect: func(e execution.Execution) execution.Expect {
				return execution.Expect{Status: e.Status, Version: e.Version, Revision: e.Revision, LeaseOwner: "lse_nobody"}
			},
		},
		{
			name: "a stale revision",
			expect: func(e execution.Execution) execution.Expect {
				return execution.Expect{Status: e.Status, Version: e.Version, Revision: e.Revision - 1}
			},
		},
	}
	for _, tc := range stale {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, store := s.setup(t)
			e := create(t, store, NewCreation("servers.provision"))
			w := advance(e, e.CreatedAt.Add(time.Second), fsm.Accept, fsm.Start)
			write(t, store, w)
			before := load(t, store, e.ID)
			late := advance(before.Execution, e.CreatedAt.Add(2*time.Second), fsm.Complete)
			late.Expect = tc.expect(before.Execution)

			err := store.Write(ctx, late)

			if !errors.Is(err, execution.ErrConflict) {
				t.Errorf("Write expecting %+v = %v, want an error wrapping ErrConflict", late.Expect, err)
			}
			checkUnchanged(t, store, before)
		})
	}

	t.Run("another lease owner conflicts and changes nothing", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		e := create(t, store, NewCreation("servers.provision"))
		claim(t, store, execution.ClaimParams{Now: e.NextCheckAt, Until: e.NextCheckAt.Add(time.Minute),
			Owner: "lse_a", Actions: []string{e.Action}, Limit: 1})
		before := load(t, store, e.ID)
		w := advance(before.Execution, e.CreatedAt.Add(time.Second), fsm.Accept)
		w.Expect.LeaseOwner = "lse_b"

		err := store.Write(ctx, w)

		if !errors.Is(err, execution.ErrConflict) {
			t.Errorf("Write by another lease owner = %v, want an error wrapping ErrConflict", err)
		}
		checkUnchanged(t, store, before)
	})
}

func (s suite) testClaim(t *testing.T) {
	t.Run("leases the due live executions of the listed actions", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		now := time.Now().UTC().Truncate(time.Millisecond)
		until := now.Add(5 * time.Minute)
		due := func(action string, at time.Time) execution.Execution {
			c := NewCreation(action)
			c.Execution.NextCheckAt = at
			return create(t, store, c)
		}
		dueNow := due("servers.provision", now)
		duePast := due("domains.register", now.Add(-time.Hour))
		notYet := due("servers.provision", now.Add(time.Millisecond))
		unlisted := due("mail.send", now.Add(-time.Hour))
		done := due("servers.provision", now.Add(-time.Hour))
		write(t, store, advance(done, now, fsm.Cancel))

		got := claim(t, store, execution.ClaimParams{Now: now, Until: until, Owner: "lse_a",
			Actions: []string{"servers.provision", "domains.register"}, Limit: 10})

		want := sortedByID([]execution.Execution{
			leased(dueNow, "lse_a", until),
			leased(duePast, "lse_a", until),
		})
		if d := diffAll(got, want); d != "" {
			t.Errorf("Claim: %s (claimed %v, want %v)", d, ids(got), ids(want))
		}
		for _, e := range want {
			if d := diff(get(t, store, e.ID), e); d != "" {
				t.Errorf("Get of claimed %s: %s", e.ID, d)
			}
		}
		for _, e := range []execution.Execution{notYet, unlisted} {
			if d := diff(get(t, store, e.ID), e); d != "" {
				t.Errorf("Get of unclaimed %s: %s", e.ID, d)
			}
		}
	})

	t.Run("takes at most Limit, the earliest due first", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		now := time.Now().UTC().Truncate(time.Millisecond)
		var created []execution.Execution
		for _, ago := range []time.Duration{time.Minute, 3 * time.Minute, 2 * time.Minute} {
			c := NewCreation("servers.provision")
			c.Execution.NextCheckAt = now.Add(-ago)
			created = append(created, create(t, store, c))
		}
		p := execution.ClaimParams{Now: now, Until: now.Add(time.Minute), Owner: "lse_a",
			Actions: []string{"servers.provision"}, Limit: 2}

		got := claim(t, store, p)

		want := []string{created[1].ID, created[2].ID}
		if !slices.Equal(ids(got), want) {
			t.Errorf("Claim with Limit 2 = %v, want the two due earliest %v", ids(got), want)
		}
		if e := get(t, store, created[0].ID); e.LeaseOwner != "" {
			t.Errorf("the latest due was leased to %q beyond the limit", e.LeaseOwner)
		}
	})

	t.Run("does not claim a leased execution again until the lease expires", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		e := create(t, store, NewCreation("servers.provision"))
		until := e.NextCheckAt.Add(time.Minute)
		p := execution.ClaimParams{Now: e.NextCheckAt, Until: until, Owner: "lse_a",
			Actions: []string{e.Action}, Limit: 10}
		if got := claim(t, store, p); !slices.Equal(ids(got), []string{e.ID}) {
			t.Fatalf("first Claim = %v, want [%s]", ids(got), e.ID)
		}

		p.Owner, p.Now, p.Until = "lse_b", until.Add(-time.Millisecond), until.Add(time.Minute)
		if got := claim(t, store, p); len(got) != 0 {
			t.Errorf("Claim before the lease expires = %v, want none", ids(got))
		}

		p.Now = until
		got := claim(t, store, p)
		want := leased(e, "lse_b", p.Until)
		want.Revision++ // claimed twice
		if d := diffAll(got, []execution.Execution{want}); d != "" {
			t.Errorf("Claim when the lease expires: %s", d)
		}
	})

	t.Run("never claims a terminal execution", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		e := create(t, store, NewCreation("servers.provision"))
		write(t, store, advance(e, e.CreatedAt, fsm.Fail))
		future := e.CreatedAt.Add(24 * time.Hour)

		got := claim(t, store, execution.ClaimParams{Now: future, Until: future.Add(time.Minute),
			Owner: "lse_a", Actions: []string{e.Action}, Limit: 10})

		if len(got) != 0 {
			t.Errorf("Claim = %v, want none", ids(got))
		}
	})

	t.Run("claims nothing without actions", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		e := create(t, store, NewCreation("servers.provision"))

		for _, actions := range [][]string{nil, {}} {
			got := claim(t, store, execution.ClaimParams{Now: e.NextCheckAt, Until: e.NextCheckAt.Add(time.Minute),
				Owner: "lse_a", Actions: actions, Limit: 10})
			if len(got) != 0 {
				t.Errorf("Claim with actions %#v = %v, want none", actions, ids(got))
			}
		}
		if d := diff(get(t, store, e.ID), e); d != "" {
			t.Errorf("Get: %s", d)
		}
	})

	t.Run("concurrent claims lease every execution exactly once", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		now := time.Now().UTC().Truncate(time.Millisecond)
		var want []string
		for range 6 {
			c := NewCreation("servers.provision")
			c.Execution.NextCheckAt = now
			want = append(want, create(t, store, c).ID)
		}

		var (
			mu      sync.Mutex
			ownerOf = map[string]string{}
			got     []string
			wg      sync.WaitGroup
		)
		for i := range 4 {
			owner := fmt.Sprintf("lse_%d", i)
			wg.Go(func() {
				batch, err := store.Claim(t.Context(), execution.ClaimParams{Now: now,
					Until: now.Add(time.Minute), Owner: owner, Actions: []string{"servers.provision"}, Limit: 2})
				if err != nil {
					t.Errorf("Claim by %s: %v", owner, err)
				}
				mu.Lock()
				defer mu.Unlock()
				for _, e := range batch {
					got = append(got, e.ID)
					ownerOf[e.ID] = owner
				}
			})
		}
		wg.Wait()

		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("claimed %v, want each of %v once", got, want)
		}
		for id, owner := range ownerOf {
			if e := get(t, store, id); e.LeaseOwner != owner {
				t.Errorf("%s is leased to %q, but Claim gave it to %q", id, e.LeaseOwner, owner)
			}
		}
	})
}

func (s suite) testLease(t *testing.T) {
	// claimed creates an execution and leases it to "lse_a" for a minute.
	claimed := func(t *testing.T, store execution.Store) execution.Execution {
		t.Helper()
		e := create(t, store, NewCreation("servers.provision"))
		got := claim(t, store, execution.ClaimParams{Now: e.NextCheckAt, Until: e.NextCheckAt.Add(time.Minute),
			Owner: "lse_a", Actions: []string{e.Action}, Limit: 1})
		if len(got) != 1 {
			t.Fatalf("Claim = %v, want [%s]", ids(got), e.ID)
		}
		return got[0]
	}

	t.Run("an unleased write keeps a held lease and its expiry", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		e := claimed(t, store)
		w := advance(e, e.UpdatedAt.Add(time.Second), fsm.Accept)
		w.Execution.LeaseOwner = ""
		w.Execution.NextCheckAt = e.NextCheckAt.Add(time.Hour)

		write(t, store, w)

		want := leased(w.Execution, e.LeaseOwner, e.NextCheckAt)
		want.Revision = w.Execution.Revision
		if d := diff(get(t, store, e.ID), want); d != "" {
			t.Errorf("Get: %s", d)
		}
	})

	t.Run("an unleased terminal write ends a held lease", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		e := claimed(t, store)
		w := advance(e, e.UpdatedAt.Add(time.Second), fsm.Cancel)

		write(t, store, w)

		got := get(t, store, e.ID)
		if d := diff(got, w.Execution); d != "" {
			t.Errorf("Get: %s", d)
		}
		if got.LeaseOwner != "" || !got.NextCheckAt.IsZero() {
			t.Errorf("Get: LeaseOwner %q, NextCheckAt %v; want both cleared", got.LeaseOwner, got.NextCheckAt)
		}
	})

	t.Run("a leased write ends the lease and sets the next check", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		e := claimed(t, store)
		w := advance(e, e.UpdatedAt.Add(time.Second), fsm.Accept)
		w.Expect.LeaseOwner = e.LeaseOwner
		w.Execution.LeaseOwner = ""
		w.Execution.NextCheckAt = e.NextCheckAt.Add(time.Hour)

		write(t, store, w)

		got := get(t, store, e.ID)
		if d := diff(got, w.Execution); d != "" {
			t.Errorf("Get: %s", d)
		}
		if got.LeaseOwner != "" {
			t.Errorf("Get: LeaseOwner %q, want it cleared", got.LeaseOwner)
		}
	})
}

func (s suite) testRelease(t *testing.T) {
	t.Run("by the lease owner ends the lease and sets the next check", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		e := create(t, store, NewCreation("servers.provision"))
		claim(t, store, execution.ClaimParams{Now: e.NextCheckAt, Until: e.NextCheckAt.Add(time.Minute),
			Owner: "lse_a", Actions: []string{e.Action}, Limit: 1})
		next := e.NextCheckAt.Add(10 * time.Second)

		if err := store.Release(ctx, e.ID, "lse_a", next); err != nil {
			t.Fatalf("Release: %v", err)
		}

		want := leased(e, "", next)
		want.Revision++ // the claim, then the release
		if d := diff(get(t, store, e.ID), want); d != "" {
			t.Errorf("Get: %s", d)
		}
	})

	t.Run("by another owner changes nothing", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		e := create(t, store, NewCreation("servers.provision"))
		claim(t, store, execution.ClaimParams{Now: e.NextCheckAt, Until: e.NextCheckAt.Add(time.Minute),
			Owner: "lse_a", Actions: []string{e.Action}, Limit: 1})
		before := load(t, store, e.ID)

		if err := store.Release(ctx, e.ID, "lse_b", e.NextCheckAt.Add(10*time.Second)); err != nil {
			t.Fatalf("Release: %v", err)
		}

		checkUnchanged(t, store, before)
	})
}

func (s suite) testSchedule(t *testing.T) {
	t.Run("NextDue returns the earliest next check of live executions of the actions", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		now := time.Now().UTC().Truncate(time.Millisecond)
		due := func(action string, at time.Time) execution.Execution {
			c := NewCreation(action)
			c.Execution.NextCheckAt = at
			return create(t, store, c)
		}
		due("servers.provision", now.Add(2*time.Minute))
		due("domains.register", now.Add(time.Minute))
		due("servers.provision", now.Add(3*time.Minute))
		due("mail.send", now.Add(-time.Hour))
		done := due("servers.provision", now.Add(-2*time.Hour))
		write(t, store, advance(done, now, fsm.Cancel))
		gone := due("dns.update", now)
		write(t, store, advance(gone, now, fsm.Fail))

		tests := []struct {
			actions []string
			want    time.Time
			ok      bool
		}{
			{[]string{"servers.provision"}, now.Add(2 * time.Minute), true},
			{[]string{"servers.provision", "domains.register"}, now.Add(time.Minute), true},
			{[]string{"mail.send", "domains.register"}, now.Add(-time.Hour), true},
			{[]string{"dns.update"}, time.Time{}, false},
			{[]string{"unknown.action"}, time.Time{}, false},
			{nil, time.Time{}, false},
		}
		for _, tc := range tests {
			got, ok, err := store.NextDue(ctx, tc.actions)
			if err != nil {
				t.Errorf("NextDue(%v): %v", tc.actions, err)
				continue
			}
			if ok != tc.ok || !got.Equal(tc.want) || (ok && got.Location() != time.UTC) {
				t.Errorf("NextDue(%v) = %v, %t; want %v, %t", tc.actions, got, ok, tc.want, tc.ok)
			}
		}
	})

	t.Run("NextDue counts a lease's expiry as its next check", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		e := create(t, store, NewCreation("servers.provision"))
		until := e.NextCheckAt.Add(time.Minute)
		claim(t, store, execution.ClaimParams{Now: e.NextCheckAt, Until: until,
			Owner: "lse_a", Actions: []string{e.Action}, Limit: 1})

		got, ok, err := store.NextDue(ctx, []string{e.Action})

		if err != nil || !ok || !got.Equal(until) {
			t.Errorf("NextDue = %v, %t, %v; want %v, true, nil", got, ok, err, until)
		}
	})

	t.Run("LiveActions lists the distinct actions of live executions, sorted", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		if got, err := store.LiveActions(ctx); err != nil || len(got) != 0 {
			t.Errorf("LiveActions of an empty store = %v, %v; want none", got, err)
		}
		for _, action := range []string{"servers.provision", "domains.register", "servers.provision"} {
			create(t, store, NewCreation(action))
		}
		done := create(t, store, NewCreation("mail.send"))
		write(t, store, advance(done, done.CreatedAt, fsm.Cancel))

		got, err := store.LiveActions(ctx)

		want := []string{"domains.register", "servers.provision"}
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("LiveActions = %v, %v; want %v", got, err, want)
		}
	})
}

func (s suite) testIgnored(t *testing.T) {
	t.Run("IgnoredUpdates returns the recorded reports in order", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		e := create(t, store, NewCreation("servers.provision"))
		quiet := create(t, store, NewCreation("servers.provision"))
		w := advance(e, e.CreatedAt.Add(time.Second), fsm.Cancel)
		write(t, store, w)
		want := []execution.IgnoredUpdate{
			{ExecutionID: e.ID, Status: fsm.Canceled, Version: 2, Reported: fsm.Completed,
				Reason: "late completion", At: e.CreatedAt.Add(2 * time.Second)},
			{ExecutionID: e.ID, Status: fsm.Canceled, Version: 2, Reported: fsm.Running,
				Reason: "late progress", At: e.CreatedAt.Add(time.Second)},
			{ExecutionID: e.ID, Status: fsm.Canceled, Version: 2,
				Reason: "cancel of a terminal execution", At: e.CreatedAt.Add(3 * time.Second)},
		}
		for _, u := range want {
			if err := store.RecordIgnored(ctx, u); err != nil {
				t.Fatalf("RecordIgnored: %v", err)
			}
		}

		got, err := store.IgnoredUpdates(ctx, e.ID)
		if err != nil {
			t.Fatalf("IgnoredUpdates: %v", err)
		}
		if d := diffAll(got, want); d != "" {
			t.Errorf("IgnoredUpdates: %s", d)
		}
		none, err := store.IgnoredUpdates(ctx, quiet.ID)
		if err != nil || len(none) != 0 {
			t.Errorf("IgnoredUpdates of an execution without any = %v, %v; want none", none, err)
		}
		if d := diff(get(t, store, e.ID), w.Execution); d != "" {
			t.Errorf("RecordIgnored changed the execution: %s", d)
		}
	})
}

func (s suite) testList(t *testing.T) {
	// list returns the ids of the executions of one page.
	list := func(t *testing.T, store execution.Store, f execution.Filter) []string {
		t.Helper()
		page, err := store.List(t.Context(), f)
		if err != nil {
			t.Fatalf("List %+v: %v", f, err)
		}
		if page.Next != "" {
			t.Errorf("List %+v: Next = %q on a single page, want empty", f, page.Next)
		}
		return ids(page.Executions)
	}

	t.Run("returns executions newest first, every field included", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		var want []execution.Execution
		for range 3 {
			want = append([]execution.Execution{create(t, store, NewCreation("servers.provision"))}, want...)
		}

		page, err := store.List(ctx, execution.Filter{})
		if err != nil {
			t.Fatal(err)
		}

		if d := diffAll(page.Executions, want); d != "" {
			t.Errorf("List: %s (got %v, want %v)", d, ids(page.Executions), ids(want))
		}
		if page.Next != "" {
			t.Errorf("List: Next = %q, want empty", page.Next)
		}
	})

	t.Run("filters by status, action and owner", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		add := func(action, owner string) execution.Execution {
			c := NewCreation(action)
			c.Execution.Owner = owner
			return create(t, store, c)
		}
		a1 := add("servers.provision", "owner-1")
		b1 := add("domains.register", "owner-1")
		a2 := add("servers.provision", "owner-2")
		done := add("servers.provision", "owner-1")
		write(t, store, advance(done, done.CreatedAt, fsm.Cancel))

		tests := []struct {
			filter execution.Filter
			want   []execution.Execution
		}{
			{execution.Filter{}, []execution.Execution{done, a2, b1, a1}},
			{execution.Filter{Status: fsm.Canceled}, []execution.Execution{done}},
			{execution.Filter{Status: fsm.Pending}, []execution.Execution{a2, b1, a1}},
			{execution.Filter{Action: "servers.provision"}, []execution.Execution{done, a2, a1}},
			{execution.Filter{Owner: "owner-2"}, []execution.Execution{a2}},
			{execution.Filter{Action: "servers.provision", Owner: "owner-1"}, []execution.Execution{done, a1}},
			{execution.Filter{Status: fsm.Pending, Action: "servers.provision", Owner: "owner-1"},
				[]execution.Execution{a1}},
			{execution.Filter{Action: "mail.send"}, nil},
			{execution.Filter{Status: fsm.Running}, nil},
		}
		for _, tc := range tests {
			if got, want := list(t, store, tc.filter), ids(tc.want); !slices.Equal(got, want) {
				t.Errorf("List %+v = %v, want %v", tc.filter, got, want)
			}
		}
	})

	t.Run("bounds the creation time, after inclusive and before exclusive", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		base := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
		var created []execution.Execution
		for i := range 3 {
			c := NewCreation("servers.provision")
			c.Execution.CreatedAt = base.Add(time.Duration(i) * time.Minute)
			created = append(created, create(t, store, c))
		}
		first, second, third := created[0].ID, created[1].ID, created[2].ID
		minute := base.Add(time.Minute)

		tests := []struct {
			filter execution.Filter
			want   []string
		}{
			{execution.Filter{CreatedAfter: minute}, []string{third, second}},
			{execution.Filter{CreatedBefore: minute}, []string{first}},
			{execution.Filter{CreatedAfter: minute, CreatedBefore: base.Add(2 * time.Minute)}, []string{second}},
			{execution.Filter{CreatedAfter: minute, CreatedBefore: minute}, nil},
			{execution.Filter{CreatedAfter: base.Add(3 * time.Minute)}, nil},
		}
		for _, tc := range tests {
			if got := list(t, store, tc.filter); !slices.Equal(got, tc.want) {
				t.Errorf("List after %v, before %v = %v, want %v",
					tc.filter.CreatedAfter, tc.filter.CreatedBefore, got, tc.want)
			}
		}
	})

	t.Run("bounds the creation time finer than a millisecond", func(t *testing.T) {
		t.Parallel()
		_, store := s.setup(t)
		e := create(t, store, NewCreation("servers.provision"))
		justAfter := e.CreatedAt.Add(500 * time.Microsecond)

		if got := list(t, store, execution.Filter{CreatedAfter: justAfter}); len(got) != 0 {
			t.Errorf("List created at or after %v = %v, want none: it was created at %v",
				justAfter, got, e.CreatedAt)
		}
		if got := list(t, store, execution.Filter{CreatedBefore: justAfter}); !slices.Equal(got, []string{e.ID}) {
			t.Errorf("List created before %v = %v, want [%s]: it was created at %v",
				justAfter, got, e.ID, e.CreatedAt)
		}
	})

	t.Run("pages visit every execution exactly once", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		var all, mine []string
		for i := range 5 {
			c := NewCreation("servers.provision")
			if i%2 == 0 {
				c.Execution.Owner = "owner-2"
				mine = append([]string{c.Execution.ID}, mine...)
			}
			all = append([]string{create(t, store, c).ID}, all...)
		}

		tests := []struct {
			filter execution.Filter
			want   []string
		}{
			{execution.Filter{Limit: 1}, all},
			{execution.Filter{Limit: 2}, all},
			{execution.Filter{Limit: 5}, all},
			{execution.Filter{Limit: 6}, all},
			{execution.Filter{Limit: 2, Owner: "owner-2"}, mine},
		}
		for _, tc := range tests {
			f := tc.filter
			var got []string
			pages := 0
			for pages < 10 {
				page, err := store.List(ctx, f)
				if err != nil {
					t.Fatalf("List %+v: %v", f, err)
				}
				pages++
				got = append(got, ids(page.Executions)...)
				if page.Next == "" {
					break
				}
				if len(page.Executions) != f.Limit {
					t.Errorf("List %+v: %d executions on a page that is not the last", f, len(page.Executions))
				}
				f.Cursor = page.Next
			}
			wantPages := (len(tc.want) + f.Limit - 1) / f.Limit
			if !slices.Equal(got, tc.want) || pages != wantPages {
				t.Errorf("paging %+v visited %v in %d pages, want %v in %d",
					tc.filter, got, pages, tc.want, wantPages)
			}
		}
	})

	t.Run("pages hold DefaultPageSize executions without a Limit", func(t *testing.T) {
		t.Parallel()
		ctx, store := s.setup(t)
		var all []string
		for range execution.DefaultPageSize + 1 {
			all = append([]string{create(t, store, NewCreation("servers.provision")).ID}, all...)
		}

		first, err := store.List(ctx, execution.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(first.Executions); !slices.Equal(got, all[:execution.DefaultPageSize]) || first.Next == "" {
			t.Fatalf("first page has %d executions and Next %q, want the newest %d and a cursor",
				len(got), first.Next, execution.DefaultPageSize)
		}
		second, err := store.List(ctx, execution.Filter{Cursor: first.Next})
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(second.Executions); !slices.Equal(got, all[execution.DefaultPageSize:]) || second.Next != "" {
			t.Errorf("second page = %v with Next %q, want %v and no cursor",
				got, second.Next, all[execution.DefaultPageSize:])
		}
	})
}
