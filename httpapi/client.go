package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/internal/backoff"
)

// ClientConfig tunes a [Client]. The zero value of every field selects the
// default in its comment.
type ClientConfig struct {
	// HTTPClient makes the requests. Nil means a client whose timeout
	// leaves room for a long poll.
	HTTPClient *http.Client
	// Header is added to every request, for credentials such as
	// Authorization.
	Header http.Header
	// LongPoll is how long Wait asks the server to hold each poll, when
	// the server offers long polls. Zero means 30 seconds; negative turns
	// long polling off.
	LongPoll time.Duration
	// MinBackoff and MaxBackoff bound Wait's exponential backoff when the
	// server gives no Retry-After. Zero means 1 and 30 seconds.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxRetryAfter caps how long Wait honours a Retry-After. Zero means
	// 5 minutes.
	MaxRetryAfter time.Duration
	// MaxErrors is how many failed polls in a row (network errors, 5xx,
	// 429) Wait tolerates before it returns the last error. Zero means 10.
	MaxErrors int
	// Sleep waits between polls; it returns early with ctx's error. Nil
	// means a timer. Tests replace it to run without waiting.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Client polls the execution resource served by [NewHandler]. Its Get
// fits a webhook receiver's fetch function.
type Client struct {
	base *url.URL
	cfg  ClientConfig
}

// ErrUnknownStatus is returned by [Client.Wait] for an execution whose
// status the client does not know, rather than polling it forever.
var ErrUnknownStatus = errors.New("unknown execution status")

// NewClient returns a client of the resource at baseURL, the URL the
// handler is mounted at (such as "http://127.0.0.1:8080/api").
func NewClient(baseURL string, cfg ClientConfig) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("httpapi: new client: %q is not an http(s) URL", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if cfg.LongPoll == 0 {
		cfg.LongPoll = 30 * time.Second
	}
	if cfg.LongPoll > 0 && cfg.LongPoll < time.Second {
		cfg.LongPoll = time.Second // the server counts whole seconds
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{
			Timeout: max(cfg.LongPoll, 0) + 30*time.Second,
			// A redirect is an answer like any other: credentials in
			// Header must not follow it to another host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = 5 * time.Minute
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.MaxErrors <= 0 {
		cfg.MaxErrors = 10
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	return &Client{base: u, cfg: cfg}, nil
}

// Create creates an execution. A non-empty idempotencyKey makes a retried
// request return the first execution.
func (c *Client) Create(ctx context.Context, req CreateRequest, idempotencyKey string) (Execution, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return Execution{}, fmt.Errorf("create execution: encode request: %w", err)
	}
	var out Execution
	_, err = c.do(ctx, http.MethodPost, "/executions", body, func(r *http.Request) {
		if idempotencyKey != "" {
			r.Header.Set("Idempotency-Key", idempotencyKey)
		}
	}, &out)
	if err == nil {
		err = checkExecution(out, "")
	}
	if err != nil {
		return Execution{}, fmt.Errorf("create execution: %w", err)
	}
	return out, nil
}

// Get returns the execution with the id.
func (c *Client) Get(ctx context.Context, id string) (Execution, error) {
	if err := execution.ValidateID(id); err != nil {
		return Execution{}, fmt.Errorf("get execution: %w", err)
	}
	var out Execution
	if _, err := c.do(ctx, http.MethodGet, "/executions/"+id, nil, nil, &out); err != nil {
		return Execution{}, fmt.Errorf("get execution: %w", err)
	}
	if err := checkExecution(out, id); err != nil {
		return Execution{}, fmt.Errorf("get execution: %w", err)
	}
	return out, nil
}

// ErrBadResponse is returned for a 2xx answer that is not what the
// request asked for.
var ErrBadResponse = errors.New("unexpected response")

// checkExecution refuses an answer that is not the execution asked for.
func checkExecution(x Execution, id string) error {
	if x.ID == "" || (id != "" && x.ID != id) {
		return fmt.Errorf("%w: execution %.40q where %s was asked for", ErrBadResponse, x.ID, id)
	}
	return nil
}

// ListOptions filters [Client.List]. Zero fields match all.
type ListOptions struct {
	Status        string
	Action        string
	CreatedAfter  time.Time
	CreatedBefore time.Time
	Limit         int
	Cursor        string
}

// List returns one page of the caller's executions, newest first.
func (c *Client) List(ctx context.Context, o ListOptions) (Page, error) {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("status", o.Status)
	set("action", o.Action)
	set("cursor", o.Cursor)
	if !o.CreatedAfter.IsZero() {
		set("createdAfter", o.CreatedAfter.UTC().Format(time.RFC3339Nano))
	}
	if !o.CreatedBefore.IsZero() {
		set("createdBefore", o.CreatedBefore.UTC().Format(time.RFC3339Nano))
	}
	if o.Limit > 0 {
		set("limit", strconv.Itoa(o.Limit))
	}
	path := "/executions"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out Page
	if _, err := c.do(ctx, http.MethodGet, path, nil, nil, &out); err != nil {
		return Page{}, fmt.Errorf("list executions: %w", err)
	}
	return out, nil
}

// Cancel cancels an execution. A cancel that lost the race to another
// terminal state returns the execution as it ended, as the engine's Cancel
// does, with an error that matches [execution.ErrTerminal] and is a
// [*Problem] of type [TypeConflict].
func (c *Client) Cancel(ctx context.Context, id, reason string) (Execution, error) {
	if err := execution.ValidateID(id); err != nil {
		return Execution{}, fmt.Errorf("cancel execution: %w", err)
	}
	body, _ := json.Marshal(struct {
		Reason string `json:"reason,omitempty"`
	}{reason})
	var out Execution
	_, err := c.do(ctx, http.MethodPost, "/executions/"+id+"/cancel", body, nil, &out)
	if err == nil {
		err = checkExecution(out, id)
	}
	var p *Problem
	if errors.As(err, &p) && p.Type == TypeConflict && p.Execution != nil && p.Execution.Done {
		return *p.Execution, fmt.Errorf("cancel execution: %w: %w", execution.ErrTerminal, err)
	}
	if err != nil {
		return Execution{}, fmt.Errorf("cancel execution: %w", err)
	}
	return out, nil
}

// Transitions returns the history of an execution.
func (c *Client) Transitions(ctx context.Context, id string) ([]Transition, error) {
	if err := execution.ValidateID(id); err != nil {
		return nil, fmt.Errorf("execution transitions: %w", err)
	}
	var out struct {
		Transitions []Transition `json:"transitions"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/executions/"+id+"/transitions", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("execution transitions: %w", err)
	}
	return out.Transitions, nil
}

// Wait polls an execution until it is terminal and returns it. It uses
// long polls when the server offers them; otherwise it waits as long as
// Retry-After says (at least 1 second, keeping the last value when a
// response has none), or backs off exponentially with jitter when the
// server never says. It returns when ctx ends, after MaxErrors failed polls
// in a row, on a client error (4xx), or with [ErrUnknownStatus].
func (c *Client) Wait(ctx context.Context, id string) (Execution, error) {
	return c.WaitFunc(ctx, id, nil)
}

// WaitFunc is [Client.Wait], calling each (if not nil) with every new
// version of the execution it receives.
func (c *Client) WaitFunc(ctx context.Context, id string, each func(Execution)) (Execution, error) {
	if err := execution.ValidateID(id); err != nil {
		return Execution{}, fmt.Errorf("wait for execution: %w", err)
	}
	var (
		last       Execution
		tag        string
		longPoll   bool
		retryAfter time.Duration
		failures   int
		backoffs   int
	)
	for {
		path := "/executions/" + id
		polled := longPoll
		if polled {
			path += "?wait=" + strconv.Itoa(int(c.cfg.LongPoll/time.Second))
		}
		var fresh Execution
		sent := time.Now()
		resp, err := c.do(ctx, http.MethodGet, path, nil, func(r *http.Request) {
			if tag != "" {
				r.Header.Set("If-None-Match", tag)
			}
		}, &fresh)

		var p *Problem
		changed := false
		switch {
		case ctx.Err() != nil:
			return last, fmt.Errorf("wait for execution %s: %w", id, ctx.Err())
		case errors.As(err, &p) && p.Status < 500 && p.Status != http.StatusTooManyRequests:
			return last, fmt.Errorf("wait for execution %s: %w", id, err)
		case err == nil && resp.StatusCode == http.StatusOK:
			if err = checkExecution(fresh, id); err != nil {
				break
			}
			if !fresh.Status.Valid() {
				return fresh, fmt.Errorf("wait for execution %s: %w %q", id, ErrUnknownStatus, echo(string(fresh.Status)))
			}
			changed = fresh.Version != last.Version || last.ID == ""
			last, tag = fresh, resp.Header.Get("ETag")
			if changed && each != nil {
				each(last)
			}
			if last.Done || last.Status.Terminal() {
				return last, nil
			}
		}
		if err != nil {
			failures++
			if failures >= c.cfg.MaxErrors {
				return last, fmt.Errorf("wait for execution %s: %d failed polls in a row: %w", id, failures, err)
			}
		} else {
			failures = 0
			if s, err := strconv.Atoi(resp.Header.Get(MaxWaitHeader)); err == nil && s > 0 && c.cfg.LongPoll > 0 {
				longPoll = true
			}
		}
		if resp != nil {
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
				retryAfter = backoff.Clamp(time.Duration(s)*time.Second, time.Second, c.cfg.MaxRetryAfter)
			}
		}

		// Long-poll at once when the server just offered it, after a long
		// poll that brought news, or after one the server held for a good
		// part of the wait; a quicker empty answer would make this spin,
		// so it waits like a plain poll.
		if err == nil && longPoll && (!polled || changed || time.Since(sent) >= c.cfg.LongPoll/2) {
			continue
		}
		delay := retryAfter
		if delay == 0 || err != nil {
			backoffs++
			delay = max(delay, backoff.Delay(backoffs, c.cfg.MinBackoff, c.cfg.MaxBackoff, rand.Float64()))
		}
		if err := c.cfg.Sleep(ctx, delay); err != nil {
			return last, fmt.Errorf("wait for execution %s: %w", id, err)
		}
	}
}

// do sends one request and decodes a 2xx JSON answer into out. An error
// answer becomes a *Problem; a 304 decodes nothing.
func (c *Client) do(ctx context.Context, method, path string, body []byte, edit func(*http.Request), out any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range c.cfg.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if edit != nil {
		edit(req)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()

	const maxResponse = 8 << 20
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return resp, fmt.Errorf("read response: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return resp, nil
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		if err := json.Unmarshal(data, out); err != nil {
			return resp, fmt.Errorf("decode response: %w", err)
		}
		return resp, nil
	}
	// The status line is the truth; a body that disagrees with it is not
	// a problem document of this API, and its type is not trusted.
	p := &Problem{}
	if json.Unmarshal(data, p) != nil || p.Status != resp.StatusCode {
		p = &Problem{}
	}
	p.Status = resp.StatusCode
	if p.Title == "" {
		p.Title = http.StatusText(resp.StatusCode)
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		p.Detail = fmt.Sprintf("redirect to %q not followed", echo(resp.Header.Get("Location")))
	}
	return resp, p
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
