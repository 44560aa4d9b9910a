package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
)

// MaxWaitHeader is the response header by which the handler offers long
// polls: the longest ?wait it honours, in seconds.
const MaxWaitHeader = "Execkit-Max-Wait"

// Config sets up [NewHandler]. Engine and Authenticate are required; the
// zero value of every other field selects the default in its comment.
type Config struct {
	// Engine serves the executions.
	Engine *execution.Engine
	// Authenticate returns the owner a request acts for. Every read and
	// write is scoped to it; an error or an empty owner answers 401. Use
	// [SingleOwner] when one trusted caller owns everything.
	Authenticate func(*http.Request) (owner string, err error)
	// BasePath is where the handler is mounted, such as "/api"; it
	// prefixes the Location header. Zero means the root.
	BasePath string
	// MaxBodyBytes caps request bodies. Zero means 1 MiB.
	MaxBodyBytes int64
	// MaxWait caps the ?wait of a long poll. Zero means 60 seconds.
	MaxWait time.Duration
	// MaxRetryAfter caps the Retry-After advice. Zero means 30 seconds.
	MaxRetryAfter time.Duration
	// Clock tells the time for Retry-After. Nil means the wall clock.
	Clock execution.Clock
	// Logger receives internal errors. Nil discards them.
	Logger *slog.Logger
}

// SingleOwner returns an Authenticate function that lets every request act
// for owner: for a handler that only trusted callers reach.
func SingleOwner(owner string) func(*http.Request) (string, error) {
	return func(*http.Request) (string, error) { return owner, nil }
}

// ErrUnauthenticated is what an Authenticate function may return for a
// request without valid credentials.
var ErrUnauthenticated = errors.New("unauthenticated")

type handler struct {
	cfg Config
	mux *http.ServeMux
	log *slog.Logger
}

// NewHandler returns the execution resource as an http.Handler:
//
//	POST /executions                     create (202, Location, Retry-After)
//	GET  /executions                     list the caller's executions
//	GET  /executions/{id}                read; ETag, If-None-Match, ?wait=30s
//	POST /executions/{id}/cancel         cancel
//	GET  /executions/{id}/transitions    the history
//
// Errors are application/problem+json (RFC 9457) with a stable type.
func NewHandler(cfg Config) (http.Handler, error) {
	if cfg.Engine == nil {
		return nil, errors.New("httpapi: new handler: nil Engine")
	}
	if cfg.Authenticate == nil {
		return nil, errors.New("httpapi: new handler: nil Authenticate; use SingleOwner for a single trusted caller")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 60 * time.Second
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = execution.SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.BasePath = strings.TrimSuffix(cfg.BasePath, "/")

	h := &handler{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger}
	h.mux.HandleFunc("POST /executions", h.authed(h.create))
	h.mux.HandleFunc("GET /executions", h.authed(h.list))
	h.mux.HandleFunc("GET /executions/{id}", h.authed(h.get))
	h.mux.HandleFunc("POST /executions/{id}/cancel", h.authed(h.cancel))
	h.mux.HandleFunc("GET /executions/{id}/transitions", h.authed(h.transitions))
	h.mux.HandleFunc("/", h.unrouted)
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// ownPaths matches the paths the handler serves, to tell a wrong method
// from a wrong path.
var ownPaths = regexp.MustCompile(`^/executions(/[^/]+(/cancel|/transitions)?)?$`)

func (h *handler) unrouted(w http.ResponseWriter, r *http.Request) {
	if !ownPaths.MatchString(r.URL.Path) {
		writeProblem(w, newProblem(TypeNotFound, http.StatusNotFound, "no such resource"))
		return
	}
	allow := "GET"
	switch {
	case r.URL.Path == "/executions":
		allow = "GET, POST"
	case strings.HasSuffix(r.URL.Path, "/cancel"):
		allow = "POST"
	}
	w.Header().Set("Allow", allow)
	writeProblem(w, newProblem(TypeMethodNotAllowed, http.StatusMethodNotAllowed,
		fmt.Sprintf("%s is not allowed here; use %s", r.Method, allow)))
}

type ownedHandler func(w http.ResponseWriter, r *http.Request, owner string)

// authed runs next with the request's owner, or answers 401.
func (h *handler) authed(next ownedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		owner, err := h.cfg.Authenticate(r)
		if err != nil || owner == "" {
			writeProblem(w, newProblem(TypeUnauthorized, http.StatusUnauthorized, "missing or invalid credentials"))
			return
		}
		next(w, r, owner)
	}
}

func (h *handler) create(w http.ResponseWriter, r *http.Request, owner string) {
	if p := checkJSONContent(r); p != nil {
		writeProblem(w, p)
		return
	}
	var req CreateRequest
	if p := h.decodeBody(w, r, &req, false); p != nil {
		writeProblem(w, p)
		return
	}
	in := execution.CreateRequest{
		Action:         req.Action,
		Input:          req.Input,
		Owner:          owner,
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
	}
	if req.Deadline != nil {
		in.Deadline = *req.Deadline
	}
	e, err := h.cfg.Engine.Create(r.Context(), in)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", h.cfg.BasePath+"/executions/"+e.ID)
	h.writeExecution(w, http.StatusAccepted, e)
}

func (h *handler) get(w http.ResponseWriter, r *http.Request, owner string) {
	e, ok := h.load(w, r, owner)
	if !ok {
		return
	}
	if raw, present := r.URL.Query()["wait"]; present {
		wait, err := parseWait(raw[len(raw)-1])
		if err != nil {
			writeProblem(w, validation("wait", err.Error()))
			return
		}
		base := e.Version
		if v, ok := parseETags(r.Header.Get("If-None-Match")); ok {
			base = v
		}
		if base == e.Version && !e.Done() && wait > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), min(wait, h.cfg.MaxWait))
			e, err = h.cfg.Engine.WaitChange(ctx, e.ID, base)
			cancel()
			if err != nil {
				h.fail(w, r, err)
				return
			}
			if r.Context().Err() != nil {
				return // the client left
			}
		}
	}
	if v, ok := parseETags(r.Header.Get("If-None-Match")); ok && v == e.Version {
		h.setHeaders(w, e)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.writeExecution(w, http.StatusOK, e)
}

func (h *handler) list(w http.ResponseWriter, r *http.Request, owner string) {
	f, p := parseFilter(r.URL.Query())
	if p != nil {
		writeProblem(w, p)
		return
	}
	f.Owner = owner
	page, err := h.cfg.Engine.List(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := Page{Executions: make([]Execution, 0, len(page.Executions)), NextCursor: page.Next}
	for _, e := range page.Executions {
		out.Executions = append(out.Executions, newExecution(e))
	}
	writeJSON(w, http.StatusOK, out)
}

// cancelRequest is the optional body of a cancel.
type cancelRequest struct {
	Reason string `json:"reason"`
}

func (h *handler) cancel(w http.ResponseWriter, r *http.Request, owner string) {
	if p := checkJSONContent(r); p != nil {
		writeProblem(w, p)
		return
	}
	var req cancelRequest
	if p := h.decodeBody(w, r, &req, true); p != nil {
		writeProblem(w, p)
		return
	}
	if len(req.Reason) > 500 {
		writeProblem(w, validation("reason", fmt.Sprintf("%d bytes exceeds the limit of 500", len(req.Reason))))
		return
	}
	if _, ok := h.load(w, r, owner); !ok {
		return
	}
	e, err := h.cfg.Engine.Cancel(r.Context(), r.PathValue("id"), req.Reason)
	if errors.Is(err, execution.ErrTerminal) || errors.Is(err, execution.ErrInvalidTransition) {
		p := newProblem(TypeConflict, http.StatusConflict, err.Error())
		if e.ID != "" {
			out := newExecution(e)
			p.Execution = &out
		}
		writeProblem(w, p)
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeExecution(w, http.StatusOK, e)
}

func (h *handler) transitions(w http.ResponseWriter, r *http.Request, owner string) {
	e, ok := h.load(w, r, owner)
	if !ok {
		return
	}
	hist, err := h.cfg.Engine.History(r.Context(), e.ID)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := struct {
		Transitions []Transition `json:"transitions"`
	}{Transitions: make([]Transition, 0, len(hist))}
	for _, t := range hist {
		out.Transitions = append(out.Transitions, Transition{
			Version: t.Version, From: t.From, To: t.To, Event: t.Event, Reason: t.Reason, At: t.At.UTC(),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// load reads the execution named in the path, and answers 404 for one of
// another owner exactly as for one that does not exist.
func (h *handler) load(w http.ResponseWriter, r *http.Request, owner string) (execution.Execution, bool) {
	id := r.PathValue("id")
	if err := execution.ValidateID(id); err != nil {
		h.fail(w, r, err)
		return execution.Execution{}, false
	}
	e, err := h.cfg.Engine.Get(r.Context(), id)
	if err == nil && e.Owner != owner {
		err = execution.ErrNotFound
	}
	if err != nil {
		h.fail(w, r, err)
		return execution.Execution{}, false
	}
	return e, true
}

// decodeBody reads a JSON object into v, refusing unknown fields, trailing
// data and bodies over the cap. An empty body is allowed if optional.
func (h *handler) decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) *Problem {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return problemFor(err)
		}
		return validation("body", "could not be read")
	}
	if optional && len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeProblem(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return validation("body", "trailing data after the JSON object")
	}
	return nil
}

// decodeProblem says which field of a body was wrong.
func decodeProblem(err error) *Problem {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		tm     *time.ParseError
	)
	switch {
	case errors.As(err, &syntax):
		return validation("body", fmt.Sprintf("malformed JSON at byte %d", syntax.Offset))
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return validation("body", "must be a JSON object")
		}
		return validation(field, fmt.Sprintf("must be %s, not %s", jsonKind(typ.Type.Kind().String()), typ.Value))
	case errors.As(err, &tm):
		return validation("deadline", "must be an RFC 3339 time")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return validation("body", "empty or truncated JSON")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field, _ := strconv.Unquote(name)
		return validation(field, "unknown field")
	}
	return validation("body", "malformed JSON")
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "struct", "map":
		return "an object"
	case "slice":
		return "an object or array"
	}
	return "a " + goKind
}

func validation(field, problem string) *Problem {
	p := newProblem(TypeValidation, http.StatusBadRequest, fmt.Sprintf("invalid %s: %s", field, problem))
	p.Field = field
	return p
}

func checkJSONContent(r *http.Request) *Problem {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		p := validation("Content-Type", fmt.Sprintf("%.60q is not application/json", ct))
		p.Status = http.StatusUnsupportedMediaType
		return p
	}
	return nil
}

// listParams are the query parameters of GET /executions.
var listParams = map[string]bool{
	"status": true, "action": true, "createdAfter": true, "createdBefore": true, "limit": true, "cursor": true,
}

func parseFilter(q url.Values) (execution.Filter, *Problem) {
	var f execution.Filter
	for k, v := range q {
		if !listParams[k] {
			return f, validation(k, "unknown query parameter")
		}
		if len(v) > 1 {
			return f, validation(k, "given more than once")
		}
	}
	f.Status = fsm.State(q.Get("status"))
	if f.Status != "" && !f.Status.Valid() {
		return f, validation("status", fmt.Sprintf("%.40q is not a state", q.Get("status")))
	}
	f.Action = q.Get("action")
	f.Cursor = q.Get("cursor")
	for _, b := range []struct {
		name string
		dst  *time.Time
	}{{"createdAfter", &f.CreatedAfter}, {"createdBefore", &f.CreatedBefore}} {
		if s := q.Get(b.name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return f, validation(b.name, "must be an RFC 3339 time")
			}
			*b.dst = t
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return f, validation("limit", "must be a positive integer")
		}
		f.Limit = min(n, execution.MaxPageSize)
	}
	return f, nil
}

// parseWait reads a long-poll wait: a Go duration ("30s") or seconds.
func parseWait(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return 0, errors.New("must not be negative")
		}
		return time.Duration(min(n, math.MaxInt32)) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New(`must be a duration such as "30s", or seconds`)
	}
	return d, nil
}

// etag is the entity tag of an execution's representation: weak, because
// fields such as nextCheckAt change without a transition.
func etag(version int64) string { return `W/"` + strconv.FormatInt(version, 10) + `"` }

// parseETags returns the version named in an If-None-Match list, if one
// of its tags is ours.
func parseETags(header string) (int64, bool) {
	for _, tag := range strings.Split(header, ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if len(tag) < 3 || tag[0] != '"' || tag[len(tag)-1] != '"' {
			continue
		}
		if v, err := strconv.ParseInt(tag[1:len(tag)-1], 10, 64); err == nil {
			return v, true
		}
	}
	return 0, false
}

func (h *handler) setHeaders(w http.ResponseWriter, e execution.Execution) {
	w.Header().Set("ETag", etag(e.Version))
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set(MaxWaitHeader, strconv.Itoa(int(h.cfg.MaxWait/time.Second)))
	if !e.Done() {
		w.Header().Set("Retry-After", strconv.Itoa(h.retryAfter(e)))
	}
}

// retryAfter advises when to poll again, in whole seconds: when the next
// provider check is due, at least 1 and at most MaxRetryAfter. While a
// worker holds the execution, the check is happening now.
func (h *handler) retryAfter(e execution.Execution) int {
	limit := int(h.cfg.MaxRetryAfter / time.Second)
	if e.LeaseOwner != "" || e.NextCheckAt.IsZero() {
		return 1
	}
	d := e.NextCheckAt.Sub(h.cfg.Clock.Now())
	secs := int(math.Ceil(d.Seconds()))
	return max(1, min(secs, limit))
}

func (h *handler) writeExecution(w http.ResponseWriter, status int, e execution.Execution) {
	h.setHeaders(w, e)
	writeJSON(w, status, newExecution(e))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fail answers an engine error, logging the internal ones.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	p := problemFor(err)
	if p.Status >= 500 {
		h.log.ErrorContext(r.Context(), "serve execution request", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	writeProblem(w, p)
}
