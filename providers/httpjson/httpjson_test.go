package httpjson_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/httpjson"
	"github.com/execkit/execkit/providers/providertest"
)

// slowService is a fake external API: orders go queued → processing →
// done (or failed) one step per status check, deduplicated by
// Idempotency-Key.
type slowService struct {
	mu     sync.Mutex
	byKey  map[string]string
	checks map[string]int
	fail   map[string]bool
	posts  int
}

func newService(t *testing.T) (*slowService, *httptest.Server) {
	s := &slowService{byKey: map[string]string{}, checks: map[string]int{}, fail: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		var in map[string]any
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.posts++
		key := r.Header.Get("Idempotency-Key")
		id, ok := s.byKey[key]
		if !ok {
			id = fmt.Sprintf("ord_%d", len(s.byKey)+1)
			s.byKey[key] = id
			s.fail[id] = in["fail"] == true
		}
		fmt.Fprintf(w, `{"id":%q,"status":"queued"}`, id)
	})
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		id := r.PathValue("id")
		s.checks[id]++
		switch n := s.checks[id]; {
		case n == 1:
			fmt.Fprintf(w, `{"id":%q,"status":"processing"}`, id)
		case s.fail[id]:
			fmt.Fprintf(w, `{"id":%q,"status":"error","error":{"code":"out_of_stock","message":"none left"}}`, id)
		default:
			fmt.Fprintf(w, `{"id":%q,"status":"done","output":{"tracking":"TRK-%s"}}`, id, id)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return s, srv
}

func config(base string) httpjson.Config {
	return httpjson.Config{
		SubmitURL:  base + "/orders",
		StatusURL:  base + "/orders/{ref}",
		Statuses:   map[string]fsm.State{"queued": fsm.Accepted, "processing": fsm.Running, "done": fsm.Completed, "error": fsm.Failed},
		CheckAfter: time.Millisecond,
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	_, srv := newService(t)
	providertest.Run(t, providertest.Harness{
		New: func(t *testing.T) execution.Provider {
			p, err := httpjson.New(config(srv.URL))
			if err != nil {
				t.Fatal(err)
			}
			return p
		},
		Succeeds: execution.Execution{Action: "orders.place", Input: []byte(`{"sku":"A1"}`)},
		Fails:    execution.Execution{Action: "orders.place", Input: []byte(`{"fail":true}`)},
		Wait:     func(time.Duration) {},
	})
}

func TestFullCycleThroughTheEngineShape(t *testing.T) {
	t.Parallel()
	svc, srv := newService(t)
	p, _ := httpjson.New(config(srv.URL))
	e := execution.Execution{ID: execution.ExampleID(7), Input: []byte(`{"sku":"A1"}`)}
	u, err := p.Submit(context.Background(), e)
	if err != nil || u.Status != fsm.Accepted || u.ExternalRef != "ord_1" {
		t.Fatalf("submit: %+v, %v", u, err)
	}
	if again, _ := p.Submit(context.Background(), e); again.ExternalRef != "ord_1" || svc.posts != 2 || len(svc.byKey) != 1 {
		t.Fatalf("second submit made a second order: %+v", again)
	}
	e.ExternalRef = u.ExternalRef
	if u, _ = p.Check(context.Background(), e); u.Status != fsm.Running {
		t.Fatalf("first check: %+v", u)
	}
	if u, _ = p.Check(context.Background(), e); u.Status != fsm.Completed || string(u.Output) != `{"tracking":"TRK-ord_1"}` {
		t.Fatalf("second check: %+v", u)
	}
}

func TestErrorsAreTransientOrPermanentByStatus(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	status, retryAfter, delay := 0, "", time.Duration(0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		s, ra, d := status, retryAfter, delay
		mu.Unlock()
		time.Sleep(d)
		if ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(s)
		w.Write([]byte(`{"status":"mystery"}`))
	}))
	t.Cleanup(srv.Close)
	cfg := config(srv.URL)
	cfg.Timeout = 50 * time.Millisecond
	p, _ := httpjson.New(cfg)
	e := execution.Execution{ID: execution.ExampleID(9), Input: []byte(`{}`)}
	set := func(s int, ra string, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		status, retryAfter, delay = s, ra, d
	}

	var perm *execution.PermanentError
	var ra *execution.RetryAfterError
	set(503, "7", 0)
	if _, err := p.Submit(context.Background(), e); !errors.As(err, &ra) || ra.After != 7*time.Second || errors.As(err, &perm) {
		t.Errorf("503 with Retry-After: %v", err)
	}
	set(500, "", 0)
	if _, err := p.Submit(context.Background(), e); err == nil || errors.As(err, &perm) {
		t.Errorf("500: %v, want a transient error", err)
	}
	set(422, "", 0)
	if _, err := p.Submit(context.Background(), e); !errors.As(err, &perm) || perm.Code != "http_422" {
		t.Errorf("422: %v, want permanent", err)
	}
	set(200, "", 0)
	if _, err := p.Submit(context.Background(), e); err == nil || !strings.Contains(err.Error(), "not mapped") || errors.As(err, &perm) {
		t.Errorf("unmapped status: %v", err)
	}
	set(200, "", 200*time.Millisecond)
	if _, err := p.Submit(context.Background(), e); err == nil || errors.As(err, &perm) {
		t.Errorf("timeout: %v, want transient", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	good := config("http://127.0.0.1:1")
	for name, mutate := range map[string]func(*httpjson.Config){
		"a relative submit URL":      func(c *httpjson.Config) { c.SubmitURL = "/orders" },
		"a status URL without {ref}": func(c *httpjson.Config) { c.StatusURL = "http://127.0.0.1:1/orders" },
		"no statuses":                func(c *httpjson.Config) { c.Statuses = nil },
		"a status mapped to nothing": func(c *httpjson.Config) { c.Statuses = map[string]fsm.State{"x": "paused"} },
	} {
		c := good
		mutate(&c)
		if _, err := httpjson.New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCredentialsStayOutOfMessagesAndAnswersAreMadeToFit(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	answer := func(w http.ResponseWriter) {}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		a := answer
		mu.Unlock()
		a(w)
	}))
	t.Cleanup(srv.Close)
	set := func(a func(http.ResponseWriter)) {
		mu.Lock()
		defer mu.Unlock()
		answer = a
	}
	withCreds := strings.Replace(srv.URL, "http://", "http://user:s3cret@", 1)
	cfg := config(withCreds)
	cfg.SubmitURL += "?api_key=s3cret"
	p, err := httpjson.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := execution.Execution{ID: execution.ExampleID(11), Input: []byte(`{}`)}

	set(func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadRequest) })
	if _, err := p.Submit(context.Background(), e); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("4xx message: %v", err)
	}
	down, _ := httpjson.New(httpjson.Config{SubmitURL: "http://user:s3cret@127.0.0.1:1/orders?api_key=s3cret",
		StatusURL: "http://127.0.0.1:1/orders/{ref}", Statuses: cfg.Statuses})
	if _, err := down.Submit(context.Background(), e); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("transport error message: %v", err)
	}

	set(func(w http.ResponseWriter) { w.Write([]byte(`{"id":"o1","status":"done","output":"ok"}`)) })
	if u, err := p.Submit(context.Background(), e); err != nil || string(u.Output) != `{"value":"ok"}` {
		t.Errorf("string output: %+v, %v", u, err)
	}
	set(func(w http.ResponseWriter) { w.Write([]byte(`{"id":"o1","status":"done","output":null}`)) })
	if u, _ := p.Submit(context.Background(), e); string(u.Output) != `{}` {
		t.Errorf("null output: %s", u.Output)
	}

	set(func(w http.ResponseWriter) { w.WriteHeader(http.StatusRequestTimeout) })
	var perm *execution.PermanentError
	if _, err := p.Submit(context.Background(), e); err == nil || errors.As(err, &perm) {
		t.Errorf("408: %v, want transient", err)
	}
	set(func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", time.Now().Add(time.Minute).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	var ra *execution.RetryAfterError
	if _, err := p.Submit(context.Background(), e); !errors.As(err, &ra) || ra.After < 50*time.Second || ra.After > time.Minute {
		t.Errorf("Retry-After as a date: %v", err)
	}
}
