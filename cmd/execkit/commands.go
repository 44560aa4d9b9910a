package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/sqlite"
	"github.com/execkit/execkit/webhook"
)

// dbPath is --db if given, else the configuration's database, else the
// default ./execkit.db.
func (g *Globals) dbPath() (string, error) {
	if g.dbSet {
		return g.DB, nil
	}
	cfg, err := g.config()
	if err != nil {
		return "", err
	}
	if cfg.Database != "" {
		return cfg.Database, nil
	}
	return g.DB, nil
}

// openRead opens the file for inspection: it must exist, and nothing is
// written or locked.
func (g *Globals) openRead(ctx context.Context) (*sqlite.Store, error) {
	return g.open(ctx, sqlite.Options{ReadOnly: true, BusyTimeout: 5 * time.Second})
}

// openWrite opens an existing file for an operation that writes.
func (g *Globals) openWrite(ctx context.Context) (*sqlite.Store, error) {
	return g.open(ctx, sqlite.Options{MustExist: true, BusyTimeout: 5 * time.Second})
}

func (g *Globals) open(ctx context.Context, opts sqlite.Options) (*sqlite.Store, error) {
	path, err := g.dbPath()
	if err != nil {
		return nil, err
	}
	return sqlite.Open(ctx, path, opts)
}

func isDatabaseError(err error) bool {
	msg := err.Error()
	return errors.Is(err, sqlite.ErrNoDatabase) || errors.Is(err, sqlite.ErrSchemaTooNew) ||
		errors.Is(err, sqlite.ErrSchemaTooOld) ||
		strings.Contains(msg, "database is locked") || strings.Contains(msg, "SQLITE_BUSY") ||
		strings.Contains(msg, "file is not a database") || strings.Contains(msg, "unable to open database file")
}

// printable replaces control characters, so that text from providers and
// endpoints cannot drive the terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '·'
		}
		return r
	}, s)
}

// print writes v as JSON, or calls table.
func (g *Globals) print(v any, table func(w *tabwriter.Writer)) error {
	if g.JSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// LsCmd lists executions.
type LsCmd struct {
	Status string `help:"Only this status."`
	Action string `help:"Only this action."`
	Owner  string `help:"Only this owner."`
	Limit  int    `help:"At most this many." default:"50"`
}

// Run lists.
func (c *LsCmd) Run(g *Globals) error {
	ctx := context.Background()
	s, err := g.openRead(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if c.Status != "" && !fsm.State(c.Status).Valid() {
		return fmt.Errorf("%w: --status %q is not a state", execution.ErrInvalid, c.Status)
	}
	page, err := s.List(ctx, execution.Filter{Status: fsm.State(c.Status), Action: c.Action, Owner: c.Owner, Limit: c.Limit})
	if err != nil {
		return err
	}
	out := make([]httpapi.Execution, 0, len(page.Executions))
	for _, e := range page.Executions {
		out = append(out, httpapi.NewExecution(e))
	}
	return g.print(out, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tACTION\tSTATUS\tVERSION\tOWNER\tCREATED\tUPDATED")
		for _, e := range page.Executions {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", e.ID, e.Action, e.Status, e.Version, e.Owner,
				stamp(e.CreatedAt), stamp(e.UpdatedAt))
		}
	})
}

// ShowCmd shows one execution.
type ShowCmd struct {
	ID string `arg:"" help:"Execution id."`
}

// Run shows.
func (c *ShowCmd) Run(g *Globals) error {
	ctx := context.Background()
	if err := execution.ValidateID(c.ID); err != nil {
		return err
	}
	s, err := g.openRead(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	e, err := s.Get(ctx, c.ID)
	if errors.Is(err, execution.ErrNotFound) {
		return notFound{fmt.Errorf("no execution %s", c.ID)}
	}
	if err != nil {
		return err
	}
	history, err := s.History(ctx, c.ID)
	if err != nil {
		return err
	}
	deliveries, err := s.ListDeliveries(ctx, webhook.DeliveryFilter{ExecutionID: c.ID, Limit: 1000})
	if err != nil {
		return err
	}
	attempts := map[int64][]webhook.Attempt{}
	for _, d := range deliveries {
		if attempts[d.ID], err = s.Attempts(ctx, d.ID); err != nil {
			return err
		}
	}
	timeline := make([]httpapi.Transition, 0, len(history))
	for _, t := range history {
		timeline = append(timeline, httpapi.Transition{Version: t.Version, From: t.From, To: t.To, Event: t.Event,
			Reason: t.Reason, At: t.At})
	}
	if deliveries == nil {
		deliveries = []webhook.Delivery{}
	}
	out := struct {
		Execution  httpapi.Execution           `json:"execution"`
		Timeline   []httpapi.Transition        `json:"timeline"`
		Deliveries []webhook.Delivery          `json:"deliveries"`
		Attempts   map[int64][]webhook.Attempt `json:"attempts"`
	}{httpapi.NewExecution(e), timeline, deliveries, attempts}
	return g.print(out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "%s\t%s\t%s (version %d)\n", e.ID, e.Action, e.Status, e.Version)
		fmt.Fprintf(w, "owner\t%s\n", e.Owner)
		fmt.Fprintf(w, "provider\t%s (ref %s, %d checks, %d failed attempts)\n", e.Provider, e.ExternalRef, e.Checks, e.FailedAttempts)
		fmt.Fprintf(w, "input\t%s\n", e.Input)
		if e.Output != nil {
			fmt.Fprintf(w, "output\t%s\n", e.Output)
		}
		if e.Error != nil {
			fmt.Fprintf(w, "error\t%s: %s\n", printable(e.Error.Code), printable(e.Error.Message))
		}
		fmt.Fprintln(w, "\nTIMELINE\tVERSION\tFROM\tTO\tEVENT\tREASON")
		for _, t := range history {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", stamp(t.At), t.Version, t.From, t.To, t.Event, printable(t.Reason))
		}
		fmt.Fprintln(w, "\nDELIVERY\tEVENT\tENDPOINT\tSTATE\tATTEMPTS\tLAST STATUS\tLAST ERROR")
		for _, d := range deliveries {
			fmt.Fprintf(w, "%d\t%s v%d\t%s\t%s\t%d\t%d\t%s\n", d.ID, d.EventID, d.Version, d.EndpointID, d.State,
				d.Attempts, d.LastStatus, printable(d.LastError))
		}
	})
}

// EndpointsCmd groups the endpoint commands.
type EndpointsCmd struct {
	Add          EndpointsAddCmd     `cmd:"" help:"Add an endpoint; prints its signing secret once."`
	Ls           EndpointsLsCmd      `cmd:"" help:"List endpoints."`
	Disable      EndpointsDisableCmd `cmd:"" help:"Disable an endpoint; its deliveries are parked."`
	Enable       EndpointsEnableCmd  `cmd:"" help:"Enable an endpoint; parked deliveries resume."`
	RotateSecret EndpointsRotateCmd  `cmd:"" name:"rotate-secret" help:"Give an endpoint a new secret; prints it once."`
}

// dispatcher opens the file and a dispatcher on it, with the address
// policy of the configuration file.
func (g *Globals) dispatcher(ctx context.Context) (*sqlite.Store, *webhook.Dispatcher, error) {
	cfg, err := g.config()
	if err != nil {
		return nil, nil, err
	}
	s, err := g.openWrite(ctx)
	if err != nil {
		return nil, nil, err
	}
	d, err := webhook.NewDispatcher(webhook.Config{Store: s, Policy: cfg.policy()})
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, d, nil
}

func endpointErr(err error, id string) error {
	if errors.Is(err, webhook.ErrEndpointNotFound) {
		return notFound{fmt.Errorf("no endpoint %s", id)}
	}
	return err
}

// EndpointsAddCmd adds an endpoint.
type EndpointsAddCmd struct {
	URL     string   `arg:"" help:"Where to POST events."`
	Events  []string `help:"Event types, such as execution.completed or execution.*; all when empty."`
	Ordered bool     `help:"Deliver one execution's events in version order."`
	Secret  string   `help:"Signing secret (whsec_...); a new one when empty."`
}

// Run adds.
func (c *EndpointsAddCmd) Run(g *Globals) error {
	ctx := context.Background()
	s, d, err := g.dispatcher(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	var secret webhook.Secret
	if c.Secret != "" {
		if secret, err = webhook.ParseSecret(c.Secret); err != nil {
			return err
		}
	}
	ep, secret, err := d.AddEndpoint(ctx, webhook.EndpointConfig{URL: c.URL, Secret: secret, EventTypes: c.Events, Ordered: c.Ordered})
	if err != nil {
		return err
	}
	out := struct {
		Endpoint webhook.Endpoint `json:"endpoint"`
		Secret   string           `json:"secret"`
	}{ep, secret.Reveal()}
	return g.print(out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "added %s\t%s\nsecret\t%s\t(shown once: give it to the subscriber)\n", ep.ID, ep.URL, secret.Reveal())
	})
}

// EndpointsLsCmd lists endpoints.
type EndpointsLsCmd struct{}

// Run lists.
func (c *EndpointsLsCmd) Run(g *Globals) error {
	ctx := context.Background()
	s, d, err := g.dispatcher(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	eps, err := d.Endpoints(ctx)
	if err != nil {
		return err
	}
	if eps == nil {
		eps = []webhook.Endpoint{}
	}
	return g.print(eps, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tURL\tEVENTS\tORDERED\tENABLED\tREASON")
		for _, e := range eps {
			fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%v\t%s\n", e.ID, e.URL, strings.Join(e.EventTypes, ","), e.Ordered, e.Enabled(), e.DisabledReason)
		}
	})
}

// EndpointsDisableCmd disables an endpoint.
type EndpointsDisableCmd struct {
	ID     string `arg:""`
	Reason string `help:"Why." default:"disabled from the command line"`
}

// Run disables.
func (c *EndpointsDisableCmd) Run(g *Globals) error {
	ctx := context.Background()
	s, d, err := g.dispatcher(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := d.DisableEndpoint(ctx, c.ID, c.Reason); err != nil {
		return endpointErr(err, c.ID)
	}
	return g.print(map[string]string{"disabled": c.ID}, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "disabled %s; its deliveries are parked\n", c.ID)
	})
}

// EndpointsEnableCmd enables an endpoint.
type EndpointsEnableCmd struct {
	ID string `arg:""`
}

// Run enables.
func (c *EndpointsEnableCmd) Run(g *Globals) error {
	ctx := context.Background()
	s, d, err := g.dispatcher(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := d.EnableEndpoint(ctx, c.ID); err != nil {
		return endpointErr(err, c.ID)
	}
	return g.print(map[string]string{"enabled": c.ID}, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "enabled %s; parked deliveries resume\n", c.ID)
	})
}

// EndpointsRotateCmd rotates a secret.
type EndpointsRotateCmd struct {
	ID      string        `arg:""`
	Overlap time.Duration `help:"How long the old secret keeps signing too." default:"24h"`
}

// Run rotates.
func (c *EndpointsRotateCmd) Run(g *Globals) error {
	ctx := context.Background()
	s, d, err := g.dispatcher(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	secret, err := d.RotateSecret(ctx, c.ID, webhook.Secret{}, c.Overlap)
	if err != nil {
		return endpointErr(err, c.ID)
	}
	return g.print(map[string]string{"secret": secret.Reveal()}, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "secret\t%s\t(shown once; the old one signs too for %s)\n", secret.Reveal(), c.Overlap)
	})
}

// DeliveriesCmd groups the delivery commands.
type DeliveriesCmd struct {
	Ls DeliveriesLsCmd `cmd:"" help:"List deliveries, newest first."`
}

// DeliveriesLsCmd lists deliveries.
type DeliveriesLsCmd struct {
	Dead     bool   `help:"Only dead deliveries."`
	State    string `help:"Only this state: pending, delivered, dead or parked."`
	Endpoint string `help:"Only this endpoint."`
	Limit    int    `help:"At most this many." default:"100"`
}

// Run lists.
func (c *DeliveriesLsCmd) Run(g *Globals) error {
	ctx := context.Background()
	s, err := g.openRead(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	state := webhook.DeliveryState(c.State)
	if c.Dead {
		state = webhook.Dead
	}
	switch state {
	case "", webhook.Pending, webhook.Delivered, webhook.Dead, webhook.Parked:
	default:
		return fmt.Errorf("%w: --state %q: want pending, delivered, dead or parked", execution.ErrInvalid, c.State)
	}
	ds, err := s.ListDeliveries(ctx, webhook.DeliveryFilter{State: state, EndpointID: c.Endpoint, Limit: c.Limit})
	if err != nil {
		return err
	}
	if ds == nil {
		ds = []webhook.Delivery{}
	}
	return g.print(ds, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tEVENT\tEXECUTION\tENDPOINT\tSTATE\tATTEMPTS\tLAST STATUS\tLAST ERROR")
		for _, d := range ds {
			fmt.Fprintf(w, "%d\t%s\t%s v%d\t%s\t%s\t%d\t%d\t%s\n", d.ID, d.EventID, d.ExecutionID, d.Version,
				d.EndpointID, d.State, d.Attempts, d.LastStatus, d.LastError)
		}
	})
}

// ReplayCmd redelivers events.
type ReplayCmd struct {
	Endpoint string    `required:"" help:"Endpoint to deliver to."`
	Event    string    `help:"One event id." xor:"what" required:""`
	Since    time.Time `help:"Every event created at or after this RFC 3339 time." xor:"what" required:""`
}

// Run replays.
func (c *ReplayCmd) Run(g *Globals) error {
	ctx := context.Background()
	s, d, err := g.dispatcher(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	n := 1
	if c.Event != "" {
		err = d.Replay(ctx, c.Endpoint, c.Event)
	} else {
		n, err = d.ReplaySince(ctx, c.Endpoint, c.Since)
	}
	if errors.Is(err, webhook.ErrEventNotFound) {
		return notFound{err}
	}
	if err != nil {
		return endpointErr(err, c.Endpoint)
	}
	return g.print(map[string]int{"queued": n}, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "queued %d deliveries to %s; a running serve sends them\n", n, c.Endpoint)
	})
}

// PruneCmd prunes.
type PruneCmd struct {
	OlderThan time.Duration `help:"Remove terminal executions completed longer ago than this." default:"720h"`
}

// Run prunes.
func (c *PruneCmd) Run(g *Globals) error {
	ctx := context.Background()
	if c.OlderThan < 0 {
		return fmt.Errorf("%w: --older-than %s is negative", execution.ErrInvalid, c.OlderThan)
	}
	s, err := g.openWrite(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	res, err := s.Prune(ctx, sqlite.PruneOptions{Before: time.Now().Add(-c.OlderThan), Vacuum: true})
	if err != nil {
		return err
	}
	return g.print(res, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "pruned %d executions in %d batches\n", res.Executions, res.Batches)
	})
}

// MigrateCmd migrates.
type MigrateCmd struct{}

// Run opens the file, which migrates it, creating it if needed.
func (c *MigrateCmd) Run(g *Globals) error {
	path, err := g.dbPath()
	if err != nil {
		return err
	}
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	return g.print(map[string]int{"schema": sqlite.SchemaVersion()}, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "%s is at schema version %d\n", path, sqlite.SchemaVersion())
	})
}

// VersionCmd prints versions.
type VersionCmd struct{}

// Run prints.
func (c *VersionCmd) Run(g *Globals) error {
	version := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	return g.print(map[string]any{"version": version, "schema": sqlite.SchemaVersion()}, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "execkit %s, schema %d\n", version, sqlite.SchemaVersion())
	})
}
