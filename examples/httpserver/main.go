// Httpserver serves the execution resource on loopback for trying it with
// curl. Three actions are backed by scripted providers with timelines of a
// few seconds. Requests authenticate with "Authorization: Bearer OWNER";
// the token is taken as the owner, which is fine for a demo and nothing
// else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	dbPath := flag.String("db", filepath.Join(os.TempDir(), "execkit-httpserver.db"), "SQLite file")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *dbPath); err != nil {
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen, dbPath string) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	store, err := sqlite.Open(ctx, dbPath, sqlite.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer store.Close()

	provider := fake.New(nil)
	provider.Script("servers.provision", fake.Script{Cancelable: true, Steps: []fake.Step{
		fake.Accept(time.Second),
		fake.Start(3 * time.Second),
		fake.Progress(6*time.Second, `{"step":"installing image","percent":60}`),
		fake.Complete(10*time.Second, `{"serverId":"srv_7","ipv4":"203.0.113.10"}`),
	}})
	provider.Script("domains.register", fake.Script{Steps: []fake.Step{
		fake.Accept(time.Second), fake.Start(2 * time.Second), fake.Complete(5*time.Second, `{"expires":"2027-12-03"}`),
	}})
	provider.Script("companies.form", fake.Script{Steps: []fake.Step{
		fake.Accept(2 * time.Second),
		fake.Refund(8*time.Second, "name_unavailable", "the registry rejected the company name"),
	}})

	engine, err := execution.New(store, execution.Config{Logger: logger, CheckInterval: time.Second})
	if err != nil {
		return err
	}
	for _, action := range []string{"servers.provision", "domains.register", "companies.form"} {
		if err := engine.Register(action, provider); err != nil {
			return err
		}
	}
	if err := engine.Start(ctx); err != nil {
		return err
	}
	defer engine.Stop(context.Background())

	handler, err := httpapi.NewHandler(httpapi.Config{Engine: engine, Logger: logger, Authenticate: bearerOwner})
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: listen, Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	logger.Info("serving executions", "addr", "http://"+listen+"/executions", "db", dbPath)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// bearerOwner takes the bearer token as the owner.
func bearerOwner(r *http.Request) (string, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return "", httpapi.ErrUnauthenticated
	}
	return token, nil
}
