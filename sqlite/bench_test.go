package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/execution/storetest"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/sqlite"
)

// BenchmarkWriteTransition measures one conditional write with a history
// row and an outbox event: the progress self-loop, over and over.
func BenchmarkWriteTransition(b *testing.B) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c := storetest.NewCreation("servers.provision")
	e, _, err := s.Create(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	e.Status = fsm.Running
	if _, err := s.DB().Exec(`UPDATE executions SET status = 'running' WHERE id = ?`, e.ID); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		next := e
		next.Version, next.Revision = e.Version+1, e.Revision+1
		t := execution.Transition{ExecutionID: e.ID, Version: next.Version, From: fsm.Running, To: fsm.Running,
			Event: fsm.Progress, At: time.Now()}
		ev := execution.Event{ID: "evt_" + e.ID[4:] + time.Now().Format("150405.000000000"), ExecutionID: e.ID,
			Type: "execution.progress", Version: next.Version, CreatedAt: t.At, Payload: []byte(`{}`)}
		w := execution.Write{Expect: execution.Expect{Status: e.Status, Version: e.Version, Revision: e.Revision},
			Execution: next, Transitions: []execution.Transition{t}, Events: []execution.Event{ev}}
		if err := s.Write(ctx, w); err != nil {
			b.Fatal(err)
		}
		e = next
	}
}

// BenchmarkClaim measures claiming the eight earliest due executions among
// a thousand and releasing them.
func BenchmarkClaim(b *testing.B) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for range 1000 {
		if _, _, err := s.Create(ctx, storetest.NewCreation("servers.provision")); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now()
	for b.Loop() {
		// A new time on every pass, as the engine's loop has.
		now = now.Add(time.Millisecond)
		claimed, err := s.Claim(ctx, execution.ClaimParams{Now: now, Until: now.Add(time.Hour), Owner: "bench",
			Actions: []string{"servers.provision"}, Limit: 8 + int(now.UnixMilli()%2)})
		if err != nil || len(claimed) < 8 {
			b.Fatalf("claimed %d, %v", len(claimed), err)
		}
		for _, c := range claimed {
			if err := s.Release(ctx, c.ID, "bench", now.Add(-time.Hour)); err != nil {
				b.Fatal(err)
			}
		}
	}
}
