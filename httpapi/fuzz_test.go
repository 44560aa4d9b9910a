package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/httpapi"
)

// FuzzCreate posts arbitrary bodies and headers to POST /executions: the
// handler answers only with documented statuses, never 500, and writes an
// execution only when it answers 202.
func FuzzCreate(f *testing.F) {
	f.Add([]byte(`{"action":"servers.provision","input":{"plan":"cx22"}}`), "application/json", "key-1")
	f.Add([]byte(`{"action":"servers.provision","input":[1]}`), "", "")
	f.Add([]byte(`{"ACTION":"servers.provision"}`), "application/json; charset=utf-16", "k")
	f.Add([]byte(`{"action":"servers.provision","deadline":"2999-01-01T00:00:00Z"}`), "text/plain", "\x00")
	f.Add([]byte("\xef\xbb\xbf{}"), "application/merge-patch+json", "")
	e := setup(f, httpapi.Config{MaxBodyBytes: 4096})
	f.Fuzz(func(t *testing.T, body []byte, contentType, key string) {
		before, _ := e.engine.List(e.ctx, execution.Filter{Limit: execution.MaxPageSize})
		run := *e
		run.t = t
		r := run.do("POST", "/executions", "o", string(body), "Content-Type", contentType, "Idempotency-Key", key)
		after, _ := e.engine.List(e.ctx, execution.Filter{Limit: execution.MaxPageSize})
		switch r.status {
		case -1:
			return // a header net/http refuses to send
		case http.StatusAccepted:
			return
		case 400, 409, 413, 415:
			if len(after.Executions) != len(before.Executions) {
				t.Fatalf("refused with %d but wrote an execution", r.status)
			}
			if len(r.body) > 2000 {
				t.Fatalf("problem body of %d bytes", len(r.body))
			}
		default:
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	})
}
