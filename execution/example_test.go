package execution_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/sqlite"
)

// Example drives one execution through a scripted provider under a manual
// clock, one engine pass at a time.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "execkit-example")
	defer os.RemoveAll(dir)

	store, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()

	clock := fake.NewClock(time.Date(2026, 5, 30, 12, 0, 0, 0, time.UTC))
	provider := fake.New(clock)
	provider.Script("domains.register", fake.Script{Steps: []fake.Step{
		fake.Accept(time.Second),
		fake.Start(2 * time.Second),
		fake.Complete(4*time.Second, `{"domain":"example.org"}`),
	}})
	engine, _ := execution.New(store, execution.Config{Clock: clock})
	_ = engine.Register("domains.register", provider)

	e, _ := engine.Create(ctx, execution.CreateRequest{
		Action: "domains.register",
		Input:  []byte(`{"domain":"example.org"}`),
	})
	for !e.Done() {
		_, _ = engine.RunOnce(ctx)
		e, _ = engine.Get(ctx, e.ID)
		fmt.Printf("%s  %-9s v%d\n", clock.Now().Format("15:04:05"), e.Status, e.Version)
		clock.Set(e.NextCheckAt)
	}
	fmt.Println(string(e.Output))
	// Output:
	// 12:00:00  pending   v1
	// 12:00:01  accepted  v2
	// 12:00:02  running   v3
	// 12:00:04  completed v4
	// {"domain":"example.org"}
}

// ExampleEngine_Create shows idempotent creation: the same key and request
// return the same execution.
func ExampleEngine_Create() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "execkit-example")
	defer os.RemoveAll(dir)
	store, _ := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Options{})
	defer store.Close()
	engine, _ := execution.New(store, execution.Config{})
	_ = engine.Register("servers.provision", fake.New(nil))

	req := execution.CreateRequest{
		Action:         "servers.provision",
		Owner:          "cus_42",
		IdempotencyKey: "order-1001",
		Input:          []byte(`{"plan":"cx22","region":"fsn1"}`),
	}
	first, _ := engine.Create(ctx, req)
	req.Input = []byte(`{"region":"fsn1","plan":"cx22"}`)
	again, _ := engine.Create(ctx, req)
	fmt.Println(first.ID == again.ID)

	req.Input = []byte(`{"plan":"cx52","region":"fsn1"}`)
	_, err := engine.Create(ctx, req)
	fmt.Println(errors.Is(err, execution.ErrIdempotencyConflict))
	// Output:
	// true
	// true
}
