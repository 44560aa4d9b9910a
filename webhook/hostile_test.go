package webhook_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/webhook"
)

// TestHostileEndpoints delivers the same events to endpoints that fail at
// random, hang past the timeout, reset the connection, redirect, answer
// 410, throttle with Retry-After or send an endless body, beside a healthy
// one; every delivery ends as the rules say.
func TestHostileEndpoints(t *testing.T) {
	t.Parallel()
	e := setupDispatch(t, webhook.Config{}) // for its store; this test runs on the wall clock
	d, err := webhook.NewDispatcher(webhook.Config{Store: e.store, Timeout: 300 * time.Millisecond,
		ConnectTimeout: 300 * time.Millisecond, Schedule: []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond},
		MaxRetryAfter: 200 * time.Millisecond, PerEndpoint: 2, Workers: 8, PollInterval: 20 * time.Millisecond,
		Policy: webhook.AddressPolicy{AllowLoopback: true}})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	handlers := map[string]http.HandlerFunc{
		"healthy": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
		"flaky": func(w http.ResponseWriter, r *http.Request) {
			if rand.IntN(2) == 0 {
				w.WriteHeader(http.StatusInternalServerError)
			}
		},
		"hang": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-stop:
			case <-r.Context().Done():
			}
		},
		"reset": func(w http.ResponseWriter, r *http.Request) { c, _, _ := w.(http.Hijacker).Hijack(); c.Close() },
		"redirect": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		},
		"gone": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) },
		"throttle": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
		},
		"endless": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			chunk := []byte(strings.Repeat("x", 32<<10))
			for {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		},
	}
	endpoints := map[string]string{} // id → kind
	for kind, h := range handlers {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		ep, _, err := d.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		endpoints[ep.ID] = kind
	}
	t.Cleanup(func() { close(stop) })
	engine, _ := execution.New(e.store, execution.Config{})
	_ = engine.Register("servers.provision", noopProvider{})
	const n = 6
	for range n {
		if _, err := engine.Create(e.ctx, execution.CreateRequest{Action: "servers.provision"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		// One read, so that the count and the states come from the same
		// snapshot.
		all, err := d.Deliveries(e.ctx, webhook.DeliveryFilter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		pending := 0
		for _, del := range all {
			if del.State == webhook.Pending {
				pending++
			}
		}
		if pending == 0 && len(all) == n*len(handlers) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pending deliveries after a minute", pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopCtx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	if err := d.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}

	counts := map[string]map[webhook.DeliveryState]int{}
	all, _ := d.Deliveries(e.ctx, webhook.DeliveryFilter{Limit: 1000})
	for _, del := range all {
		kind := endpoints[del.EndpointID]
		if counts[kind] == nil {
			counts[kind] = map[webhook.DeliveryState]int{}
		}
		counts[kind][del.State]++
		attempts, _ := d.Attempts(e.ctx, del.ID)
		if len(attempts) == 0 {
			if del.State != webhook.Parked {
				t.Errorf("%s: %s without an attempt", kind, del.State)
			}
			continue // parked before its turn: the endpoint answered 410 to another
		}
		last := attempts[len(attempts)-1]
		switch del.State {
		case webhook.Delivered:
			if last.StatusCode < 200 || last.StatusCode > 299 || len(last.Response) > 1024 {
				t.Errorf("%s: delivered with last status %d and %d bytes kept", kind, last.StatusCode, len(last.Response))
			}
		case webhook.Dead:
			if len(attempts) != 3 {
				t.Errorf("%s: dead after %d attempts", kind, len(attempts))
			}
		}
	}
	want := map[string]map[webhook.DeliveryState]int{
		"healthy": {webhook.Delivered: n}, "endless": {webhook.Delivered: n},
		"hang": {webhook.Dead: n}, "reset": {webhook.Dead: n}, "redirect": {webhook.Dead: n},
		"throttle": {webhook.Dead: n}, "gone": {webhook.Parked: n},
	}
	for kind, w := range want {
		for state, c := range w {
			if counts[kind][state] != c {
				t.Errorf("%s: %v, want %d %s", kind, counts[kind], c, state)
			}
		}
	}
	if f := counts["flaky"]; f[webhook.Delivered]+f[webhook.Dead] != n {
		t.Errorf("flaky: %v, want every delivery delivered or dead", f)
	}
	t.Logf("final states: %v", counts)
}

// noopProvider never answers; the test only needs events.
type noopProvider struct{}

func (noopProvider) Name() string { return "noop" }
func (noopProvider) Submit(context.Context, execution.Execution) (execution.Update, error) {
	return execution.Update{}, nil
}
func (noopProvider) Check(context.Context, execution.Execution) (execution.Update, error) {
	return execution.Update{}, nil
}
