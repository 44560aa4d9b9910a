// Quickstart opens a SQLite file, registers scripted providers for three
// actions, creates one execution of each, runs the engine until all three
// are terminal, and prints each execution's timeline and the outbox events
// that announce it. Meanwhile it serves the execution resource on loopback
// and follows the first execution with the HTTP client's long polls.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
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
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(dbPath + suffix); err != nil && !os.IsNotExist(err) {
			return err
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		<-served
	}()
	baseURL := "http://" + ln.Addr().String()

	fmt.Fprintf(out, "\nrunning the engine on %s ...\n", dbPath)
	start := time.Now()
	if err := engine.Start(ctx); err != nil {
		return err
	}
	waitErr := pollOverHTTP(ctx, out, baseURL, ids[0], start)
	if waitErr == nil {
		waitErr = waitForAll(ctx, engine, ids, 30*time.Second)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := engine.Stop(stopCtx); err != nil {
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
	return nil
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
