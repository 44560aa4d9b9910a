package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/internal/backoff"
	"github.com/execkit/execkit/internal/wake"
)

// DefaultSchedule is the wait before each attempt of a delivery: the first
// at once, the last about three days after the first. After the last
// attempt fails the delivery is dead.
var DefaultSchedule = []time.Duration{
	0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour,
	5 * time.Hour, 10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour,
}

// Config tunes a [Dispatcher]. Store is required; the zero value of every
// other field selects the default in its comment.
type Config struct {
	// Store holds endpoints and deliveries; the sqlite store implements
	// it on the executions' file.
	Store Store
	// Logger receives the dispatcher's logs, never bodies or secrets. Nil
	// discards them.
	Logger *slog.Logger
	// Clock tells the time. Nil means the wall clock.
	Clock execution.Clock
	// Policy decides which endpoint addresses are allowed. The zero value
	// allows public addresses only.
	Policy AddressPolicy
	// Workers is how many deliveries run at once. Zero means 16.
	Workers int
	// PerEndpoint caps the deliveries in flight to one endpoint, so that
	// a slow endpoint cannot hold every worker. Zero means 4.
	PerEndpoint int
	// Schedule is the wait before each attempt; its length is the number
	// of attempts. Each wait after the first varies by up to 10%. Nil
	// means DefaultSchedule.
	Schedule []time.Duration
	// ConnectTimeout bounds connecting; Timeout bounds a whole attempt.
	// Zero means 5 and 15 seconds.
	ConnectTimeout time.Duration
	Timeout        time.Duration
	// MaxResponseBytes is how much of an answer's body is read; its start
	// is kept with the attempt. Zero means 4 KiB.
	MaxResponseBytes int64
	// MaxRetryAfter bounds the Retry-After of a 429 or 503 answer. Zero
	// means one hour.
	MaxRetryAfter time.Duration
	// DisableAfter disables an endpoint that has failed every attempt for
	// this long; its deliveries are parked until it is enabled. Zero
	// means 5 days; negative never disables.
	DisableAfter time.Duration
	// PollInterval is the longest the idle loop sleeps. Zero means one
	// second.
	PollInterval time.Duration
}

// Dispatcher delivers outbox events to endpoints. It is safe for
// concurrent use; several dispatchers may share a store.
type Dispatcher struct {
	cfg    Config
	store  Store
	log    *slog.Logger
	client *http.Client
	ids    struct {
		sync.Mutex
		entropy *ulid.MonotonicEntropy
	}

	mu         sync.Mutex
	busy       map[string]int // deliveries in flight per endpoint
	started    bool
	stopped    bool
	stop       context.CancelFunc // ends claiming
	cancelWork context.CancelFunc // ends attempts in flight
	done       chan struct{}
	wake       *wake.Signal
}

// NewDispatcher returns a dispatcher; Start runs it.
func NewDispatcher(cfg Config) (*Dispatcher, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("webhook: new dispatcher: %w: nil Store", ErrInvalid)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = execution.SystemClock{}
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.PerEndpoint <= 0 {
		cfg.PerEndpoint = 4
	}
	if len(cfg.Schedule) == 0 {
		cfg.Schedule = DefaultSchedule
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 4 << 10
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = time.Hour
	}
	if cfg.DisableAfter == 0 {
		cfg.DisableAfter = 5 * 24 * time.Hour
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	d := &Dispatcher{cfg: cfg, store: cfg.Store, log: cfg.Logger, busy: map[string]int{}, wake: wake.New()}
	d.ids.entropy = ulid.Monotonic(cryptoReader{}, 0)
	dialer := &net.Dialer{Timeout: cfg.ConnectTimeout, Control: cfg.Policy.control}
	d.client = &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			DialContext:           dialer.DialContext,
			Proxy:                 nil, // a proxy would hide the address dialled from the policy
			TLSHandshakeTimeout:   cfg.ConnectTimeout,
			ResponseHeaderTimeout: cfg.Timeout,
			MaxIdleConnsPerHost:   cfg.PerEndpoint,
			IdleConnTimeout:       90 * time.Second,
		},
		// A redirect is a failed attempt; it is never followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return d, nil
}

// EndpointConfig describes an endpoint to add.
type EndpointConfig struct {
	URL string
	// Secret signs the deliveries. Zero means a new random secret.
	Secret Secret
	// EventTypes selects events, such as "execution.completed" or
	// "execution.*". Empty means every event.
	EventTypes []string
	// Ordered delivers one execution's events in version order.
	Ordered bool
}

// AddEndpoint checks and stores an endpoint, and returns it with the
// secret that signs its deliveries, for the subscriber.
func (d *Dispatcher) AddEndpoint(ctx context.Context, c EndpointConfig) (Endpoint, Secret, error) {
	types, err := checkEndpoint(ctx, d.cfg.Policy, c.URL, c.EventTypes)
	if err != nil {
		return Endpoint{}, Secret{}, fmt.Errorf("add endpoint: %w", err)
	}
	secret := c.Secret
	if secret.IsZero() {
		secret = NewSecret()
	}
	now := d.now()
	e := Endpoint{ID: d.newID("wep_", now), URL: c.URL, EventTypes: types, Ordered: c.Ordered,
		CreatedAt: now, UpdatedAt: now}
	if err := d.store.AddEndpoint(ctx, e, secret.Reveal()); err != nil {
		return Endpoint{}, Secret{}, fmt.Errorf("add endpoint: %w", err)
	}
	return e, secret, nil
}

// UpdateEndpoint changes an endpoint's URL, event types and ordering.
// Deliveries already created are kept; the new filter applies to events
// fanned out from now on.
func (d *Dispatcher) UpdateEndpoint(ctx context.Context, id string, c EndpointConfig) (Endpoint, error) {
	e, err := d.store.GetEndpoint(ctx, id)
	if err != nil {
		return Endpoint{}, fmt.Errorf("update endpoint %.40s: %w", id, err)
	}
	types, err := checkEndpoint(ctx, d.cfg.Policy, c.URL, c.EventTypes)
	if err != nil {
		return Endpoint{}, fmt.Errorf("update endpoint %s: %w", id, err)
	}
	e.URL, e.EventTypes, e.Ordered, e.UpdatedAt = c.URL, types, c.Ordered, d.now()
	if err := d.store.UpdateEndpoint(ctx, e); err != nil {
		return Endpoint{}, fmt.Errorf("update endpoint %s: %w", id, err)
	}
	return e, nil
}

// Endpoints returns every endpoint.
func (d *Dispatcher) Endpoints(ctx context.Context) ([]Endpoint, error) {
	return d.store.ListEndpoints(ctx)
}

// DisableEndpoint stops deliveries to an endpoint; its pending deliveries
// are parked until it is enabled.
func (d *Dispatcher) DisableEndpoint(ctx context.Context, id, reason string) error {
	if reason == "" {
		reason = "disabled on request"
	}
	if err := d.store.DisableEndpoint(ctx, id, clipText(reason, 200), d.now()); err != nil {
		return fmt.Errorf("disable endpoint: %w", err)
	}
	return nil
}

// EnableEndpoint resumes deliveries to an endpoint, parked ones first.
func (d *Dispatcher) EnableEndpoint(ctx context.Context, id string) error {
	if err := d.store.EnableEndpoint(ctx, id, d.now()); err != nil {
		return fmt.Errorf("enable endpoint: %w", err)
	}
	d.wake.Notify()
	return nil
}

// RotateSecret gives an endpoint a new signing secret. The secrets in
// force keep signing, beside the new one, for overlap; then they retire.
// A zero secret means a new random one. It returns the new secret.
func (d *Dispatcher) RotateSecret(ctx context.Context, id string, secret Secret, overlap time.Duration) (Secret, error) {
	if overlap < 0 {
		return Secret{}, fmt.Errorf("rotate secret: %w: negative overlap", ErrInvalid)
	}
	if secret.IsZero() {
		secret = NewSecret()
	}
	now := d.now()
	if err := d.store.RotateSecret(ctx, id, secret.Reveal(), now, now.Add(overlap)); err != nil {
		return Secret{}, fmt.Errorf("rotate secret: %w", err)
	}
	return secret, nil
}

// Deliveries lists deliveries, such as the dead ones.
func (d *Dispatcher) Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error) {
	return d.store.ListDeliveries(ctx, f)
}

// Attempts returns the attempts of a delivery, oldest first.
func (d *Dispatcher) Attempts(ctx context.Context, deliveryID int64) ([]Attempt, error) {
	return d.store.Attempts(ctx, deliveryID)
}

// Replay delivers one event to an endpoint again, with a fresh schedule.
func (d *Dispatcher) Replay(ctx context.Context, endpointID, eventID string) error {
	if _, err := d.store.Replay(ctx, endpointID, []string{eventID}, d.now()); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	d.wake.Notify()
	return nil
}

// ReplaySince delivers every event created at or after since to an
// endpoint again, and returns how many.
func (d *Dispatcher) ReplaySince(ctx context.Context, endpointID string, since time.Time) (int, error) {
	ids, err := d.store.EventsSince(ctx, since)
	if err != nil {
		return 0, fmt.Errorf("replay since %s: %w", since, err)
	}
	n, err := d.store.Replay(ctx, endpointID, ids, d.now())
	if err != nil {
		return 0, fmt.Errorf("replay since %s: %w", since, err)
	}
	d.wake.Notify()
	return n, nil
}

// checkEndpoint validates a URL and a filter list, and returns the filter
// list with its default.
func checkEndpoint(ctx context.Context, p AddressPolicy, rawURL string, types []string) ([]string, error) {
	if len(rawURL) > 2048 {
		return nil, fmt.Errorf("%w: URL longer than 2048 bytes", ErrInvalid)
	}
	if err := p.CheckURL(ctx, rawURL); err != nil {
		return nil, err
	}
	if len(types) == 0 {
		return []string{"*"}, nil
	}
	if len(types) > 50 {
		return nil, fmt.Errorf("%w: more than 50 event types", ErrInvalid)
	}
	for _, t := range types {
		if !validEventType(t) {
			return nil, fmt.Errorf("%w: event type %.60q: use a type such as execution.completed, a prefix such as execution.*, or *",
				ErrInvalid, t)
		}
	}
	return types, nil
}

func validEventType(t string) bool {
	if t == "*" {
		return true
	}
	t = strings.TrimSuffix(t, ".*")
	if t == "" || len(t) > 100 {
		return false
	}
	for i, r := range t {
		if !(r >= 'a' && r <= 'z' || i > 0 && (r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')) {
			return false
		}
	}
	return true
}

// Start runs the dispatcher in the background until Stop or the end of
// ctx.
func (d *Dispatcher) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return fmt.Errorf("start dispatcher: %w", execution.ErrClosed)
	}
	if d.started {
		return fmt.Errorf("start dispatcher: %w", execution.ErrAlreadyStarted)
	}
	d.started = true
	claimCtx, stop := context.WithCancel(ctx)
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	d.stop, d.cancelWork = stop, cancelWork
	d.done = make(chan struct{})
	go d.run(claimCtx, workCtx)
	return nil
}

// Stop stops claiming and waits for the attempts in flight (each bounded
// by Timeout) and their records. If ctx ends first, the attempts are
// abandoned: their deliveries are released for another try without
// counting an attempt, and Stop returns ctx's error once every worker has
// returned. It is safe to call twice.
func (d *Dispatcher) Stop(ctx context.Context) error {
	d.mu.Lock()
	d.stopped = true
	stop, cancelWork, done := d.stop, d.cancelWork, d.done
	d.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		cancelWork()
		<-done
		return fmt.Errorf("stop dispatcher: %w", ctx.Err())
	}
}

func (d *Dispatcher) run(ctx, workCtx context.Context) {
	defer close(d.done)
	defer d.client.CloseIdleConnections()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, d.cfg.Workers)
	for ctx.Err() == nil {
		if _, err := d.store.FanOut(ctx, d.now(), 500); err != nil && ctx.Err() == nil {
			d.log.ErrorContext(ctx, "fan out events", "error", err)
		}
		free := cap(slots) - len(slots)
		if free == 0 {
			d.wake.Sleep(ctx, d.cfg.PollInterval)
			continue
		}
		jobs, token, err := d.claim(ctx, free)
		if err != nil {
			if ctx.Err() == nil {
				d.log.ErrorContext(ctx, "claim deliveries", "error", err)
				d.wake.Sleep(ctx, d.cfg.PollInterval)
			}
			continue
		}
		for _, j := range jobs {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots; d.done1(j.Delivery.EndpointID) }()
				d.deliver(workCtx, j, token)
			})
		}
		if len(jobs) < free {
			d.wake.Sleep(ctx, d.idleWait(ctx))
		}
	}
}

// RunOnce fans out new events and attempts the deliveries due now, up to
// Workers of them, and returns how many it attempted once all are
// recorded. It serves tests and hosts that schedule delivery themselves.
func (d *Dispatcher) RunOnce(ctx context.Context) (int, error) {
	d.mu.Lock()
	stopped := d.stopped
	d.mu.Unlock()
	if stopped {
		return 0, fmt.Errorf("run dispatcher: %w", execution.ErrClosed)
	}
	if _, err := d.store.FanOut(ctx, d.now(), 500); err != nil {
		return 0, fmt.Errorf("fan out events: %w", err)
	}
	jobs, token, err := d.claim(ctx, d.cfg.Workers)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			defer d.done1(j.Delivery.EndpointID)
			d.deliver(ctx, j, token)
		})
	}
	wg.Wait()
	return len(jobs), nil
}

// inFlight returns how many deliveries are in flight per endpoint.
func (d *Dispatcher) inFlight() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(d.busy))
	for k, v := range d.busy {
		out[k] = v
	}
	return out
}

func (d *Dispatcher) claim(ctx context.Context, limit int) ([]Job, string, error) {
	now := d.now()
	token := d.newID("dls_", now)
	lease := d.cfg.Timeout + d.cfg.ConnectTimeout + time.Second // past any attempt's end
	jobs, err := d.store.ClaimDeliveries(ctx, ClaimParams{Now: now, Until: now.Add(lease), Owner: token,
		Limit: limit, PerEndpoint: d.cfg.PerEndpoint, Busy: d.inFlight()})
	if err != nil {
		return nil, "", fmt.Errorf("claim deliveries: %w", err)
	}
	d.mu.Lock()
	for _, j := range jobs {
		d.busy[j.Delivery.EndpointID]++
	}
	d.mu.Unlock()
	return jobs, token, nil
}

func (d *Dispatcher) done1(endpointID string) {
	d.mu.Lock()
	if d.busy[endpointID]--; d.busy[endpointID] <= 0 {
		delete(d.busy, endpointID)
	}
	d.mu.Unlock()
	d.wake.Notify()
}

// deliver makes one attempt and records its outcome.
func (d *Dispatcher) deliver(ctx context.Context, j Job, token string) {
	secrets := make([]Secret, 0, len(j.Secrets))
	for _, s := range j.Secrets {
		if sec, err := ParseSecret(s); err == nil {
			secrets = append(secrets, sec)
		}
	}
	start := d.now()
	attempt := Attempt{DeliveryID: j.Delivery.ID, At: start}
	status, retryAfter, excerpt, err := d.post(ctx, j, secrets, start)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err != nil && ctx.Err() != nil {
		// Abandoned by Stop: not the endpoint's failure.
		if err := d.store.ReleaseDelivery(wctx, j.Delivery.ID, token, d.now()); err != nil {
			d.log.WarnContext(wctx, "release delivery", "delivery", j.Delivery.ID, "error", err)
		}
		return
	}
	attempt.StatusCode, attempt.Response = status, excerpt
	attempt.Latency = d.now().Sub(start)
	if err != nil {
		attempt.Error = clipText(err.Error(), 500)
	}

	o := Outcome{DeliveryID: j.Delivery.ID, LeaseOwner: token, Attempt: attempt, DisableAfter: d.cfg.DisableAfter}
	attempts := j.Delivery.Attempts + 1
	switch {
	case err == nil && status >= 200 && status < 300:
		o.State = Delivered
	case status == http.StatusGone:
		o.State, o.Failed = Parked, true
		o.Disable = "endpoint answered 410 Gone"
	case attempts >= len(d.cfg.Schedule):
		o.State, o.Failed = Dead, true
	default:
		o.State, o.Failed = Pending, true
		o.NextAttemptAt = start.Add(d.retryDelay(attempts, status, retryAfter))
	}
	if o.DisableAfter < 0 {
		o.DisableAfter = 0
	}
	if err := d.store.RecordAttempt(wctx, o); err != nil {
		d.log.WarnContext(ctx, "record delivery attempt", "delivery", j.Delivery.ID, "error", err)
	}
	if o.State != Delivered {
		d.log.DebugContext(ctx, "delivery attempt failed", "delivery", j.Delivery.ID, "endpoint", j.Delivery.EndpointID,
			"status", status, "state", o.State, "error", attempt.Error)
	}
}

// post sends the event and returns the answer's status, its Retry-After
// (zero if none) and the start of its body.
func (d *Dispatcher) post(ctx context.Context, j Job, secrets []Secret, at time.Time) (int, time.Duration, string, error) {
	if len(secrets) == 0 {
		return 0, 0, "", errors.New("endpoint has no valid signing secret")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.URL, bytes.NewReader(j.Payload))
	if err != nil {
		return 0, 0, "", fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "execkit-webhooks")
	SetHeaders(req.Header, j.Delivery.EventID, at, j.Payload, secrets...)
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	// The status is what counts; the body is read only up to the cap, and
	// a failure to read it changes nothing.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, d.cfg.MaxResponseBytes))
	excerpt := clipText(strings.ToValidUTF8(string(body), "?"), 1024)
	retryAfter := backoff.RetryAfter(resp.Header.Get("Retry-After"), at, d.cfg.MaxRetryAfter)
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return resp.StatusCode, 0, excerpt, fmt.Errorf("redirect to %.100q not followed", resp.Header.Get("Location"))
	case resp.StatusCode < 200 || resp.StatusCode >= 300:
		return resp.StatusCode, retryAfter, excerpt, fmt.Errorf("answered %d", resp.StatusCode)
	}
	return resp.StatusCode, 0, excerpt, nil
}

// retryDelay is the wait before attempt n+1: the schedule's, varied by up
// to 10%, or a 429 or 503 answer's Retry-After within MaxRetryAfter.
func (d *Dispatcher) retryDelay(attempts, status int, retryAfter time.Duration) time.Duration {
	if (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) && retryAfter > 0 {
		return backoff.Clamp(retryAfter, time.Second, d.cfg.MaxRetryAfter)
	}
	wait := d.cfg.Schedule[attempts]
	return wait + time.Duration((rand.Float64()*0.2-0.1)*float64(wait))
}

// idleWait is how long the loop may sleep after a claim that left workers
// idle: until the next delivery is due, at most PollInterval. A delivery
// already due was held back (behind an earlier version, or by its
// endpoint's cap): a finished attempt wakes the loop for it, so the loop
// sleeps the full interval rather than spin.
func (d *Dispatcher) idleWait(ctx context.Context) time.Duration {
	due, ok, err := d.store.NextDeliveryDue(ctx)
	if ok && err == nil && !due.After(d.now()) {
		return d.cfg.PollInterval
	}
	return wake.Until(due, ok && err == nil, d.now(), d.cfg.PollInterval)
}

func (d *Dispatcher) now() time.Time { return d.cfg.Clock.Now().UTC().Truncate(time.Millisecond) }

func (d *Dispatcher) newID(prefix string, at time.Time) string {
	d.ids.Lock()
	defer d.ids.Unlock()
	id, err := ulid.New(ulid.Timestamp(at), d.ids.entropy)
	if err != nil {
		id = ulid.MustNew(ulid.Timestamp(at), cryptoReader{})
	}
	return prefix + id.String()
}

// clipText shortens s to at most n bytes without splitting a character.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
