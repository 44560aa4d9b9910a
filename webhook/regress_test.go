package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/webhook"
)

// countingStore counts claims.
type countingStore struct {
	webhook.Store
	claims atomic.Int32
}

func (c *countingStore) ClaimDeliveries(ctx context.Context, p webhook.ClaimParams) ([]webhook.Job, error) {
	c.claims.Add(1)
	return c.Store.ClaimDeliveries(ctx, p)
}

func TestHeldBackDeliveriesDoNotMakeTheLoopSpin(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	if _, _, err := e.disp.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: srv.URL}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		e.create() // three due deliveries; the cap of one holds two back
	}
	cs := &countingStore{Store: e.store}
	d, err := webhook.NewDispatcher(webhook.Config{Store: cs, Clock: e.clock, PerEndpoint: 1, PollInterval: time.Second,
		Timeout: time.Minute, Policy: webhook.AddressPolicy{AllowLoopback: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // how often it claims over half a second, at a one-second poll
	n := cs.claims.Load()
	stop, cancel := context.WithCancel(e.ctx)
	cancel()
	_ = d.Stop(stop)
	if n > 3 {
		t.Fatalf("%d claims in 500ms while deliveries were held back: the loop spins", n)
	}
}

func TestDisablingDuringAnAttemptKeepsItsOutcome(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	entered, release := make(chan struct{}), make(chan struct{})
	var status atomic.Int32
	status.Store(http.StatusNoContent)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	ep, _, err := e.disp.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	e.create()
	e.create()
	status.Store(http.StatusNoContent)

	done := make(chan struct{})
	go func() { defer close(done); e.runOnce() }()
	<-entered
	<-entered // both attempts in flight
	if err := e.disp.DisableEndpoint(e.ctx, ep.ID, "maintenance"); err != nil {
		t.Fatal(err)
	}
	close(release)
	<-done
	delivered := e.deliveries(webhook.DeliveryFilter{State: webhook.Delivered})
	if len(delivered) != 2 {
		t.Fatalf("%d delivered after disabling mid-attempt, want 2 (the answers were 204)", len(delivered))
	}
	for _, d := range delivered {
		if a, _ := e.disp.Attempts(e.ctx, d.ID); len(a) != 1 {
			t.Fatalf("delivery %d has %d attempts recorded", d.ID, len(a))
		}
	}
}

func TestRetryAfterForms(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{MaxRetryAfter: 10 * time.Minute})
	for _, tt := range []struct {
		header string
		want   time.Duration
	}{
		{"18446744074", 10 * time.Minute},
		{"99999999999999999999", 10 * time.Minute},
		{e.clock.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat), 2 * time.Minute},
	} {
		srv, ep := e.endpoint()
		srv.Respond(func(*http.Request, int) int { return http.StatusServiceUnavailable })
		srv.Config.Handler = retryAfter(tt.header, srv.Config.Handler)
		e.create()
		start := e.clock.Now()
		e.runOnce()
		d := e.deliveries(webhook.DeliveryFilter{EndpointID: ep.ID})
		if got := d[0].NextAttemptAt.Sub(start); got != tt.want {
			t.Errorf("Retry-After %q: next attempt in %s, want %s", tt.header, got, tt.want)
		}
		if err := e.disp.DisableEndpoint(e.ctx, ep.ID, "next"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRunOnceAfterStopIsRefused(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{})
	if err := e.disp.Stop(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.disp.RunOnce(e.ctx); !errors.Is(err, execution.ErrClosed) {
		t.Fatalf("RunOnce after Stop = %v", err)
	}
}

func TestReceiverRefusesTrailingDataAndDuplicateKeys(t *testing.T) {
	t.Parallel()
	r := setupReceiver(t, 0)
	r.current[exe1] = fsm.Running
	good := string(event("evt_t", exe1, fsm.Running, 3))
	for _, body := range []string{good + "GARBAGE", good + good, `{"id":"evt_t","id":"evt_u"` + good[len(`{"id":"evt_t"`):]} {
		if s := r.post([]byte(body), "evt_t", time.Now(), r.secret); s != http.StatusBadRequest {
			t.Errorf("%.60s…: answered %d, want 400", body, s)
		}
	}
	if r.calls.Load() != 0 {
		t.Fatalf("handled %d refused bodies", r.calls.Load())
	}
}
