package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/sqlite"
	"github.com/execkit/execkit/webhook"
	"github.com/execkit/execkit/webhook/webhooktest"
)

// orderService is a fake external provider on loopback, reached through
// the JSON-over-HTTP provider. It outlives the execkit processes the
// crash test kills, so it is the record of every submission.
type orderService struct {
	mu      sync.Mutex
	submits map[string][]time.Time // per Idempotency-Key
}

func newOrderService(t *testing.T) (*orderService, string) {
	s := &orderService{submits: map[string][]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		s.mu.Lock()
		s.submits[key] = append(s.submits[key], time.Now())
		s.mu.Unlock()
		fmt.Fprintf(w, `{"id":%q,"status":"queued"}`, key)
	})
	mux.HandleFunc("GET /orders/{ref}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("ref")
		s.mu.Lock()
		first := s.submits[key]
		s.mu.Unlock()
		if len(first) == 0 {
			http.Error(w, `{"error":"unknown order"}`, http.StatusNotFound)
			return
		}
		status := outcome(key)
		switch elapsed := time.Since(first[0]); {
		case elapsed < 100*time.Millisecond:
			status = "queued"
		case elapsed < 200*time.Millisecond:
			status = "working"
		}
		out, _ := json.Marshal(map[string]any{"id": key, "status": status, "output": map[string]string{"order": key},
			"error": map[string]string{"code": "out_of_stock", "message": "none left"}})
		w.Write(out)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return s, srv.URL
}

// outcome decides an order's end from its key: mostly done, some failed,
// some refunded.
func outcome(key string) string {
	h := fnv.New32a()
	h.Write([]byte(key))
	switch h.Sum32() % 10 {
	case 7, 8:
		return "error"
	case 9:
		return "refunded"
	}
	return "done"
}

func wantState(key string) fsm.State {
	return map[string]fsm.State{"done": fsm.Completed, "error": fsm.Failed, "refunded": fsm.Refunded}[outcome(key)]
}

// crashSize returns the crash test's size: small by default, full with
// EXECKIT_CRASH_EXECUTIONS and EXECKIT_CRASH_KILLS.
func crashSize() (executions, kills int) {
	executions, kills = 200, 5
	if n, err := strconv.Atoi(os.Getenv("EXECKIT_CRASH_EXECUTIONS")); err == nil {
		executions = n
	}
	if n, err := strconv.Atoi(os.Getenv("EXECKIT_CRASH_KILLS")); err == nil {
		kills = n
	}
	return executions, kills
}

// TestCrashAndRestart kills execkit serve with SIGKILL at random moments
// while it drives executions through a loopback provider and delivers
// webhooks to a loopback receiver, restarting it on the same file each
// time, and then checks that nothing was lost or done twice.
func TestCrashAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	total, kills := crashSize()
	const lease = 2 * time.Second
	bin := binary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "crash.db")
	service, serviceURL := newOrderService(t)
	secret := webhook.NewSecret()
	receiver := webhooktest.NewServer(t, secret)
	config := filepath.Join(dir, "execkit.toml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `
[api]
tokens = { "t1" = "cus_1" }
[engine]
check_interval = "50ms"
lease_duration = %q
poll_interval = "20ms"
[webhooks]
allow_loopback = true
timeout = "1s"
connect_timeout = "1s"
poll_interval = "20ms"
[[actions]]
name = "orders.place"
provider = "httpjson"
submit_url = "%s/orders"
status_url = "%s/orders/{ref}"
statuses = { queued = "accepted", working = "running", done = "completed", error = "failed", refunded = "refunded" }
check_after = "50ms"
`, lease, serviceURL, serviceURL), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--db", db, "--config", config, "--webhook-url", receiver.URL, "--webhook-secret", secret.Reveal()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	header := http.Header{"Authorization": {"Bearer t1"}}

	// Create in rounds, each ended by a SIGKILL at a random moment. Keys
	// make a create that the kill interrupted safe to repeat.
	ids := make([]string, total)
	perRound := (total + kills - 1) / kills
	for round := range kills {
		s := start(t, bin, args...)
		c, _ := httpapi.NewClient(s.url, httpapi.ClientConfig{Header: header})
		for i := round * perRound; i < min(total, (round+1)*perRound); i++ {
			x, err := c.Create(ctx, httpapi.CreateRequest{Action: "orders.place", Input: fmt.Appendf(nil, `{"n":%d}`, i)},
				fmt.Sprintf("create-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = x.ID
		}
		time.Sleep(time.Duration(50+rand.IntN(400)) * time.Millisecond)
		s.stop(t, syscall.SIGKILL)
	}

	s := start(t, bin, args...)
	c, _ := httpapi.NewClient(s.url, httpapi.ClientConfig{Header: header, LongPoll: 5 * time.Second})
	events := 0
	for _, id := range ids {
		x, err := c.Wait(ctx, id)
		if err != nil {
			t.Fatalf("wait for %s: %v", id, err)
		}
		events += int(x.Version)
	}
	received, err := receiver.WaitFor(ctx, func(r []webhooktest.Received) bool { return distinct(r) >= events })
	if err != nil {
		t.Fatalf("received %d distinct events of %d: %v", distinct(received), events, err)
	}
	s.stop(t, syscall.SIGTERM)

	store, err := sqlite.Open(ctx, db, sqlite.Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	seen := map[string]int{}
	for _, r := range received {
		seen[r.ID]++
	}
	duplicates, resubmits := 0, 0
	for _, n := range seen {
		duplicates += n - 1
	}
	for _, id := range ids {
		x, err := store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if x.Status != wantState(id) {
			t.Fatalf("%s ended %s, want %s", id, x.Status, wantState(id))
		}
		history, _ := store.History(ctx, id)
		evs, _ := store.Events(ctx, id)
		if err := legalHistory(history, evs); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		for _, ev := range evs {
			if seen[ev.ID] == 0 {
				t.Fatalf("event %s of %s never delivered", ev.ID, id)
			}
		}
		subs := service.submits[id]
		for i := 1; i < len(subs); i++ {
			resubmits++
			if gap := subs[i].Sub(subs[i-1]); gap < lease-300*time.Millisecond {
				t.Fatalf("%s submitted again after %s, inside its %s lease", id, gap, lease)
			}
		}
	}
	t.Logf("%d executions, %d kills, %d events delivered (%d duplicate deliveries), %d resubmissions after an expired lease",
		total, kills, events, duplicates, resubmits)
}

func distinct(r []webhooktest.Received) int {
	seen := map[string]bool{}
	for _, x := range r {
		seen[x.ID] = true
	}
	return len(seen)
}

// legalHistory checks that a history is a path through the graph from
// creation, with one event per transition and matching versions.
func legalHistory(h []execution.Transition, evs []execution.Event) error {
	if len(h) == 0 || h[0].Event != execution.EventCreate {
		return fmt.Errorf("history does not start with creation")
	}
	for i, tr := range h[1:] {
		to, err := fsm.Apply(context.Background(), tr.From, tr.Event)
		if err != nil || to != tr.To || tr.From != h[i].To || tr.Version != int64(i+2) {
			return fmt.Errorf("illegal step %d: %s -%s-> %s", i+1, tr.From, tr.Event, tr.To)
		}
	}
	if len(evs) != len(h) {
		return fmt.Errorf("%d events for %d transitions", len(evs), len(h))
	}
	for i, ev := range evs {
		if ev.Version != h[i].Version {
			return fmt.Errorf("event %d has version %d", i, ev.Version)
		}
	}
	return nil
}
