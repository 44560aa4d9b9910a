package webhook_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
	"github.com/execkit/execkit/webhook"
	"github.com/execkit/execkit/webhook/webhooktest"
)

// denv is an engine and a dispatcher on one SQLite file, under a manual
// clock that starts at the wall clock's time (receivers check timestamps).
type denv struct {
	t      testing.TB
	ctx    context.Context
	store  *sqlite.Store
	clock  *fake.Clock
	engine *execution.Engine
	disp   *webhook.Dispatcher
}

func setupDispatch(t testing.TB, cfg webhook.Config) *denv {
	t.Helper()
	e := &denv{t: t, ctx: context.Background(), clock: fake.NewClock(time.Now().UTC().Truncate(time.Second))}
	var err error
	e.store, err = sqlite.Open(e.ctx, filepath.Join(t.TempDir(), "x.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	e.engine, err = execution.New(e.store, execution.Config{Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.engine.Register("servers.provision", fake.New(e.clock)); err != nil {
		t.Fatal(err)
	}
	cfg.Store, cfg.Clock = e.store, e.clock
	cfg.Policy.AllowLoopback = true
	if cfg.Schedule == nil {
		cfg.Schedule = []time.Duration{0, 10 * time.Second, 20 * time.Second}
	}
	e.disp, err = webhook.NewDispatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// endpoint adds a recording server as an endpoint.
func (e *denv) endpoint(types ...string) (*webhooktest.Server, webhook.Endpoint) {
	e.t.Helper()
	secret := webhook.NewSecret()
	srv := webhooktest.NewServer(e.t, secret)
	ep, _, err := e.disp.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: srv.URL + "/hooks", Secret: secret, EventTypes: types})
	if err != nil {
		e.t.Fatal(err)
	}
	return srv, ep
}

func (e *denv) create() execution.Execution {
	e.t.Helper()
	x, err := e.engine.Create(e.ctx, execution.CreateRequest{Action: "servers.provision"})
	if err != nil {
		e.t.Fatal(err)
	}
	return x
}

func (e *denv) apply(id string, s fsm.State) {
	e.t.Helper()
	if _, err := e.engine.Apply(e.ctx, id, execution.Update{Status: s}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *denv) runOnce() int {
	e.t.Helper()
	n, err := e.disp.RunOnce(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *denv) deliveries(f webhook.DeliveryFilter) []webhook.Delivery {
	e.t.Helper()
	d, err := e.disp.Deliveries(e.ctx, f)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func TestDeliversTheStoredEventSigned(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	srv, _ := e.endpoint()
	x := e.create()
	e.apply(x.ID, fsm.Completed)

	if n := e.runOnce(); n != 4 {
		t.Fatalf("attempted %d deliveries, want 4 (created, accepted, running, completed)", n)
	}
	got := srv.Delivered()
	events, _ := e.engine.Events(e.ctx, x.ID)
	if len(got) != 4 || srv.Rejected() != 0 {
		t.Fatalf("received %d, rejected %d", len(got), srv.Rejected())
	}
	byID := map[string]webhooktest.Received{}
	for _, r := range got {
		byID[r.ID] = r
	}
	for _, ev := range events {
		r, ok := byID[ev.ID]
		if !ok || string(r.Body) != string(ev.Payload) {
			t.Fatalf("event %s: received %q, stored %q", ev.ID, r.Body, ev.Payload)
		}
		if ts := r.Header.Get(webhook.HeaderTimestamp); ts != itoa(e.clock.Now().Unix()) {
			t.Fatalf("webhook-timestamp %s, want the attempt's time %d", ts, e.clock.Now().Unix())
		}
	}
	if d := e.deliveries(webhook.DeliveryFilter{State: webhook.Delivered}); len(d) != 4 {
		t.Fatalf("%d delivered deliveries", len(d))
	}
	// Nothing is left to do, and nothing is sent twice.
	if n := e.runOnce(); n != 0 || len(srv.Received()) != 4 {
		t.Fatalf("second pass attempted %d; received %d", n, len(srv.Received()))
	}
}

func TestFiltersApplyWhenEventsFanOut(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	srv, ep := e.endpoint("execution.completed")
	x := e.create()
	e.apply(x.ID, fsm.Running)
	e.runOnce()
	if n := len(srv.Received()); n != 0 {
		t.Fatalf("received %d events the filter excludes", n)
	}
	// A wider filter applies to events fanned out from now on only.
	if _, err := e.disp.UpdateEndpoint(e.ctx, ep.ID, webhook.EndpointConfig{URL: ep.URL, EventTypes: []string{"execution.*"}}); err != nil {
		t.Fatal(err)
	}
	e.apply(x.ID, fsm.Completed)
	e.runOnce()
	got := srv.Received()
	if len(got) != 1 || got[0].Event.Event != "execution.completed" {
		t.Fatalf("received %+v", got)
	}
	if _, err := e.disp.UpdateEndpoint(e.ctx, ep.ID, webhook.EndpointConfig{URL: ep.URL, EventTypes: []string{"Execution.*"}}); !errors.Is(err, webhook.ErrInvalid) {
		t.Fatalf("bad filter: %v", err)
	}
}

func TestRetriesFollowTheScheduleThenDie(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	srv, _ := e.endpoint()
	srv.Respond(func(*http.Request, int) int { return http.StatusInternalServerError })
	e.create()

	start := e.clock.Now()
	e.runOnce()
	d := e.deliveries(webhook.DeliveryFilter{})[0]
	if wait := d.NextAttemptAt.Sub(start); d.State != webhook.Pending || d.Attempts != 1 || wait < 9*time.Second || wait > 11*time.Second {
		t.Fatalf("after attempt 1: %s, %d attempts, next in %s (want 10s ±10%%)", d.State, d.Attempts, wait)
	}
	e.clock.Advance(5 * time.Second)
	if n := e.runOnce(); n != 0 {
		t.Fatalf("attempted %d before the next attempt was due", n)
	}
	e.clock.Set(d.NextAttemptAt)
	e.runOnce()
	d = e.deliveries(webhook.DeliveryFilter{})[0]
	e.clock.Set(d.NextAttemptAt)
	e.runOnce()

	dead := e.deliveries(webhook.DeliveryFilter{State: webhook.Dead})
	if len(dead) != 1 || dead[0].Attempts != 3 || dead[0].LastStatus != 500 {
		t.Fatalf("dead = %+v", dead)
	}
	attempts, err := e.disp.Attempts(e.ctx, dead[0].ID)
	if err != nil || len(attempts) != 3 || attempts[2].StatusCode != 500 || attempts[2].Error != "answered 500" {
		t.Fatalf("attempts = %+v, %v", attempts, err)
	}
	if len(srv.Received()) != 3 {
		t.Fatalf("received %d", len(srv.Received()))
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	var followed atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { followed.Add(1) }))
	t.Cleanup(target.Close)
	srv, _ := e.endpoint()
	srv.Respond(func(*http.Request, int) int { return http.StatusFound })
	e.create()
	e.runOnce()
	d := e.deliveries(webhook.DeliveryFilter{})[0]
	if d.State != webhook.Pending || d.LastStatus != 302 || followed.Load() != 0 {
		t.Fatalf("after a 302: %s, status %d, followed %d", d.State, d.LastStatus, followed.Load())
	}
}

func TestGoneDisablesTheEndpointAndParksItsDeliveries(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	srv, ep := e.endpoint()
	srv.Respond(func(_ *http.Request, n int) int {
		if n == 0 {
			return http.StatusGone
		}
		return http.StatusNoContent
	})
	x := e.create()
	e.runOnce()
	got, err := e.store.GetEndpoint(e.ctx, ep.ID)
	if err != nil || got.Enabled() || got.DisabledReason != "endpoint answered 410 Gone" {
		t.Fatalf("endpoint after 410: %+v, %v", got, err)
	}
	e.apply(x.ID, fsm.Accepted) // fanned out while disabled: parked
	e.runOnce()
	if parked := e.deliveries(webhook.DeliveryFilter{State: webhook.Parked}); len(parked) != 2 {
		t.Fatalf("%d parked deliveries, want 2", len(parked))
	}
	if err := e.disp.EnableEndpoint(e.ctx, ep.ID); err != nil {
		t.Fatal(err)
	}
	e.runOnce()
	if n := len(srv.Delivered()); n != 2 {
		t.Fatalf("delivered %d after enabling, want 2", n)
	}
}

func TestRetryAfterIsHonouredWithinBounds(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{MaxRetryAfter: 10 * time.Minute})
	for _, tt := range []struct {
		header string
		want   time.Duration
	}{{"120", 2 * time.Minute}, {"999999", 10 * time.Minute}} {
		srv, ep := e.endpoint()
		srv.Respond(func(r *http.Request, _ int) int { return http.StatusTooManyRequests })
		srv.Config.Handler = retryAfter(tt.header, srv.Config.Handler)
		e.create()
		start := e.clock.Now()
		e.runOnce()
		d := e.deliveries(webhook.DeliveryFilter{EndpointID: ep.ID})
		if len(d) == 0 || d[0].NextAttemptAt.Sub(start) != tt.want {
			t.Fatalf("Retry-After %s: next attempt in %s, want %s", tt.header, d[0].NextAttemptAt.Sub(start), tt.want)
		}
		if err := e.disp.DisableEndpoint(e.ctx, ep.ID, "done with it"); err != nil {
			t.Fatal(err)
		}
	}
}

func retryAfter(value string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", value)
		next.ServeHTTP(w, r)
	})
}

func TestAStalledEndpointDoesNotHoldUpAHealthyOne(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{Workers: 4, PerEndpoint: 1, Timeout: 30 * time.Second})
	release := make(chan struct{})
	var stalledInFlight, stalledMax atomic.Int32
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := stalledInFlight.Add(1)
		defer stalledInFlight.Add(-1)
		if n > stalledMax.Load() {
			stalledMax.Store(n)
		}
		<-release
	}))
	t.Cleanup(stalled.Close)
	t.Cleanup(func() { close(release) })
	if _, _, err := e.disp.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: stalled.URL}); err != nil {
		t.Fatal(err)
	}
	healthy, _ := e.endpoint()

	const n = 12
	for range n {
		e.create()
	}
	if err := e.disp.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if _, err := healthy.WaitFor(ctx, func(r []webhooktest.Received) bool { return len(r) == n }); err != nil {
		t.Fatalf("healthy endpoint got %d of %d while the other stalled: %v", len(healthy.Received()), n, err)
	}
	if m := stalledMax.Load(); m != 1 {
		t.Fatalf("%d deliveries in flight to the stalled endpoint, cap 1", m)
	}
	release <- struct{}{} // let one finish so Stop is quick
	stopCtx, stopCancel := context.WithTimeout(e.ctx, time.Second)
	defer stopCancel()
	_ = e.disp.Stop(stopCtx)
}

func TestAnEndpointFailingLongEnoughIsDisabled(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{DisableAfter: time.Hour, Schedule: []time.Duration{0, time.Minute, time.Minute, time.Minute, time.Minute}})
	srv, ep := e.endpoint()
	srv.Respond(func(*http.Request, int) int { return http.StatusBadGateway })
	e.create()
	e.runOnce()
	e.clock.Advance(30 * time.Minute)
	e.create()
	e.runOnce()
	if got, _ := e.store.GetEndpoint(e.ctx, ep.ID); !got.Enabled() {
		t.Fatalf("disabled after 30 minutes of failures: %+v", got)
	}
	e.clock.Advance(31 * time.Minute)
	e.runOnce()
	got, _ := e.store.GetEndpoint(e.ctx, ep.ID)
	if got.Enabled() || !strings.HasPrefix(got.DisabledReason, "failing since") {
		t.Fatalf("endpoint = %+v, want disabled", got)
	}
	if parked := e.deliveries(webhook.DeliveryFilter{State: webhook.Parked}); len(parked) != 2 {
		t.Fatalf("%d parked", len(parked))
	}
}

func TestReplay(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	srv, ep := e.endpoint()
	x := e.create()
	e.apply(x.ID, fsm.Accepted)
	e.runOnce()
	events, _ := e.engine.Events(e.ctx, x.ID)

	if err := e.disp.Replay(e.ctx, ep.ID, events[0].ID); err != nil {
		t.Fatal(err)
	}
	e.runOnce()
	got := srv.Received()
	if len(got) != 3 || got[2].ID != events[0].ID || string(got[2].Body) != string(events[0].Payload) {
		t.Fatalf("after replay: %d received", len(got))
	}
	n, err := e.disp.ReplaySince(e.ctx, ep.ID, x.CreatedAt)
	if err != nil || n != 2 {
		t.Fatalf("ReplaySince = %d, %v", n, err)
	}
	e.runOnce()
	if len(srv.Received()) != 5 {
		t.Fatalf("received %d after replaying all", len(srv.Received()))
	}
	if err := e.disp.Replay(e.ctx, ep.ID, "evt_01JZZZZZZZZZZZZZZZZZZZZZZZ"); !errors.Is(err, webhook.ErrEventNotFound) {
		t.Fatalf("replay of an unknown event: %v", err)
	}
}

func TestOrderedEndpointDeliversInVersionOrder(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	secret := webhook.NewSecret()
	srv := webhooktest.NewServer(t, secret)
	srv.Respond(func(_ *http.Request, n int) int {
		if n == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	if _, _, err := e.disp.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: srv.URL, Secret: secret, Ordered: true}); err != nil {
		t.Fatal(err)
	}
	x := e.create()
	e.apply(x.ID, fsm.Running)
	if n := e.runOnce(); n != 1 {
		t.Fatalf("attempted %d, want only version 1", n)
	}
	d := e.deliveries(webhook.DeliveryFilter{State: webhook.Pending})
	e.clock.Set(d[len(d)-1].NextAttemptAt)
	for e.runOnce() > 0 {
	}
	var versions []int64
	for _, r := range srv.Received() {
		versions = append(versions, r.Event.Version)
	}
	if want := []int64{1, 1, 2, 3}; len(versions) != 4 || versions[1] != 1 || versions[2] != 2 || versions[3] != 3 {
		t.Fatalf("versions in arrival order %v, want %v", versions, want)
	}
}

func TestAddressGuardAtRegistrationAndAtDialTime(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	strict, err := webhook.NewDispatcher(webhook.Config{Store: e.store, Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	if _, _, err := strict.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: srv.URL}); !errors.Is(err, webhook.ErrForbiddenAddress) {
		t.Fatalf("strict AddEndpoint(%s) = %v", srv.URL, err)
	}
	// Added under a loopback-friendly policy, delivered under a strict one:
	// the dial is refused before a connection is made.
	if _, _, err := e.disp.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: srv.URL}); err != nil {
		t.Fatal(err)
	}
	e.create()
	if _, err := strict.RunOnce(e.ctx); err != nil {
		t.Fatal(err)
	}
	d := e.deliveries(webhook.DeliveryFilter{})[0]
	attempts, _ := strict.Attempts(e.ctx, d.ID)
	if hits.Load() != 0 || len(attempts) != 1 || !strings.Contains(attempts[0].Error, "loopback") {
		t.Fatalf("hits %d, attempts %+v", hits.Load(), attempts)
	}
}

func TestRotationSignsWithBothSecretsDuringTheOverlap(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	old := webhook.NewSecret()
	var mu sync.Mutex
	var sigs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		sigs = append(sigs, r.Header.Get(webhook.HeaderSignature))
	}))
	t.Cleanup(srv.Close)
	ep, _, err := e.disp.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: srv.URL, Secret: old})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.disp.RotateSecret(e.ctx, ep.ID, webhook.Secret{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	e.create()
	e.runOnce()
	e.clock.Advance(2 * time.Hour)
	e.create()
	e.runOnce()
	mu.Lock()
	defer mu.Unlock()
	if len(sigs) != 2 || len(strings.Fields(sigs[0])) != 2 || len(strings.Fields(sigs[1])) != 1 {
		t.Fatalf("signatures %q: want two during the overlap, one after", sigs)
	}
}

func TestStopAbandonsAttemptsWithoutCountingThem(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{Timeout: time.Minute})
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // lets the server notice the client leaving
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) }) // runs before Close
	if _, _, err := e.disp.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: hang.URL}); err != nil {
		t.Fatal(err)
	}
	e.create()
	if err := e.disp.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	<-entered
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if err := e.disp.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop = %v", err)
	}
	d := e.deliveries(webhook.DeliveryFilter{})[0]
	attempts, _ := e.disp.Attempts(e.ctx, d.ID)
	if d.State != webhook.Pending || d.Attempts != 0 || len(attempts) != 0 {
		t.Fatalf("after an abandoned attempt: %s, %d attempts, %d recorded", d.State, d.Attempts, len(attempts))
	}
}
