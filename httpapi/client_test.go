package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/httpapi"
)

// sleeps records the waits a client asks for, without waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d = append(s.d, d)
	return ctx.Err()
}

func (s *sleeps) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.d)
}

// testID is the execution the scripted servers answer about.
const testID = "exe_01JZZZZZZZZZZZZZZZZZZZZZZZ"

func TestWaitFollowsLongPollsToTheEnd(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	x := e.create("cus_1")
	s := &sleeps{}
	c, err := httpapi.NewClient(e.srv.URL, httpapi.ClientConfig{Header: http.Header{"X-Owner": {"cus_1"}}, Sleep: s.sleep})
	if err != nil {
		t.Fatal(err)
	}

	// Each transition waits until the client has seen the previous state
	// and is back in a long poll.
	observed := make(chan fsm.State, 4)
	go func() {
		for _, st := range []fsm.State{fsm.Accepted, fsm.Running, fsm.Completed} {
			<-observed
			e.waitForWaiters(1)
			if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: st}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var seen []fsm.State
	got, err := c.WaitFunc(e.ctx, x.ID, func(x httpapi.Execution) {
		seen = append(seen, x.Status)
		observed <- x.Status
	})
	if err != nil || got.Status != fsm.Completed || !got.Done || got.Version != 4 {
		t.Fatalf("Wait = %+v, %v", got, err)
	}
	if want := []fsm.State{fsm.Pending, fsm.Accepted, fsm.Running, fsm.Completed}; !slices.Equal(seen, want) {
		t.Fatalf("saw %v, want %v", seen, want)
	}
	if d := s.all(); len(d) != 0 {
		t.Fatalf("slept %v while long polling", d)
	}
}

// script serves GET /executions/{id} from a list of canned answers and
// counts the requests.
type script struct {
	mu      sync.Mutex
	answers []func(w http.ResponseWriter)
	served  int
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	i := min(s.served, len(s.answers)-1)
	s.served++
	s.mu.Unlock()
	s.answers[i](w)
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served
}

func answer(status fsm.State, retryAfter string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"%s","status":%q,"version":1,"done":%v}`, testID, status, fsm.State(status).Terminal())
	}
}

func failure(code int) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) { http.Error(w, "down", code) }
}

func scripted(t *testing.T, answers ...func(http.ResponseWriter)) (*script, *httpapi.Client, *sleeps) {
	t.Helper()
	s := &script{answers: answers}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	sl := &sleeps{}
	c, err := httpapi.NewClient(srv.URL, httpapi.ClientConfig{Sleep: sl.sleep, MaxErrors: 3})
	if err != nil {
		t.Fatal(err)
	}
	return s, c, sl
}

func TestWaitHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	_, c, sl := scripted(t,
		answer(fsm.Running, "3"),
		answer(fsm.Running, ""),  // keeps the last value
		answer(fsm.Running, "0"), // floored at one second
		answer(fsm.Completed, ""),
	)
	got, err := c.Wait(context.Background(), testID)
	if err != nil || got.Status != fsm.Completed {
		t.Fatalf("Wait = %+v, %v", got, err)
	}
	if want := []time.Duration{3 * time.Second, 3 * time.Second, time.Second}; !slices.Equal(sl.all(), want) {
		t.Fatalf("slept %v, want %v", sl.all(), want)
	}
}

func TestWaitBacksOffWithoutRetryAfter(t *testing.T) {
	t.Parallel()
	answers := make([]func(http.ResponseWriter), 0, 9)
	for range 8 {
		answers = append(answers, answer(fsm.Pending, ""))
	}
	_, c, sl := scripted(t, append(answers, answer(fsm.Failed, ""))...)
	if got, err := c.Wait(context.Background(), testID); err != nil || got.Status != fsm.Failed {
		t.Fatalf("Wait = %+v, %v", got, err)
	}
	d := sl.all()
	if len(d) != 8 {
		t.Fatalf("slept %d times: %v", len(d), d)
	}
	// 1s, 2s, 4s, ... capped at 30s, each drawn from its upper half.
	for i, got := range d {
		full := min(time.Second<<i, 30*time.Second)
		if got < full/2 || got > full {
			t.Errorf("sleep %d = %s, want %s..%s", i, got, full/2, full)
		}
	}
}

func TestWaitStopsAtAnUnknownStatus(t *testing.T) {
	t.Parallel()
	s, c, _ := scripted(t, answer("paused", "1"))
	_, err := c.Wait(context.Background(), testID)
	if !errors.Is(err, httpapi.ErrUnknownStatus) || s.count() != 1 {
		t.Fatalf("err = %v after %d requests", err, s.count())
	}
}

func TestWaitGivesUpOnRepeatedFailures(t *testing.T) {
	t.Parallel()
	s, c, sl := scripted(t, failure(http.StatusServiceUnavailable))
	_, err := c.Wait(context.Background(), testID)
	var p *httpapi.Problem
	if !errors.As(err, &p) || p.Status != 503 || s.count() != 3 || len(sl.all()) != 2 {
		t.Fatalf("err = %v after %d requests and %d sleeps", err, s.count(), len(sl.all()))
	}

	s, c, _ = scripted(t, failure(http.StatusNotFound))
	if _, err := c.Wait(context.Background(), testID); !errors.As(err, &p) || p.Status != 404 || s.count() != 1 {
		t.Fatalf("404: err = %v after %d requests", err, s.count())
	}
}

func TestWaitReturnsWhenTheContextEnds(t *testing.T) {
	t.Parallel()
	_, c, _ := scripted(t, answer(fsm.Running, "5"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Wait(ctx, testID); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestNewClientRejectsBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "localhost:8080", "ftp://x", "http://"} {
		if _, err := httpapi.NewClient(u, httpapi.ClientConfig{}); err == nil {
			t.Errorf("NewClient(%q) accepted", u)
		}
	}
}

func TestClientRoundTrip(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	c, err := httpapi.NewClient(e.srv.URL+"/", httpapi.ClientConfig{Header: http.Header{"X-Owner": {"cus_1"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	x, err := c.Create(ctx, httpapi.CreateRequest{Action: "servers.provision", Input: []byte(`{"plan":"cx22"}`)}, "order-9")
	if err != nil || x.Status != fsm.Pending || string(x.Input) != `{"plan":"cx22"}` {
		t.Fatalf("Create = %+v, %v", x, err)
	}
	if again, err := c.Create(ctx, httpapi.CreateRequest{Action: "servers.provision", Input: []byte(`{"plan":"cx22"}`)}, "order-9"); err != nil || again.ID != x.ID {
		t.Fatalf("repeat = %s, %v", again.ID, err)
	}
	if got, err := c.Get(ctx, x.ID); err != nil || got.ID != x.ID {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	page, err := c.List(ctx, httpapi.ListOptions{Status: "pending", Limit: 10, CreatedAfter: t0.Add(-time.Hour)})
	if err != nil || len(page.Executions) != 1 || page.NextCursor != "" {
		t.Fatalf("List = %+v, %v", page, err)
	}
	canceled, err := c.Cancel(ctx, x.ID, "no longer needed")
	if err != nil || canceled.Status != fsm.Canceled {
		t.Fatalf("Cancel = %+v, %v", canceled, err)
	}
	hist, err := c.Transitions(ctx, x.ID)
	if err != nil || len(hist) != 2 || hist[1].Reason != "no longer needed" || hist[1].From != fsm.Pending {
		t.Fatalf("Transitions = %+v, %v", hist, err)
	}
	// Waiting for a terminal execution returns at once.
	if got, err := c.Wait(ctx, x.ID); err != nil || got.Status != fsm.Canceled {
		t.Fatalf("Wait = %+v, %v", got, err)
	}
}

func TestClientCancelAfterCompletionReturnsTheEndedExecution(t *testing.T) {
	t.Parallel()
	e := setup(t, httpapi.Config{})
	c, err := httpapi.NewClient(e.srv.URL, httpapi.ClientConfig{Header: http.Header{"X-Owner": {"cus_1"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	x := e.create("cus_1")
	if _, err := e.engine.Apply(ctx, x.ID, execution.Update{Status: fsm.Completed, Output: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Cancel(ctx, x.ID, "too late")
	var p *httpapi.Problem
	if got.ID != x.ID || got.Status != fsm.Completed || !errors.Is(err, execution.ErrTerminal) ||
		!errors.Is(err, execution.ErrConflict) || !errors.As(err, &p) || p.Type != httpapi.TypeConflict {
		t.Fatalf("Cancel of a completed execution = %s %s, %v; want it completed with ErrTerminal and a conflict problem",
			got.ID, got.Status, err)
	}
}
