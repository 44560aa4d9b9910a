package webhook_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/execkit/execkit/webhook"
)

// BenchmarkDeliver measures fanning out and delivering one event to a
// loopback endpoint, with its attempt recorded.
func BenchmarkDeliver(b *testing.B) {
	e := setupDispatch(b, webhook.Config{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer srv.Close()
	if _, _, err := e.disp.AddEndpoint(e.ctx, webhook.EndpointConfig{URL: srv.URL}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		e.create()
		if n, err := e.disp.RunOnce(e.ctx); err != nil || n != 1 {
			b.Fatalf("delivered %d, %v", n, err)
		}
	}
}
