package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/execkit/execkit/execution"
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
	// AuthChallenge is the WWW-Authenticate header of a 401. Zero means
	// "Bearer".
	AuthChallenge string
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
	if cfg.AuthChallenge == "" {
		cfg.AuthChallenge = "Bearer"
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

// ServeHTTP refuses paths that are not in clean form (the router would
// redirect them, losing a mount prefix) and CONNECT, then routes.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		writeProblem(w, newProblem(TypeMethodNotAllowed, http.StatusMethodNotAllowed, "CONNECT is not served"))
		return
	}
	if p := r.URL.EscapedPath(); p == "" || p != path.Clean(p) {
		writeProblem(w, newProblem(TypeNotFound, http.StatusNotFound, "no such resource"))
		return
	}
	h.mux.ServeHTTP(w, r)
}

// unrouted answers requests no route took: 405 on the handler's own paths,
// 404 elsewhere. It reads the escaped path, so that an id holding "%2F"
// counts as one segment.
func (h *handler) unrouted(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	allow := ""
	switch {
	case segs[0] != "executions":
	case len(segs) == 1:
		allow = "GET, HEAD, POST"
	case len(segs) == 2:
		allow = "GET, HEAD"
	case len(segs) == 3 && segs[2] == "cancel":
		allow = "POST"
	case len(segs) == 3 && segs[2] == "transitions":
		allow = "GET, HEAD"
	}
	if allow == "" {
		writeProblem(w, newProblem(TypeNotFound, http.StatusNotFound, "no such resource"))
		return
	}
	w.Header().Set("Allow", allow)
	writeProblem(w, newProblem(TypeMethodNotAllowed, http.StatusMethodNotAllowed,
		fmt.Sprintf("%.20q is not allowed here; use %s", r.Method, allow)))
}

type ownedHandler func(w http.ResponseWriter, r *http.Request, owner string)

// authed runs next with the request's owner, or answers 401.
func (h *handler) authed(next ownedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		owner, err := h.cfg.Authenticate(r)
		if err != nil || owner == "" {
			w.Header().Set("WWW-Authenticate", h.cfg.AuthChallenge)
			writeProblem(w, newProblem(TypeUnauthorized, http.StatusUnauthorized, "missing or invalid credentials"))
			return
		}
		next(w, r, owner)
	}
}

func (h *handler) create(w http.ResponseWriter, r *http.Request, owner string) {
	if _, p := checkQuery(r); p != nil {
		writeProblem(w, p)
		return
	}
	if p := checkHeaders(r, "Idempotency-Key"); p != nil {
		writeProblem(w, p)
		return
	}
	var (
		action   string
		input    json.RawMessage
		deadline *time.Time
	)
	if p := h.decodeBody(w, r, false, map[string]any{"action": &action, "input": &input, "deadline": &deadline}); p != nil {
		writeProblem(w, p)
		return
	}
	in := execution.CreateRequest{
		Action:         action,
		Input:          input,
		Owner:          owner,
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
	}
	if deadline != nil {
		if deadline.IsZero() {
			writeProblem(w, validation("deadline", "the zero time is not a deadline; leave the field out"))
			return
		}
		in.Deadline = *deadline
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
	q, p := checkQuery(r, "wait")
	if p != nil {
		writeProblem(w, p)
		return
	}
	e, ok := h.load(w, r, owner)
	if !ok {
		return
	}
	inm := r.Header.Get("If-None-Match")
	if raw := q.Get("wait"); raw != "" || q.Has("wait") {
		wait, err := parseWait(raw)
		if err != nil {
			writeProblem(w, validation("wait", err.Error()))
			return
		}
		// Wait only while the caller's copy is current (or unnamed).
		if wait > 0 && !e.Done() && (inm == "" || etagMatches(inm, e.Version)) {
			ctx, cancel := context.WithTimeout(r.Context(), min(wait, h.cfg.MaxWait))
			e, err = h.cfg.Engine.WaitChange(ctx, e.ID, e.Version)
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
	if inm != "" && etagMatches(inm, e.Version) {
		h.setHeaders(w, e)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.writeExecution(w, http.StatusOK, e)
}

func (h *handler) list(w http.ResponseWriter, r *http.Request, owner string) {
	q, p := checkQuery(r, "status", "action", "createdAfter", "createdBefore", "limit", "cursor")
	if p != nil {
		writeProblem(w, p)
		return
	}
	f, p := parseFilter(q)
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
		out.Executions = append(out.Executions, NewExecution(e))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) cancel(w http.ResponseWriter, r *http.Request, owner string) {
	if _, p := checkQuery(r); p != nil {
		writeProblem(w, p)
		return
	}
	var reason string
	if p := h.decodeBody(w, r, true, map[string]any{"reason": &reason}); p != nil {
		writeProblem(w, p)
		return
	}
	if _, ok := h.load(w, r, owner); !ok {
		return
	}
	e, err := h.cfg.Engine.Cancel(r.Context(), r.PathValue("id"), reason)
	if errors.Is(err, execution.ErrTerminal) || errors.Is(err, execution.ErrInvalidTransition) {
		// The engine's message may quote the provider; say it plainly.
		detail := fmt.Sprintf("the execution is %s and cannot be canceled", e.Status)
		if errors.Is(err, execution.ErrTerminal) {
			detail = fmt.Sprintf("the execution is already %s", e.Status)
		}
		p := newProblem(TypeConflict, http.StatusConflict, detail)
		if e.ID != "" {
			out := NewExecution(e)
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
	if _, p := checkQuery(r); p != nil {
		writeProblem(w, p)
		return
	}
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

// etag is the entity tag of an execution's representation: weak, because
// fields such as nextCheckAt change without a transition.
func etag(version int64) string { return `W/"` + strconv.FormatInt(version, 10) + `"` }

func (h *handler) setHeaders(w http.ResponseWriter, e execution.Execution) {
	w.Header().Set("ETag", etag(e.Version))
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set(MaxWaitHeader, strconv.Itoa(max(1, int(h.cfg.MaxWait/time.Second))))
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
	writeJSON(w, status, NewExecution(e))
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
