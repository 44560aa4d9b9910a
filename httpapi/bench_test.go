package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
)

// BenchmarkGetExecution measures the server time of one GET
// /executions/{id} with many executions stored: 10,000 by default, or
// EXECKIT_BENCH_EXECUTIONS, such as 1000000.
func BenchmarkGetExecution(b *testing.B) {
	n := 10_000
	if s := os.Getenv("EXECKIT_BENCH_EXECUTIONS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	engine, err := execution.New(store, execution.Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := engine.Register("servers.provision", fake.New(nil)); err != nil {
		b.Fatal(err)
	}

	// Fill in batches, one transaction each, keeping a sample of ids.
	var sample []string
	const batch = 10_000
	for start := 0; start < n; start += batch {
		tx, err := store.DB().BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := start; i < min(start+batch, n); i++ {
			owner := "cus_" + strconv.Itoa(i%100)
			x, err := engine.CreateTx(ctx, tx, execution.CreateRequest{Action: "servers.provision", Owner: owner,
				Input: fmt.Appendf(nil, `{"i":%d}`, i)})
			if err != nil {
				b.Fatal(err)
			}
			if i%(max(n/1000, 1)) == 0 {
				sample = append(sample, x.ID+" "+owner)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}

	h, err := httpapi.NewHandler(httpapi.Config{Engine: engine, Authenticate: func(r *http.Request) (string, error) {
		return r.Header.Get("X-Owner"), nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	reqs := make([]*http.Request, len(sample))
	for i, s := range sample {
		var id, owner string
		fmt.Sscan(s, &id, &owner)
		reqs[i] = httptest.NewRequest("GET", "/executions/"+id, nil)
		reqs[i].Header.Set("X-Owner", owner)
	}
	b.ReportMetric(float64(n), "executions")
	i := 0
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, reqs[i%len(reqs)])
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
		i++
	}
}
