package webhook_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	"github.com/execkit/execkit/sqlite"
	"github.com/execkit/execkit/webhook"
)

// renv is a receiver with its own inbox file, fetching from a map that
// stands for the execution resource.
type renv struct {
	t       testing.TB
	secret  webhook.Secret
	inbox   *sqlite.Store
	srv     *httptest.Server
	mu      sync.Mutex
	current map[string]fsm.State // the canonical status per execution
	handled []string             // "event status-received status-fetched"
	fail    atomic.Int32         // Handle fails this many more times
	calls   atomic.Int32
}

func setupReceiver(t testing.TB, maxBody int64) *renv {
	t.Helper()
	r := &renv{t: t, secret: webhook.NewSecret(), current: map[string]fsm.State{}}
	var err error
	r.inbox, err = sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "inbox.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.inbox.Close() })
	rec, err := webhook.NewReceiver(webhook.ReceiverConfig[fsm.State]{
		Secrets:      []string{r.secret.Reveal()},
		Inbox:        r.inbox,
		MaxBodyBytes: maxBody,
		Fetch: func(_ context.Context, id string) (fsm.State, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.current[id], nil
		},
		Handle: func(_ context.Context, ev execution.EventPayload, now fsm.State) error {
			r.calls.Add(1)
			if r.fail.Add(-1) >= 0 {
				return errors.New("host database unavailable")
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			r.handled = append(r.handled, fmt.Sprintf("%s %s %s", ev.ID, ev.Status, now))
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewServer(rec)
	t.Cleanup(r.srv.Close)
	return r
}

func event(id, exe string, status fsm.State, version int64) []byte {
	return fmt.Appendf(nil, `{"id":"%s","event":"execution.%s","executionId":"%s","action":"servers.provision","status":"%s","version":%d,"timestamp":"2026-05-30T12:00:00.000Z"}`,
		id, status, exe, status, version)
}

// post sends body signed with secret at the given time.
func (r *renv) post(body []byte, id string, at time.Time, secret webhook.Secret) int {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL, bytes.NewReader(body))
	webhook.SetHeaders(req.Header, id, at, body, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

const exe1 = "exe_01JZZZZZZZZZZZZZZZZZZZZZZZ"

func TestReceiverHandsTheCanonicalRecordOnce(t *testing.T) {
	t.Parallel()
	r := setupReceiver(t, 0)
	r.current[exe1] = fsm.Completed

	// The completion arrives first, the older "running" after it: the
	// host sees the canonical "completed" both times.
	now := time.Now()
	if s := r.post(event("evt_2", exe1, fsm.Completed, 4), "evt_2", now, r.secret); s != http.StatusNoContent {
		t.Fatalf("status %d", s)
	}
	if s := r.post(event("evt_1", exe1, fsm.Running, 3), "evt_1", now, r.secret); s != http.StatusNoContent {
		t.Fatalf("status %d", s)
	}
	// A redelivery is acknowledged and not handed over again.
	if s := r.post(event("evt_2", exe1, fsm.Completed, 4), "evt_2", now, r.secret); s != http.StatusNoContent {
		t.Fatalf("duplicate: status %d", s)
	}
	want := []string{"evt_2 completed completed", "evt_1 running completed"}
	if fmt.Sprint(r.handled) != fmt.Sprint(want) {
		t.Fatalf("handled %q, want %q", r.handled, want)
	}
}

func TestReceiverHandlesConcurrentDuplicatesOnce(t *testing.T) {
	t.Parallel()
	r := setupReceiver(t, 0)
	r.current[exe1] = fsm.Running
	body := event("evt_9", exe1, fsm.Running, 3)
	now := time.Now()
	var wg sync.WaitGroup
	statuses := make([]int, 16)
	for i := range statuses {
		wg.Go(func() { statuses[i] = r.post(body, "evt_9", now, r.secret) })
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusNoContent {
			t.Fatalf("delivery %d answered %d", i, s)
		}
	}
	if n := r.calls.Load(); n != 1 {
		t.Fatalf("handled %d times, want 1", n)
	}
}

func TestReceiverRetryAfterAHostFailure(t *testing.T) {
	t.Parallel()
	r := setupReceiver(t, 0)
	r.current[exe1] = fsm.Completed
	r.fail.Store(1)
	body := event("evt_5", exe1, fsm.Completed, 4)
	if s := r.post(body, "evt_5", time.Now(), r.secret); s != http.StatusInternalServerError {
		t.Fatalf("failed handling answered %d, want 500", s)
	}
	if s := r.post(body, "evt_5", time.Now(), r.secret); s != http.StatusNoContent {
		t.Fatalf("retry answered %d", s)
	}
	if len(r.handled) != 1 || r.calls.Load() != 2 {
		t.Fatalf("handled %q after %d calls", r.handled, r.calls.Load())
	}
}

func TestReceiverRefusesBadDeliveriesAndRecordsNothing(t *testing.T) {
	t.Parallel()
	r := setupReceiver(t, 1024)
	r.current[exe1] = fsm.Running
	now := time.Now()
	good := event("evt_7", exe1, fsm.Running, 3)
	tests := []struct {
		name   string
		body   []byte
		id     string
		at     time.Time
		secret webhook.Secret
		want   int
	}{
		{"another secret", good, "evt_7", now, webhook.NewSecret(), 401},
		{"a stale timestamp", good, "evt_7", now.Add(-10 * time.Minute), r.secret, 401},
		{"a future timestamp", good, "evt_7", now.Add(10 * time.Minute), r.secret, 401},
		{"a body over the limit", append(good[:len(good)-1:len(good)-1], []byte(`,"pad":"`+strings.Repeat("x", 2000)+`"}`)...), "evt_7", now, r.secret, 413},
		{"a header id that differs from the body's", good, "evt_8", now, r.secret, 400},
		{"a body that is not an event", []byte(`{"hello":"world"}`), "evt_7", now, r.secret, 400},
		{"a body that is not JSON", []byte(`<xml/>`), "evt_7", now, r.secret, 400},
		{"an unknown status", event("evt_7", exe1, "paused", 3), "evt_7", now, r.secret, 400},
	}
	for _, tt := range tests {
		if s := r.post(tt.body, tt.id, tt.at, tt.secret); s != tt.want {
			t.Errorf("%s: answered %d, want %d", tt.name, s, tt.want)
		}
	}
	if r.calls.Load() != 0 {
		t.Fatalf("handled %d refused deliveries", r.calls.Load())
	}
	// None was recorded: the good one is still new to the inbox.
	state, err := r.inbox.InboxBegin(context.Background(), webhook.InboxEntry{EventID: "evt_7", ReceivedAt: now}, now.Add(time.Minute))
	if err != nil || state != webhook.InboxNew {
		t.Fatalf("inbox state %v, %v", state, err)
	}
}

func TestReceiverSurvivesAPanickingHandler(t *testing.T) {
	t.Parallel()
	inbox, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "inbox.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer inbox.Close()
	secret := webhook.NewSecret()
	var calls atomic.Int32
	rec, err := webhook.NewReceiver(webhook.ReceiverConfig[string]{
		Secrets: []string{secret.Reveal()},
		Inbox:   inbox,
		Fetch:   func(context.Context, string) (string, error) { return "now", nil },
		Handle: func(context.Context, execution.EventPayload, string) error {
			if calls.Add(1) == 1 {
				panic("host bug")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	r := &renv{t: t, srv: srv}
	body := event("evt_p", exe1, fsm.Running, 3)
	if s := r.post(body, "evt_p", time.Now(), secret); s != http.StatusInternalServerError {
		t.Fatalf("panicking handler answered %d", s)
	}
	if s := r.post(body, "evt_p", time.Now(), secret); s != http.StatusNoContent || calls.Load() != 2 {
		t.Fatalf("retry answered %d after %d calls", s, calls.Load())
	}
}
