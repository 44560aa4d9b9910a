package execution_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
)

// BenchmarkLifecycle creates executions and drives each through accept,
// start and complete with a provider that answers at once, one engine
// pass at a time: the cost of one execution's whole life.
func BenchmarkLifecycle(b *testing.B) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	p := fake.New(nil)
	p.Script("servers.provision", fake.Script{Steps: []fake.Step{fake.Complete(0, `{}`)}})
	engine, err := execution.New(store, execution.Config{Workers: 16})
	if err != nil {
		b.Fatal(err)
	}
	if err := engine.Register("servers.provision", p); err != nil {
		b.Fatal(err)
	}
	pending := 0
	for b.Loop() {
		if _, err := engine.Create(ctx, execution.CreateRequest{Action: "servers.provision"}); err != nil {
			b.Fatal(err)
		}
		if pending++; pending == 16 {
			for pending > 0 {
				n, err := engine.RunOnce(ctx)
				if err != nil {
					b.Fatal(err)
				}
				pending -= n
			}
		}
	}
}

// BenchmarkCreate measures one creation: validation, the row, its
// history row and its event in one transaction.
func BenchmarkCreate(b *testing.B) {
	ctx := context.Background()
	engine := benchEngine(b)
	for b.Loop() {
		if _, err := engine.Create(ctx, execution.CreateRequest{Action: "servers.provision", Input: []byte(`{"plan":"cx22"}`)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApply measures single pushed transitions (pending → accepted)
// applied from many goroutines at once, as a provider's webhooks would:
// each a conditional write with its history row and its event, several
// sharing a commit.
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	engine := benchEngine(b)
	ids := make(chan string, b.N)
	for range b.N {
		x, err := engine.Create(ctx, execution.CreateRequest{Action: "servers.provision"})
		if err != nil {
			b.Fatal(err)
		}
		ids <- x.ID
	}
	close(ids)
	b.SetParallelism(8) // 16 callers on two cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := engine.Apply(ctx, <-ids, execution.Update{Status: fsm.Accepted}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchEngine is an engine on a new file with the fake provider for
// servers.provision; the benchmark's end closes the file.
func benchEngine(b *testing.B) *execution.Engine {
	b.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	engine, err := execution.New(store, execution.Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := engine.Register("servers.provision", fake.New(nil)); err != nil {
		b.Fatal(err)
	}
	return engine
}
