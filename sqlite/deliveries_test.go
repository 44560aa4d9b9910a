package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
	"github.com/execkit/execkit/webhook"
)

// deliveryEnv is a store with n endpoints that take every event.
func deliveryEnv(t *testing.T, ordered bool, n int) (*sqlite.Store, []string) {
	t.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "x.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	var ids []string
	for i := range n {
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		ep := webhook.Endpoint{ID: fmt.Sprintf("wep_01J00000000000000000000%03d", i), URL: fmt.Sprintf("https://hooks.example.com/%d", i),
			EventTypes: []string{"*"}, Ordered: ordered, CreatedAt: at, UpdatedAt: at}
		if err := store.AddEndpoint(context.Background(), ep, "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ep.ID)
	}
	return store, ids
}

func engineAt(t *testing.T, store *sqlite.Store, clock *fake.Clock) *execution.Engine {
	t.Helper()
	g, err := execution.New(store, execution.Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Register("servers.provision", fake.New(clock)); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestOrderedEndpointWaitsForAnEarlierVersionNotFannedOut covers two
// processes whose clocks differ: the later version's event id sorts
// first, so it is fanned out first, and must still wait for the earlier.
func TestOrderedEndpointWaitsForAnEarlierVersionNotFannedOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, _ := deliveryEnv(t, true, 1)
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	a := engineAt(t, store, fake.NewClock(now))
	b := engineAt(t, store, fake.NewClock(now.Add(-2*time.Second)))
	x, err := a.Create(ctx, execution.CreateRequest{Action: "servers.provision"}) // v1
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(ctx, x.ID, execution.Update{Status: fsm.Accepted}); err != nil { // v2, the lower id
		t.Fatal(err)
	}
	claim := func() []int64 {
		jobs, err := store.ClaimDeliveries(ctx, webhook.ClaimParams{Now: now, Until: now.Add(time.Minute),
			Owner: "dls_test", Limit: 10, PerEndpoint: 10})
		if err != nil {
			t.Fatal(err)
		}
		var versions []int64
		for _, j := range jobs {
			versions = append(versions, j.Delivery.Version)
		}
		return versions
	}
	if n, err := store.FanOut(ctx, now, 1); err != nil || n != 1 {
		t.Fatalf("FanOut = %d, %v", n, err)
	}
	if got := claim(); len(got) != 0 {
		t.Fatalf("claimed versions %v while version 1 was not fanned out; want none", got)
	}
	if n, err := store.FanOut(ctx, now, 1); err != nil || n != 1 {
		t.Fatalf("FanOut = %d, %v", n, err)
	}
	if got := claim(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("claimed versions %v, want [1]", got)
	}
}

// TestClaimServesTheEndpointWithFewestInFlightFirst: one endpoint with an
// old backlog and deliveries in flight, another with nothing in flight
// and a newer delivery; one free worker goes to the idle endpoint.
func TestClaimServesTheEndpointWithFewestInFlightFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, eps := deliveryEnv(t, false, 2)
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	g := engineAt(t, store, fake.NewClock(now))
	for range 5 {
		if _, err := g.Create(ctx, execution.CreateRequest{Action: "servers.provision"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.FanOut(ctx, now, 100); err != nil {
		t.Fatal(err)
	}
	// Both endpoints have five deliveries due; the first has three in
	// flight already, the second none.
	jobs, err := store.ClaimDeliveries(ctx, webhook.ClaimParams{Now: now, Until: now.Add(time.Minute), Owner: "dls_test",
		Limit: 1, PerEndpoint: 4, Busy: map[string]int{eps[0]: 3}})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claimed %d, %v", len(jobs), err)
	}
	if jobs[0].Delivery.EndpointID != eps[1] {
		t.Fatalf("the one free worker went to %s, which has 3 in flight; want %s, which has none",
			jobs[0].Delivery.EndpointID, eps[1])
	}
}
