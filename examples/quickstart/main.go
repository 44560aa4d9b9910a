// Quickstart opens a SQLite file, registers scripted providers for three
// actions, creates one execution of each, runs the engine until all three
// are terminal, and prints each execution's timeline and the outbox events
// that announce it. Meanwhile it serves the execution resource on loopback
// and follows the first execution with the HTTP client's long polls, and
// delivers every event as a signed webhook to a receiver on loopback,
// which verifies it, deduplicates it and fetches the canonical record.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
	"github.com/execkit/execkit/webhook"
)

func main() {
	dbPath := flag.String("db", filepath.Join(os.TempDir(), "execkit-quickstart.db"),
		"SQLite file to use; it is replaced on every run")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *dbPath); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// orders are the executions the quickstart creates.
var orders = []execution.CreateRequest{
	{Action: "servers.provision", Owner: "cus_42", IdempotencyKey: "order-1001",
		Input: []byte(`{"plan":"cx22","region":"fsn1","image":"debian-13"}`)},
	{Action: "domains.register", Owner: "cus_42", IdempotencyKey: "order-1002",
		Input: []byte(`{"domain":"example.org","years":1}`)},
	{Action: "companies.form", Owner: "cus_42", IdempotencyKey: "order-1003",
		Input: []byte(`{"name":"Example Ventures","jurisdiction":"DE"}`)},
}

func run(ctx context.Context, out io.Writer, dbPath string) error {
	inboxPath := strings.TrimSuffix(dbPath, ".db") + "-receiver.db"
	for _, path := range []string{dbPath, inboxPath} {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Remove(path + suffix); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
	}
	store, err := sqlite.Open(ctx, dbPath, sqlite.Options{})
	if err != nil {
		return err
	}
	defer store.Close()

	// One scripted provider serves all three actions, each with a short
	// timeline measured from submission.
	provider := fake.New(nil)
	provider.Script("servers.provision", fake.Script{Steps: []fake.Step{
		fake.Accept(100 * time.Millisecond),
		fake.Start(300 * time.Millisecond),
		fake.Progress(600*time.Millisecond, `{"step":"installing image","percent":60}`),
		fake.Complete(time.Second, `{"serverId":"srv_7","ipv4":"203.0.113.10"}`),
	}})
	provider.Script("domains.register", fake.Script{
		TransientErrors: 1, // the registry times out once; the engine retries
		Steps: []fake.Step{
			fake.Accept(150 * time.Millisecond),
			fake.Start(400 * time.Millisecond),
			fake.Complete(800*time.Millisecond, `{"domain":"example.org","expires":"2027-12-03"}`),
		},
	})
	provider.Script("companies.form", fake.Script{Steps: []fake.Step{
		fake.Accept(200 * time.Millisecond),
		fake.Refund(900*time.Millisecond, "name_unavailable", "the registry rejected the company name"),
	}})

	engine, err := execution.New(store, execution.Config{
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		CheckInterval: 100 * time.Millisecond,
		MinBackoff:    100 * time.Millisecond,
		PollInterval:  50 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	for _, o := range orders {
		if err := engine.Register(o.Action, provider); err != nil {
			return err
		}
	}

	var ids []string
	for _, o := range orders {
		e, err := engine.Create(ctx, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "created %s  %-18s %s\n", e.ID, e.Action, e.Input)
		ids = append(ids, e.ID)
	}

	// Serve the execution resource on loopback, as a host would mount it.
	handler, err := httpapi.NewHandler(httpapi.Config{Engine: engine, Authenticate: httpapi.SingleOwner("cus_42")})
	if err != nil {
		return err
	}
	baseURL, stopAPI, err := serve(handler)
	if err != nil {
		return err
	}
	defer stopAPI()

	// The subscriber's side: a receiver with its own inbox file, which
	// fetches the canonical record over HTTP for every event.
	hooks, err := newSubscriber(ctx, inboxPath, baseURL)
	if err != nil {
		return err
	}
	defer hooks.close()
	dispatcher, err := webhook.NewDispatcher(webhook.Config{
		Store:        store,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Policy:       webhook.AddressPolicy{AllowLoopback: true}, // the receiver is on this machine
		PollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	ep, _, err := dispatcher.AddEndpoint(ctx, webhook.EndpointConfig{URL: hooks.url, Secret: hooks.secret,
		EventTypes: []string{"execution.*"}})
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "\nrunning the engine on %s, delivering webhooks to %s ...\n", dbPath, ep.URL)
	start := time.Now()
	if err := dispatcher.Start(ctx); err != nil {
		return err
	}
	if err := engine.Start(ctx); err != nil {
		return err
	}
	waitErr := pollOverHTTP(ctx, out, baseURL, ids[0], start)
	if waitErr == nil {
		waitErr = waitForAll(ctx, engine, ids, 30*time.Second)
	}
	if waitErr == nil {
		waitErr = waitForDeliveries(ctx, dispatcher, countEvents(ctx, engine, ids), 30*time.Second)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := errors.Join(engine.Stop(stopCtx), dispatcher.Stop(stopCtx)); err != nil {
		return err
	}
	if waitErr != nil {
		return waitErr
	}
	fmt.Fprintf(out, "all %d executions terminal after %s\n", len(ids), time.Since(start).Round(time.Millisecond))

	for _, id := range ids {
		if err := printExecution(ctx, out, engine, id); err != nil {
			return err
		}
	}
	hooks.print(out)
	return nil
}

// countEvents is how many events the executions announced: one per
// version.
func countEvents(ctx context.Context, engine *execution.Engine, ids []string) int {
	n := 0
	for _, id := range ids {
		if e, err := engine.Get(ctx, id); err == nil {
			n += int(e.Version)
		}
	}
	return n
}

// serve serves h on a loopback port and returns its base URL and a
// function that stops it.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	stop := func() {
		srv.Close()
		<-served
	}
	return "http://" + ln.Addr().String(), stop, nil
}

// subscriber is the receiving side of the webhooks.
type subscriber struct {
	url    string
	secret webhook.Secret
	inbox  *sqlite.Store
	stop   func()

	mu    sync.Mutex
	lines []string
}

func newSubscriber(ctx context.Context, inboxPath, apiURL string) (*subscriber, error) {
	inbox, err := sqlite.Open(ctx, inboxPath, sqlite.Options{})
	if err != nil {
		return nil, err
	}
	client, err := httpapi.NewClient(apiURL, httpapi.ClientConfig{})
	if err != nil {
		inbox.Close()
		return nil, err
	}
	s := &subscriber{secret: webhook.NewSecret(), inbox: inbox}
	receiver, err := webhook.NewReceiver(webhook.ReceiverConfig[httpapi.Execution]{
		Secrets: []string{s.secret.Reveal()},
		Inbox:   inbox,
		Fetch:   client.Get,
		Handle: func(_ context.Context, ev execution.EventPayload, now httpapi.Execution) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.lines = append(s.lines, fmt.Sprintf("  %-20s v%d  %-18s  canonical now: %-9s v%d",
				ev.Event, ev.Version, ev.Action, now.Status, now.Version))
			return nil
		},
	})
	if err != nil {
		inbox.Close()
		return nil, err
	}
	s.url, s.stop, err = serve(receiver)
	if err != nil {
		inbox.Close()
		return nil, err
	}
	return s, nil
}

func (s *subscriber) close() {
	s.stop()
	s.inbox.Close()
}

func (s *subscriber) print(out io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(out, "\nwebhooks verified and handled by the receiver, in arrival order (%d):\n", len(s.lines))
	for _, l := range s.lines {
		fmt.Fprintln(out, l)
	}
}

// waitForDeliveries waits until the receiver acknowledged want events.
func waitForDeliveries(ctx context.Context, d *webhook.Dispatcher, want int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		done, err := d.Deliveries(ctx, webhook.DeliveryFilter{State: webhook.Delivered, Limit: want + 1})
		if err != nil {
			return err
		}
		if len(done) >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d webhooks delivered after %s", len(done), want, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pollOverHTTP waits for one execution with the HTTP client, as a remote
// caller would, printing every version the long polls bring back.
func pollOverHTTP(ctx context.Context, out io.Writer, baseURL, id string, start time.Time) error {
	client, err := httpapi.NewClient(baseURL, httpapi.ClientConfig{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "polling %s/executions/%s with long polls:\n", baseURL, id)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = client.WaitFunc(ctx, id, func(x httpapi.Execution) {
		fmt.Fprintf(out, "  +%-6s GET -> %-9s version %d\n", time.Since(start).Round(10*time.Millisecond), x.Status, x.Version)
	})
	return err
}

// waitForAll polls the executions until every one is terminal, as a
// client of the execution resource would.
func waitForAll(ctx context.Context, engine *execution.Engine, ids []string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		done := 0
		for _, id := range ids {
			e, err := engine.Get(ctx, id)
			if err != nil {
				return err
			}
			if e.Done() {
				done++
			}
		}
		if done == len(ids) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d executions still live after %s", len(ids)-done, len(ids), limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func printExecution(ctx context.Context, out io.Writer, engine *execution.Engine, id string) error {
	e, err := engine.Get(ctx, id)
	if err != nil {
		return err
	}
	history, err := engine.History(ctx, id)
	if err != nil {
		return err
	}
	events, err := engine.Events(ctx, id)
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "\n%s  %s  %s (version %d, %d checks, provider ref %s)\n",
		e.ID, e.Action, strings.ToUpper(string(e.Status)), e.Version, e.Checks, e.ExternalRef)
	for _, t := range history {
		from := string(t.From)
		if from == "" {
			from = "·"
		}
		fmt.Fprintf(out, "  +%-6s v%d  %-8s → %-9s (%s)\n",
			t.At.Sub(e.CreatedAt).Round(time.Millisecond), t.Version, from, t.To, t.Event)
	}
	if e.Output != nil {
		fmt.Fprintf(out, "  output: %s\n", e.Output)
	}
	if e.Error != nil {
		fmt.Fprintf(out, "  error:  %s: %s\n", e.Error.Code, e.Error.Message)
	}
	fmt.Fprintf(out, "  outbox:\n")
	for _, ev := range events {
		fmt.Fprintf(out, "    %s\n", ev.Payload)
	}
	return nil
}
