package execution_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/fake"
)

func TestWaitChange(t *testing.T) {
	t.Parallel()
	e := setup(t, execution.Config{}, map[string]fake.Script{"servers.provision": provisionScript})
	x := e.create("servers.provision")

	// A version the caller has not seen answers at once.
	if got, err := e.engine.WaitChange(e.ctx, x.ID, 0); err != nil || got.Version != 1 {
		t.Fatalf("stale version: v%d, %v", got.Version, err)
	}

	// A transition wakes the waiter.
	done := make(chan execution.Execution)
	go func() {
		got, err := e.engine.WaitChange(e.ctx, x.ID, 1)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	for e.engine.Waiting() != 1 {
		runtime.Gosched()
	}
	if _, err := e.engine.Apply(e.ctx, x.ID, execution.Update{Status: fsm.Accepted}); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got.Version != 2 || got.Status != fsm.Accepted {
		t.Fatalf("woken with %s v%d", got.Status, got.Version)
	}

	// The end of ctx answers with the record as it is, and frees the waiter.
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Millisecond)
	defer cancel()
	if got, err := e.engine.WaitChange(ctx, x.ID, 2); err != nil || got.Version != 2 {
		t.Fatalf("timed out: v%d, %v", got.Version, err)
	}
	if n := e.engine.Waiting(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
	if _, err := e.engine.WaitChange(e.ctx, "exe_01JZZZZZZZZZZZZZZZZZZZZZZZ", 1); err == nil {
		t.Fatal("unknown id accepted")
	}
}
