package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
)

var t0 = time.Date(2026, 5, 30, 12, 0, 0, 0, time.UTC)

// env is a handler on a fresh SQLite file, served on loopback. Requests
// name their owner in the X-Owner header.
type env struct {
	t      testing.TB
	ctx    context.Context
	store  *sqlite.Store
	clock  *fake.Clock
	engine *execution.Engine
	srv    *httptest.Server
}

func setup(t testing.TB, cfg httpapi.Config) *env {
	t.Helper()
	e := &env{t: t, ctx: context.Background(), clock: fake.NewClock(t0)}
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
	p := fake.New(e.clock)
	p.Script("servers.provision", fake.Script{Cancelable: true, Steps: []fake.Step{
		fake.Accept(time.Second), fake.Start(2 * time.Second), fake.Complete(5*time.Second, `{"ipv4":"203.0.113.10"}`)}})
	if err := e.engine.Register("servers.provision", p); err != nil {
		t.Fatal(err)
	}
	cfg.Engine = e.engine
	cfg.Clock = e.clock
	if cfg.Authenticate == nil {
		cfg.Authenticate = func(r *http.Request) (string, error) {
			if o := r.Header.Get("X-Owner"); o != "" {
				return o, nil
			}
			return "", httpapi.ErrUnauthenticated
		}
	}
	h, err := httpapi.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// response is a finished request: status, headers and body.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) problem(t testing.TB) httpapi.Problem {
	t.Helper()
	var p httpapi.Problem
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q for status %d: %s", ct, r.status, r.body)
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %s: %v", r.body, err)
	}
	return p
}

func (r response) execution(t testing.TB) httpapi.Execution {
	t.Helper()
	var x httpapi.Execution
	if err := json.Unmarshal(r.body, &x); err != nil {
		t.Fatalf("execution body %s: %v", r.body, err)
	}
	return x
}

// do sends a request as owner with extra headers given as key, value pairs.
func (e *env) do(method, path, owner, body string, headers ...string) response {
	e.t.Helper()
	return e.doCtx(e.ctx, method, path, owner, body, headers...)
}

func (e *env) doCtx(ctx context.Context, method, path, owner, body string, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if owner != "" {
		req.Header.Set("X-Owner", owner)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return response{status: -1, body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *env) create(owner string) httpapi.Execution {
	e.t.Helper()
	r := e.do("POST", "/executions", owner, `{"action":"servers.provision","input":{"plan":"cx22"}}`)
	if r.status != http.StatusAccepted {
		e.t.Fatalf("create: %d %s", r.status, r.body)
	}
	return r.execution(e.t)
}

// waitForWaiters blocks until n long polls wait in the engine.
func (e *env) waitForWaiters(n int) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.engine.Waiting() != n {
		if time.Now().After(deadline) {
			e.t.Fatalf("%d waiters, want %d", e.engine.Waiting(), n)
		}
		runtime.Gosched()
	}
}

func TestCreateThenGet(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{BasePath: "/api"})
	r := e.do("POST", "/executions", "cus_1", `{"action":"servers.provision","input":{"plan":"cx22"}}`,
		"Idempotency-Key", "order-1", "Content-Type", "application/json")
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	x := r.execution(t)
	if r.header.Get("Location") != "/api/executions/"+x.ID || r.header.Get("Retry-After") != "1" ||
		r.header.Get("ETag") != `W/"1"` || r.header.Get(httpapi.MaxWaitHeader) != "60" {
		t.Fatalf("headers %v", r.header)
	}
	want := fmt.Sprintf(`{"id":"%s","action":"servers.provision","status":"pending","version":1,"done":false,`+
		`"input":{"plan":"cx22"},"createdAt":"2026-05-30T12:00:00.000Z","updatedAt":"2026-05-30T12:00:00.000Z",`+
		`"nextCheckAt":"2026-05-30T12:00:00.000Z"}`+"\n", x.ID)
	if string(r.body) != want {
		t.Fatalf("body\n%s\nwant\n%s", r.body, want)
	}

	g := e.do("GET", "/executions/"+x.ID, "cus_1", "")
	if g.status != http.StatusOK || string(g.body) != want {
		t.Fatalf("GET %d %s", g.status, g.body)
	}
	if nm := e.do("GET", "/executions/"+x.ID, "cus_1", "", "If-None-Match", `W/"1"`); nm.status != http.StatusNotModified ||
		len(nm.body) != 0 || nm.header.Get("ETag") != `W/"1"` {
		t.Fatalf("conditional GET: %d %q", nm.status, nm.body)
	}

	again := e.do("POST", "/executions", "cus_1", `{"input":{"plan":"cx22"},"action":"servers.provision"}`, "Idempotency-Key", "order-1")
	if again.status != http.StatusAccepted || again.execution(t).ID != x.ID {
		t.Fatalf("repeat: %d %s", again.status, again.body)
	}
	other := e.do("POST", "/executions", "cus_1", `{"action":"servers.provision","input":{"plan":"cx52"}}`, "Idempotency-Key", "order-1")
	if p := other.problem(t); other.status != http.StatusConflict || p.Type != httpapi.TypeIdempotencyConflict {
		t.Fatalf("reuse: %d %+v", other.status, p)
	}
}

func TestRetryAfterFollowsTheNextCheck(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{MaxRetryAfter: 10 * time.Second})
	x := e.create("cus_1")
	if _, err := e.engine.RunOnce(e.ctx); err != nil { // submitted; next check in 1s
		t.Fatal(err)
	}
	if r := e.do("GET", "/executions/"+x.ID, "cus_1", ""); r.header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// Accepted at +1s, running at +2s, completion due at +5s.
	for range 2 {
		e.clock.Advance(time.Second)
		if _, err := e.engine.RunOnce(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(500 * time.Millisecond)
	if r := e.do("GET", "/executions/"+x.ID, "cus_1", ""); r.header.Get("Retry-After") != "3" {
		t.Fatalf("Retry-After %q, want 3", r.header.Get("Retry-After"))
	}
	if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Completed}); err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", "/executions/"+x.ID, "cus_1", ""); r.header.Get("Retry-After") != "" || !r.execution(t).Done {
		t.Fatalf("terminal: Retry-After %q", r.header.Get("Retry-After"))
	}
}

func TestLongPollIsWokenByATransition(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	x := e.create("cus_1")
	got := make(chan response, 1)
	go func() { got <- e.do("GET", "/executions/"+x.ID+"?wait=30s", "cus_1", "", "If-None-Match", `W/"1"`) }()
	e.waitForWaiters(1)
	if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Accepted}); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.status != http.StatusOK || r.execution(t).Version != 2 || r.header.Get("ETag") != `W/"2"` {
		t.Fatalf("long poll: %d %s", r.status, r.body)
	}
	if n := e.engine.Waiting(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

func TestLongPollTimesOutWithNotModified(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{MaxWait: 50 * time.Millisecond})
	x := e.create("cus_1")
	r := e.do("GET", "/executions/"+x.ID+"?wait=30s", "cus_1", "", "If-None-Match", `W/"1"`)
	if r.status != http.StatusNotModified || r.header.Get("ETag") != `W/"1"` {
		t.Fatalf("%d %s", r.status, r.body)
	}
	// A stale tag answers at once with the current record.
	if r := e.do("GET", "/executions/"+x.ID+"?wait=30s", "cus_1", "", "If-None-Match", `W/"0"`); r.status != http.StatusOK {
		t.Fatalf("stale tag: %d", r.status)
	}
}

func TestLongPollDisconnectFreesTheWaiter(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	x := e.create("cus_1")
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.doCtx(ctx, "GET", "/executions/"+x.ID+"?wait=60", "cus_1", "")
	}()
	e.waitForWaiters(1)
	cancel()
	<-done
	e.waitForWaiters(0)
}

func TestOwnersAreIsolated(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	mine := e.create("cus_1")
	e.create("cus_2")
	missing := "exe_01JZZZZZZZZZZZZZZZZZZZZZZZ"
	for _, path := range []string{"/executions/%s", "/executions/%s/transitions"} {
		theirs := e.do("GET", fmt.Sprintf(path, mine.ID), "cus_2", "")
		none := e.do("GET", fmt.Sprintf(path, missing), "cus_2", "")
		if theirs.status != http.StatusNotFound || !bytes.Equal(theirs.body, none.body) {
			t.Fatalf("%s of another owner: %d %s; missing: %s", path, theirs.status, theirs.body, none.body)
		}
	}
	if r := e.do("POST", "/executions/"+mine.ID+"/cancel", "cus_2", ""); r.status != http.StatusNotFound {
		t.Fatalf("cancel of another owner's: %d", r.status)
	}
	if x, _ := e.engine.Get(e.ctx, mine.ID); x.Status != fsm.Pending {
		t.Fatalf("another owner canceled it: %s", x.Status)
	}
	var page httpapi.Page
	r := e.do("GET", "/executions", "cus_2", "")
	if err := json.Unmarshal(r.body, &page); err != nil || len(page.Executions) != 1 || page.Executions[0].ID == mine.ID {
		t.Fatalf("list of cus_2: %s", r.body)
	}
}

func TestListPagesAndFilters(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	var ids []string
	for range 5 {
		ids = append(ids, e.create("cus_1").ID)
		e.clock.Advance(time.Second)
	}
	if _, err := e.engine.Cancel(e.ctx, ids[0], ""); err != nil {
		t.Fatal(err)
	}
	var seen []string
	cursor := ""
	for pages := 0; ; pages++ {
		r := e.do("GET", "/executions?limit=2&cursor="+cursor, "cus_1", "")
		var page httpapi.Page
		if err := json.Unmarshal(r.body, &page); err != nil || r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		for _, x := range page.Executions {
			seen = append(seen, x.ID)
		}
		if cursor = page.NextCursor; cursor == "" {
			if pages != 2 {
				t.Fatalf("%d pages", pages+1)
			}
			break
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint([]string{ids[4], ids[3], ids[2], ids[1], ids[0]}) {
		t.Fatalf("seen %v", seen)
	}
	var page httpapi.Page
	r := e.do("GET", "/executions?status=canceled", "cus_1", "")
	if json.Unmarshal(r.body, &page); len(page.Executions) != 1 || page.Executions[0].ID != ids[0] {
		t.Fatalf("status filter: %s", r.body)
	}
	after := t0.Add(2500 * time.Millisecond).Format(time.RFC3339Nano)
	r = e.do("GET", "/executions?createdAfter="+after, "cus_1", "")
	if json.Unmarshal(r.body, &page); len(page.Executions) != 2 {
		t.Fatalf("createdAfter filter: %s", r.body)
	}
}

func TestCancelAnswersTheRealState(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	x := e.create("cus_1")
	r := e.do("POST", "/executions/"+x.ID+"/cancel", "cus_1", `{"reason":"changed my mind"}`)
	if r.status != http.StatusOK || r.execution(t).Status != fsm.Canceled {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	if again := e.do("POST", "/executions/"+x.ID+"/cancel", "cus_1", ""); again.status != http.StatusOK || again.execution(t).Version != 2 {
		t.Fatalf("second cancel: %d %s", again.status, again.body)
	}

	done := e.create("cus_1")
	if _, err := e.engine.Apply(e.ctx, done.ID, execution.Update{Status: fsm.Completed}); err != nil {
		t.Fatal(err)
	}
	lost := e.do("POST", "/executions/"+done.ID+"/cancel", "cus_1", "")
	p := lost.problem(t)
	if lost.status != http.StatusConflict || p.Type != httpapi.TypeConflict || p.Execution == nil || p.Execution.Status != fsm.Completed {
		t.Fatalf("cancel of completed: %d %s", lost.status, lost.body)
	}

	var hist struct{ Transitions []httpapi.Transition }
	h := e.do("GET", "/executions/"+x.ID+"/transitions", "cus_1", "")
	if err := json.Unmarshal(h.body, &hist); err != nil || len(hist.Transitions) != 2 ||
		hist.Transitions[1].Event != fsm.Cancel || hist.Transitions[1].Reason != "changed my mind" {
		t.Fatalf("transitions: %s", h.body)
	}
}

func TestBadRequestsAreRefusedAndWriteNothing(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{MaxBodyBytes: 256})
	valid := "exe_01JZZZZZZZZZZZZZZZZZZZZZZZ"
	tests := []struct {
		name                string
		method, path, owner string
		body                string
		headers             []string
		status              int
		typ, field          string
	}{
		{"no credentials", "GET", "/executions", "", "", nil, 401, httpapi.TypeUnauthorized, ""},
		{"body over the cap", "POST", "/executions", "o", `{"action":"servers.provision","input":{"a":"` + strings.Repeat("x", 300) + `"}}`, nil, 413, httpapi.TypeTooLarge, ""},
		{"unknown field", "POST", "/executions", "o", `{"action":"servers.provision","inptu":{}}`, nil, 400, httpapi.TypeValidation, "inptu"},
		{"input that is an array", "POST", "/executions", "o", `{"action":"servers.provision","input":[1]}`, nil, 400, httpapi.TypeValidation, "input"},
		{"input that is null", "POST", "/executions", "o", `{"action":"servers.provision","input":null}`, nil, 400, httpapi.TypeValidation, "input"},
		{"action that is a number", "POST", "/executions", "o", `{"action":7}`, nil, 400, httpapi.TypeValidation, "action"},
		{"malformed JSON", "POST", "/executions", "o", `{"action":`, nil, 400, httpapi.TypeValidation, "body"},
		{"empty body", "POST", "/executions", "o", ``, nil, 400, httpapi.TypeValidation, "body"},
		{"trailing data", "POST", "/executions", "o", `{"action":"servers.provision"} {}`, nil, 400, httpapi.TypeValidation, "body"},
		{"body that is an array", "POST", "/executions", "o", `[]`, nil, 400, httpapi.TypeValidation, "body"},
		{"unknown action", "POST", "/executions", "o", `{"action":"boats.launch"}`, nil, 400, httpapi.TypeValidation, "action"},
		{"bad deadline", "POST", "/executions", "o", `{"action":"servers.provision","deadline":"tomorrow"}`, nil, 400, httpapi.TypeValidation, "deadline"},
		{"idempotency key too long", "POST", "/executions", "o", `{"action":"servers.provision"}`, []string{"Idempotency-Key", strings.Repeat("k", 300)}, 400, httpapi.TypeValidation, "idempotency key"},
		{"wrong content type", "POST", "/executions", "o", `{"action":"servers.provision"}`, []string{"Content-Type", "text/plain"}, 415, httpapi.TypeValidation, "Content-Type"},
		{"malformed id", "GET", "/executions/exe_nope", "o", "", nil, 400, httpapi.TypeValidation, "id"},
		{"SQL in the id", "GET", "/executions/exe_'%20OR%201=1", "o", "", nil, 400, httpapi.TypeValidation, "id"},
		{"unknown id", "GET", "/executions/" + valid, "o", "", nil, 404, httpapi.TypeNotFound, ""},
		{"bad wait", "GET", "/executions/" + valid + "?wait=forever", "o", "", nil, 404, httpapi.TypeNotFound, ""},
		{"unknown list parameter", "GET", "/executions?colour=red", "o", "", nil, 400, httpapi.TypeValidation, "colour"},
		{"zero limit", "GET", "/executions?limit=0", "o", "", nil, 400, httpapi.TypeValidation, "limit"},
		{"unknown status", "GET", "/executions?status=paused", "o", "", nil, 400, httpapi.TypeValidation, "status"},
		{"garbage cursor", "GET", "/executions?cursor=abc", "o", "", nil, 400, httpapi.TypeValidation, "cursor"},
		{"bad time", "GET", "/executions?createdAfter=yesterday", "o", "", nil, 400, httpapi.TypeValidation, "createdAfter"},
		{"cancel with unknown field", "POST", "/executions/" + valid + "/cancel", "o", `{"why":"x"}`, nil, 400, httpapi.TypeValidation, "why"},
		{"wrong method", "DELETE", "/executions/" + valid, "o", "", nil, 405, httpapi.TypeMethodNotAllowed, ""},
		{"unknown path", "GET", "/nothing", "o", "", nil, 404, httpapi.TypeNotFound, ""},
	}
	for _, tt := range tests {
		r := e.do(tt.method, tt.path, tt.owner, tt.body, tt.headers...)
		if r.status != tt.status {
			t.Errorf("%s: status %d, want %d: %s", tt.name, r.status, tt.status, r.body)
			continue
		}
		p := r.problem(t)
		if p.Type != tt.typ || p.Field != tt.field || p.Status != tt.status {
			t.Errorf("%s: problem %+v, want type %s field %q", tt.name, p, tt.typ, tt.field)
		}
	}
	page, err := e.engine.List(e.ctx, execution.Filter{})
	if err != nil || len(page.Executions) != 0 {
		t.Fatalf("refused requests wrote %d executions", len(page.Executions))
	}
	// With an execution in place, a bad wait is a validation error.
	x := e.create("o")
	if r := e.do("GET", "/executions/"+x.ID+"?wait=forever", "o", ""); r.status != 400 || r.problem(t).Field != "wait" {
		t.Fatalf("bad wait: %d %s", r.status, r.body)
	}
}

func TestNewHandlerNeedsEngineAndAuthentication(t *testing.T) {
	t.Parallel()
	if _, err := httpapi.NewHandler(httpapi.Config{Authenticate: httpapi.SingleOwner("x")}); err == nil {
		t.Fatal("no engine accepted")
	}
	e := setup(t, httpapi.Config{})
	if _, err := httpapi.NewHandler(httpapi.Config{Engine: e.engine}); err == nil {
		t.Fatal("no Authenticate accepted")
	}
}

func TestProblemUnwrapsToSentinels(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	c, err := httpapi.NewClient(e.srv.URL, httpapi.ClientConfig{Header: http.Header{"X-Owner": {"cus_1"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(e.ctx, "exe_01JZZZZZZZZZZZZZZZZZZZZZZZ")
	var p *httpapi.Problem
	if !errors.Is(err, execution.ErrNotFound) || !errors.As(err, &p) || p.Status != 404 {
		t.Fatalf("err = %v", err)
	}
	_, err = c.Create(e.ctx, httpapi.CreateRequest{Action: "servers.provision", Input: json.RawMessage(`[]`)}, "")
	if !errors.Is(err, execution.ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}

func TestNewExecutionShowsNoNextCheckWhileAWorkerHoldsIt(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 5, 30, 12, 0, 0, 0, time.UTC)
	e := execution.Execution{ID: "exe_01KSWC2RG098W71P6HFDGMJ7R3", Action: "servers.provision", Status: fsm.Pending,
		Version: 1, Input: []byte(`{}`), CreatedAt: at, UpdatedAt: at, NextCheckAt: at.Add(time.Minute)}
	if got := httpapi.NewExecution(e).NextCheckAt; got == nil || !got.Equal(at.Add(time.Minute)) {
		t.Fatalf("unleased: nextCheckAt %v, want %s", got, at.Add(time.Minute))
	}
	e.LeaseOwner = "lse_01KSWC2RG098W71P6HFDGMJ7R4"
	if got := httpapi.NewExecution(e).NextCheckAt; got != nil {
		t.Fatalf("leased: nextCheckAt %s, want none (the lease's expiry is not a planned check)", got)
	}
}
