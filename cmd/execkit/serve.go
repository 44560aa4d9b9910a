package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/sqlite"
	"github.com/execkit/execkit/webhook"
)

// ServeCmd runs everything.
type ServeCmd struct {
	Listen        string `help:"HTTP address." default:"127.0.0.1:8080"`
	WebhookURL    string `help:"Register (or update) one webhook endpoint at this URL."`
	WebhookSecret string `help:"Its signing secret (whsec_...); a new one, printed once, when empty."`
	LogLevel      string `help:"debug, info, warn or error." default:"info" enum:"debug,info,warn,error"`
}

// Run serves until SIGINT or SIGTERM.
func (c *ServeCmd) Run(g *Globals) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return c.serve(ctx, g)
}

func (c *ServeCmd) serve(ctx context.Context, g *Globals) error {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel))
	log := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := g.config()
	if err != nil {
		return err
	}
	dbPath := g.DB
	if cfg.Database != "" && !g.dbSet {
		dbPath = cfg.Database
	}
	listen := c.Listen
	if cfg.Listen != "" && !g.listenSet {
		listen = cfg.Listen
	}

	store, err := sqlite.Open(ctx, dbPath, sqlite.Options{Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()
	engine, err := execution.New(store, execution.Config{Logger: log, Workers: cfg.Engine.Workers,
		CheckInterval: cfg.Engine.CheckInterval.Duration, LeaseDuration: cfg.Engine.LeaseDuration.Duration,
		PollInterval: cfg.Engine.PollInterval.Duration})
	if err != nil {
		return err
	}
	commands, err := cfg.register(engine)
	if err != nil {
		return err
	}
	dispatcher, err := webhook.NewDispatcher(webhook.Config{Store: store, Logger: log, Policy: cfg.policy(),
		Timeout: cfg.Webhooks.Timeout.Duration, ConnectTimeout: cfg.Webhooks.ConnectTimeout.Duration,
		PollInterval: cfg.Webhooks.PollInterval.Duration})
	if err != nil {
		return err
	}
	if c.WebhookURL != "" {
		if err := c.ensureEndpoint(ctx, g, dispatcher); err != nil {
			return err
		}
	}
	handler, err := httpapi.NewHandler(httpapi.Config{Engine: engine, Logger: log, Authenticate: authenticator(cfg.API.Tokens)})
	if err != nil {
		return err
	}
	if len(cfg.API.Tokens) == 0 {
		log.Warn("no API tokens configured: every request acts for the owner \"default\"")
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	if err := engine.Start(ctx); err != nil {
		return err
	}
	if err := dispatcher.Start(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	served := make(chan error, 1)
	wg.Go(func() { served <- srv.Serve(ln) })
	if cfg.Retention.MaxAge.Duration > 0 {
		wg.Go(func() { prunePeriodically(ctx, store, cfg.Retention, log) })
	}
	log.Info("serving", "addr", "http://"+ln.Addr().String(), "db", dbPath)
	fmt.Fprintf(g.stdout, "listening on http://%s\n", ln.Addr())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	log.Info("shutting down")
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	err = errors.Join(serveErr, ignoreClosed(srv.Shutdown(shutdown)), engine.Stop(shutdown), dispatcher.Stop(shutdown))
	if commands != nil {
		commands.Close() // programs still running are resubmitted or failed after a restart
	}
	wg.Wait()
	return err
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ensureEndpoint registers --webhook-url, or updates the endpoint that
// already has that URL.
func (c *ServeCmd) ensureEndpoint(ctx context.Context, g *Globals, d *webhook.Dispatcher) error {
	var secret webhook.Secret
	if c.WebhookSecret != "" {
		var err error
		if secret, err = webhook.ParseSecret(c.WebhookSecret); err != nil {
			return fmt.Errorf("--webhook-secret: %w", err)
		}
	}
	eps, err := d.Endpoints(ctx)
	if err != nil {
		return err
	}
	for _, ep := range eps {
		if ep.URL != c.WebhookURL {
			continue
		}
		if !secret.IsZero() {
			if _, err := d.RotateSecret(ctx, ep.ID, secret, 0); err != nil {
				return err
			}
		}
		if !ep.Enabled() {
			return d.EnableEndpoint(ctx, ep.ID)
		}
		return nil
	}
	ep, secret, err := d.AddEndpoint(ctx, webhook.EndpointConfig{URL: c.WebhookURL, Secret: secret})
	if err != nil {
		return fmt.Errorf("--webhook-url: %w", err)
	}
	if c.WebhookSecret == "" {
		fmt.Fprintf(g.stdout, "webhook endpoint %s signs with %s (shown once)\n", ep.ID, secret.Reveal())
	}
	return nil
}

// authenticator takes "Authorization: Bearer TOKEN" and returns the
// token's owner; without tokens every request is "default".
func authenticator(tokens map[string]string) func(*http.Request) (string, error) {
	if len(tokens) == 0 {
		return httpapi.SingleOwner("default")
	}
	return func(r *http.Request) (string, error) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if owner, known := tokens[token]; ok && known {
			return owner, nil
		}
		return "", httpapi.ErrUnauthenticated
	}
}

// prunePeriodically prunes on the configured schedule until ctx ends.
func prunePeriodically(ctx context.Context, s *sqlite.Store, r RetentionConfig, log *slog.Logger) {
	interval := r.Interval.Duration
	if interval == 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := s.Prune(ctx, sqlite.PruneOptions{Before: time.Now().Add(-r.MaxAge.Duration), Vacuum: true})
		if err != nil && ctx.Err() == nil {
			log.Error("prune", "error", err)
		} else if res.Executions > 0 {
			log.Info("pruned", "executions", res.Executions)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
