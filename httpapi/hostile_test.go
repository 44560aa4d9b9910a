package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/httpapi"
)

func TestHostileRequests(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	x := e.create("o")
	huge := strings.Repeat("a", 500_000)
	tests := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		field                    string
	}{
		{"a huge unknown field", "POST", "/executions", `{"` + huge + `":1}`, nil, 400, huge[:60]},
		{"a long unknown field", "POST", "/executions", `{"` + huge[:5000] + `":1}`, nil, 400, huge[:60]},
		{"a huge unknown parameter", "GET", "/executions?" + huge[:5000] + "=1", "", nil, 400, huge[:60]},
		{"a parameter on cancel", "POST", "/executions/" + x.ID + "/cancel?force=true", "", nil, 400, "force"},
		{"a parameter on read", "GET", "/executions/" + x.ID + "?colour=red", "", nil, 400, "colour"},
		{"wait given twice", "GET", "/executions/" + x.ID + "?wait=1&wait=2", "", nil, 400, "wait"},
		{"a malformed query", "GET", "/executions?limit=5&%zz=1", "", nil, 400, "query"},
		{"a duplicate field", "POST", "/executions", `{"action":"boats.launch","action":"servers.provision"}`, nil, 400, "action"},
		{"a field in the wrong case", "POST", "/executions", `{"ACTION":"servers.provision"}`, nil, 400, "ACTION"},
		{"the zero deadline", "POST", "/executions", `{"action":"servers.provision","deadline":"0001-01-01T00:00:00Z"}`, nil, 400, "deadline"},
		{"a numeric deadline", "POST", "/executions", `{"action":"servers.provision","deadline":1893456000}`, nil, 400, "deadline"},
		{"a gzip body", "POST", "/executions", `{"action":"servers.provision"}`, []string{"Content-Encoding", "gzip"}, 415, "Content-Encoding"},
		{"UTF-16 declared", "POST", "/executions", `{"action":"servers.provision"}`, []string{"Content-Type", "application/json; charset=utf-16"}, 415, "Content-Type"},
		{"invalid UTF-8 in a reason", "POST", "/executions/" + x.ID + "/cancel", "{\"reason\":\"\xff\"}", nil, 400, "body"},
		{"a duplicate reason", "POST", "/executions/" + x.ID + "/cancel", `{"reason":"a","reason":"b"}`, nil, 400, "reason"},
	}
	for _, tt := range tests {
		r := e.do(tt.method, tt.path, "o", tt.body, tt.headers...)
		if r.status != tt.status || len(r.body) > 1000 {
			t.Errorf("%s: %d with %d bytes, want %d", tt.name, r.status, len(r.body), tt.status)
			continue
		}
		if p := r.problem(t); p.Field != tt.field {
			t.Errorf("%s: field %.70q, want %.70q", tt.name, p.Field, tt.field)
		}
	}
	// Two Idempotency-Key headers.
	req, _ := http.NewRequest("POST", e.srv.URL+"/executions", strings.NewReader(`{"action":"servers.provision"}`))
	req.Header.Set("X-Owner", "o")
	req.Header.Add("Idempotency-Key", "a")
	req.Header.Add("Idempotency-Key", "b")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 400 {
		t.Errorf("two Idempotency-Keys: %v, %v", resp.StatusCode, err)
	}
	if got, _ := e.engine.Get(e.ctx, x.ID); got.Status != fsm.Pending || got.Version != 1 {
		t.Fatalf("refused requests changed the execution: %s v%d", got.Status, got.Version)
	}
	if page, _ := e.engine.List(e.ctx, execution.Filter{}); len(page.Executions) != 1 {
		t.Fatalf("refused requests created %d executions", len(page.Executions)-1)
	}
}

func TestPathsAndMethodsAreAnsweredWithProblems(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	x := e.create("o")
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"POST", "/executions/cancel", 405, "GET, HEAD"},
		{"DELETE", "/executions/cancel", 405, "GET, HEAD"},
		{"GET", "/executions%2F" + x.ID, 404, ""},
		{"POST", "/executions/" + x.ID + "%2Fcancel", 405, "GET, HEAD"},
		{"GET", "/executions//transitions", 404, ""},
		{"GET", "/executions/./" + x.ID, 404, ""},
		{"GET", "/executions/", 404, ""},
		{"PUT", "/executions", 405, "GET, HEAD, POST"},
	}
	for _, tt := range tests {
		r := e.do(tt.method, tt.path, "o", "")
		if r.status != tt.status || r.header.Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d, Allow %q; want %d, %q", tt.method, tt.path, r.status, r.header.Get("Allow"), tt.status, tt.allow)
			continue
		}
		r.problem(t)
	}
	if r := e.do("GET", "/executions", "", ""); r.header.Get("WWW-Authenticate") != "Bearer" {
		t.Errorf("401 without WWW-Authenticate: %v", r.header)
	}
}

func TestIfNoneMatchFollowsRFC9110(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	x := e.create("o")
	for tag, want := range map[string]int{`*`: 304, `W/"0", W/"1"`: 304, `"1"`: 304, `W/"01"`: 200, `W/"+1"`: 200, `W/"2"`: 200} {
		if r := e.do("GET", "/executions/"+x.ID, "o", "", "If-None-Match", tag); r.status != want {
			t.Errorf("If-None-Match %s: %d, want %d", tag, r.status, want)
		}
	}
}

// counted serves canned answers and counts requests.
func counted(t *testing.T, h http.HandlerFunc) (*atomic.Int32, string) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return &n, srv.URL
}

func TestWaitNeverSpins(t *testing.T) {
	t.Parallel()
	// A server that offers long polls but answers 304 at once.
	n, url := counted(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(httpapi.MaxWaitHeader, "60")
		if r.Header.Get("If-None-Match") != "" {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		answer(fsm.Running, "")(w)
	})
	var sleeps atomic.Int32
	c, _ := httpapi.NewClient(url, httpapi.ClientConfig{Sleep: func(ctx context.Context, d time.Duration) error {
		if sleeps.Add(1) == 5 {
			return context.Canceled
		}
		return nil
	}})
	_, _ = c.Wait(context.Background(), testID)
	if got := n.Load(); got > 7 {
		t.Fatalf("%d requests for %d sleeps: the client spins", got, sleeps.Load())
	}
}

func TestClientDistrustsOddAnswers(t *testing.T) {
	t.Parallel()
	// A 503 whose body claims 404 is a 503.
	n, url := counted(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"type":"urn:execkit:problem:not-found","status":404}`))
	})
	sl := &sleeps{}
	c, _ := httpapi.NewClient(url, httpapi.ClientConfig{Sleep: sl.sleep, MaxErrors: 3})
	_, err := c.Wait(context.Background(), testID)
	if errors.Is(err, execution.ErrNotFound) || n.Load() != 3 {
		t.Fatalf("err = %v after %d requests", err, n.Load())
	}

	// A redirect is not followed, and not taken for an execution.
	_, url = counted(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	c, _ = httpapi.NewClient(url, httpapi.ClientConfig{})
	if _, err := c.Create(context.Background(), httpapi.CreateRequest{Action: "a.b"}, ""); err == nil {
		t.Fatal("Create followed a redirect")
	}
	if _, err := c.Get(context.Background(), "."); !errors.Is(err, execution.ErrInvalid) {
		t.Fatalf("Get(.) = %v", err)
	}

	// A 429 is retried after its Retry-After, capped.
	k := 0
	_, url = counted(t, func(w http.ResponseWriter, r *http.Request) {
		if k++; k == 1 {
			w.Header().Set("Retry-After", "86400000")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		answer(fsm.Completed, "")(w)
	})
	sl = &sleeps{}
	c, _ = httpapi.NewClient(url, httpapi.ClientConfig{Sleep: sl.sleep, MaxRetryAfter: time.Minute})
	if got, err := c.Wait(context.Background(), testID); err != nil || got.Status != fsm.Completed {
		t.Fatalf("after a 429: %+v, %v", got, err)
	}
	if d := sl.all(); len(d) != 1 || d[0] != time.Minute {
		t.Fatalf("slept %v, want [1m]", d)
	}

	// A terminal status ends the wait whatever "done" says.
	_, url = counted(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"id":"` + testID + `","status":"completed","version":2,"done":false}`))
	})
	c, _ = httpapi.NewClient(url, httpapi.ClientConfig{Sleep: (&sleeps{}).sleep})
	if got, err := c.Wait(context.Background(), testID); err != nil || got.Status != fsm.Completed {
		t.Fatalf("completed but not done: %+v, %v", got, err)
	}
}
