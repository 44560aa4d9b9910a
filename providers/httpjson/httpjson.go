// Package httpjson is an execution.Provider that speaks JSON over HTTP to
// an external service, configured rather than coded.
//
// Submit POSTs the execution's input to SubmitURL with the execution id
// as Idempotency-Key; the answer's JSON names the service's reference for
// the work and its status. Check GETs StatusURL with the reference filled
// in. Status values map to execkit's states through configuration. A 5xx,
// a 429 or a timeout is transient (Retry-After is honoured); any other
// 4xx is permanent.
package httpjson

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/internal/backoff"
)

// Config describes one service.
type Config struct {
	// Name names the provider in execution records. Zero means "httpjson".
	Name string
	// SubmitURL receives the POST of the input.
	SubmitURL string
	// StatusURL is fetched to check; "{ref}" is replaced with the
	// service's reference and "{id}" with the execution id, both escaped.
	StatusURL string
	// Header is sent with every request, for credentials.
	Header http.Header
	// RefField, StatusField, OutputField, ErrorField and MessageField
	// name the fields of the service's answers. Zero means "id",
	// "status", "output", "error" and "message".
	RefField, StatusField, OutputField, ErrorField, MessageField string
	// Statuses maps the service's status values to execkit states.
	// Unmapped values are an error the engine retries.
	Statuses map[string]fsm.State
	// CheckAfter is how long to wait between checks. Zero means 5 seconds.
	CheckAfter time.Duration
	// Timeout bounds one request. Zero means 10 seconds.
	Timeout time.Duration
	// Client makes the requests. Nil means a client with Timeout that
	// follows no redirects.
	Client *http.Client
}

// Provider is the configured service.
type Provider struct {
	cfg Config
}

var _ execution.Provider = (*Provider)(nil)

// New checks cfg and returns the provider.
func New(cfg Config) (*Provider, error) {
	for _, u := range []string{cfg.SubmitURL, cfg.StatusURL} {
		parsed, err := url.Parse(strings.NewReplacer("{ref}", "x", "{id}", "x").Replace(u))
		if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
			return nil, fmt.Errorf("httpjson: %q is not an http(s) URL", u)
		}
	}
	if !strings.Contains(cfg.StatusURL, "{ref}") && !strings.Contains(cfg.StatusURL, "{id}") {
		return nil, errors.New("httpjson: StatusURL must contain {ref} or {id}")
	}
	if len(cfg.Statuses) == 0 {
		return nil, errors.New("httpjson: Statuses maps no status value")
	}
	for v, s := range cfg.Statuses {
		if !s.Valid() {
			return nil, fmt.Errorf("httpjson: status %q maps to %q, which is not a state", v, s)
		}
	}
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&cfg.Name, "httpjson")
	def(&cfg.RefField, "id")
	def(&cfg.StatusField, "status")
	def(&cfg.OutputField, "output")
	def(&cfg.ErrorField, "error")
	def(&cfg.MessageField, "message")
	if cfg.CheckAfter <= 0 {
		cfg.CheckAfter = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &Provider{cfg: cfg}, nil
}

// Name returns the configured name.
func (p *Provider) Name() string { return p.cfg.Name }

// Submit POSTs the input with the execution id as Idempotency-Key.
func (p *Provider) Submit(ctx context.Context, e execution.Execution) (execution.Update, error) {
	return p.call(ctx, http.MethodPost, p.cfg.SubmitURL, e.Input, e.ID)
}

// Check GETs the status.
func (p *Provider) Check(ctx context.Context, e execution.Execution) (execution.Update, error) {
	u := strings.NewReplacer("{ref}", url.PathEscape(e.ExternalRef), "{id}", url.PathEscape(e.ID)).Replace(p.cfg.StatusURL)
	if strings.Contains(p.cfg.StatusURL, "{ref}") && e.ExternalRef == "" {
		return p.Submit(ctx, e) // the submission's answer was lost; submitting again is idempotent
	}
	return p.call(ctx, http.MethodGet, u, nil, e.ID)
}

func (p *Provider) call(ctx context.Context, method, u string, body []byte, id string) (execution.Update, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return execution.Update{}, execution.Permanent("bad_request", err.Error())
	}
	for k, vs := range p.cfg.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Idempotency-Key", id)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		// *url.Error quotes the whole URL, credentials included: keep its
		// cause only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return execution.Update{}, fmt.Errorf("%s %s: %w", method, redact(u), err) // transient
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return execution.Update{}, fmt.Errorf("%s %s: read answer: %w", method, redact(u), err)
	}

	switch s := resp.StatusCode; {
	case s == http.StatusTooManyRequests || s == http.StatusRequestTimeout || s >= 500:
		err := fmt.Errorf("%s %s: answered %d", method, redact(u), s)
		if wait := backoff.RetryAfter(resp.Header.Get("Retry-After"), time.Now(), 24*time.Hour); wait > 0 {
			return execution.Update{}, execution.RetryAfter(err, wait)
		}
		return execution.Update{}, err
	case s < 200 || s >= 300:
		return execution.Update{}, execution.Permanent(fmt.Sprintf("http_%d", s),
			fmt.Sprintf("%s %s answered %d: %s", method, redact(u), s, excerpt(data)))
	}
	return p.parse(data)
}

// parse reads a service answer into an update.
func (p *Provider) parse(data []byte) (execution.Update, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return execution.Update{}, fmt.Errorf("answer is not a JSON object: %s", excerpt(data))
	}
	var raw string
	if err := json.Unmarshal(doc[p.cfg.StatusField], &raw); err != nil {
		return execution.Update{}, fmt.Errorf("answer has no %q string", p.cfg.StatusField)
	}
	status, ok := p.cfg.Statuses[raw]
	if !ok {
		return execution.Update{}, fmt.Errorf("status %q is not mapped", excerpt([]byte(raw)))
	}
	u := execution.Update{Status: status, CheckAfter: p.cfg.CheckAfter}
	if ref, ok := doc[p.cfg.RefField]; ok {
		var s string
		if json.Unmarshal(ref, &s) == nil {
			u.ExternalRef = s
		} else {
			u.ExternalRef = string(ref) // a number
		}
	}
	if status == fsm.Completed {
		u.Output = asObject(doc[p.cfg.OutputField])
	}
	if status == fsm.Failed || status == fsm.Refunded {
		u.Error = &execution.Error{Code: "provider_" + string(status), Message: "the service reported " + raw}
		if e, ok := doc[p.cfg.ErrorField]; ok {
			var code string
			var obj map[string]string
			switch {
			case json.Unmarshal(e, &code) == nil && code != "":
				u.Error.Code = code
			case json.Unmarshal(e, &obj) == nil && obj["code"] != "":
				u.Error.Code, u.Error.Message = obj["code"], obj[p.cfg.MessageField]
			}
		}
	}
	return u, nil
}

// asObject makes a service's output an execution's: an object as it is,
// nothing as {}, anything else wrapped as {"value": …}.
func asObject(raw json.RawMessage) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return json.RawMessage(`{}`)
	case raw[0] == '{':
		return raw
	}
	wrapped, _ := json.Marshal(map[string]json.RawMessage{"value": raw})
	return wrapped
}

// redact drops credentials from a URL for messages: its user information
// and its query string.
func redact(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	parsed.User = nil
	if parsed.RawQuery != "" {
		parsed.RawQuery = "…"
	}
	return parsed.String()
}

// excerpt is the start of a body for a message, cut on a character
// boundary.
func excerpt(b []byte) string {
	s := strings.ToValidUTF8(string(bytes.TrimSpace(b)), "?")
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}
