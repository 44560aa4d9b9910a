// Package webhooktest provides a recording webhook endpoint for tests, in
// the spirit of net/http/httptest: a loopback server that verifies every
// delivery's signature and keeps what it received.
package webhooktest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/webhook"
)

// Received is one verified delivery.
type Received struct {
	// ID is the webhook-id header, the event id.
	ID string
	// Header holds the request's headers.
	Header http.Header
	// Body is the raw body.
	Body []byte
	// Event is the body decoded.
	Event execution.EventPayload
	// Status is what the server answered.
	Status int
}

// Server is a recording endpoint. Deliveries whose signature does not
// verify are answered 401 and counted in Rejected, not recorded.
type Server struct {
	*httptest.Server
	secret webhook.Secret

	mu       sync.Mutex
	received []Received
	rejected int
	respond  func(*http.Request, int) int
	changed  chan struct{}
}

// NewServer starts a server on loopback that verifies with secret; the
// test's cleanup closes it. It answers 204 until told otherwise by
// [Server.Respond].
func NewServer(t testing.TB, secret webhook.Secret) *Server {
	t.Helper()
	s := &Server{secret: secret, changed: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Respond sets how the server answers: f gets the request and how many
// verified deliveries came before it, and returns the status.
func (s *Server) Respond(f func(r *http.Request, n int) int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.respond = f
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	id, err := webhook.Verify(r.Header, body, time.Now(), webhook.DefaultTolerance, s.secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.notify()
	if err != nil {
		s.rejected++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	rec := Received{ID: id, Header: r.Header.Clone(), Body: body, Status: http.StatusNoContent}
	_ = json.Unmarshal(body, &rec.Event)
	if s.respond != nil {
		rec.Status = s.respond(r, len(s.received))
	}
	s.received = append(s.received, rec)
	w.WriteHeader(rec.Status)
}

// notify wakes everyone waiting; s.mu is held.
func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Received returns the verified deliveries so far, in arrival order.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// Rejected counts deliveries whose signature did not verify.
func (s *Server) Rejected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rejected
}

// Delivered returns the deliveries answered with a 2xx, in arrival order.
func (s *Server) Delivered() []Received {
	var out []Received
	for _, r := range s.Received() {
		if r.Status >= 200 && r.Status < 300 {
			out = append(out, r)
		}
	}
	return out
}

// WaitFor waits until ok holds for the deliveries received, or ctx ends,
// and returns them.
func (s *Server) WaitFor(ctx context.Context, ok func([]Received) bool) ([]Received, error) {
	for {
		s.mu.Lock()
		got := append([]Received(nil), s.received...)
		changed := s.changed
		s.mu.Unlock()
		if ok(got) {
			return got, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
}
