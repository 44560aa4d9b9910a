package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/sqlite"
)

// lockedWriter collects a process's standard error.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestContention runs three serve processes on one file, creating and
// reading through all of them while a fourth process prunes in a loop:
// no caller sees "database is locked", and the final histogram matches
// what was created.
func TestContention(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	const processes, perProcess = 3, 60
	bin := binary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "shared.db")
	_, serviceURL := newOrderService(t)
	config := filepath.Join(dir, "execkit.toml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `
[api]
tokens = { "t1" = "cus_1" }
[engine]
check_interval = "30ms"
poll_interval = "20ms"
[[actions]]
name = "orders.place"
provider = "httpjson"
submit_url = "%s/orders"
status_url = "%s/orders/{ref}"
statuses = { queued = "accepted", working = "running", done = "completed", error = "failed", refunded = "refunded" }
check_after = "30ms"
`, serviceURL, serviceURL), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"--db", db, "migrate"}, &strings.Builder{}, &strings.Builder{}); code != exitOK {
		t.Fatalf("migrate: %d", code)
	}
	oldCompleted(t, db, 3000) // work for the pruner

	var servers []*server
	var logs []*lockedWriter
	for range processes {
		w := &lockedWriter{}
		cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--log-level", "warn", "--db", db, "--config", config)
		s := startWith(t, cmd, w)
		servers = append(servers, s)
		logs = append(logs, w)
	}
	defer func() {
		for _, s := range servers {
			s.stop(t, syscall.SIGTERM)
		}
	}()

	// The pruner runs beside them the whole time.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pruneCtx, stopPruning := context.WithCancel(ctx)
	var pruneErrs lockedWriter
	prunes := 0
	var wg sync.WaitGroup
	wg.Go(func() {
		for pruneCtx.Err() == nil {
			var out strings.Builder
			if code := run([]string{"--db", db, "prune", "--older-than", "24h"}, &out, &pruneErrs); code != exitOK {
				fmt.Fprintf(&pruneErrs, "prune exited %d\n", code)
			}
			prunes++
		}
	})

	header := http.Header{"Authorization": {"Bearer t1"}}
	var (
		mu     sync.Mutex
		ids    = map[string]string{} // id → server url
		errs   []error
		wanted = map[fsm.State]int{}
	)
	var creators sync.WaitGroup
	for i, s := range servers {
		creators.Go(func() {
			c, _ := httpapi.NewClient(s.url, httpapi.ClientConfig{Header: header})
			for j := range perProcess {
				x, err := c.Create(ctx, httpapi.CreateRequest{Action: "orders.place", Input: fmt.Appendf(nil, `{"p":%d,"n":%d}`, i, j)}, "")
				if err == nil {
					_, err = c.Get(ctx, x.ID) // a read through the same process
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					ids[x.ID] = s.url
					wanted[wantState(x.ID)]++
				}
				mu.Unlock()
			}
		})
	}
	creators.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d callers failed, the first: %v", len(errs), errs[0])
	}
	// Wait for every execution through a process other than its creator's.
	readers := map[string]*httpapi.Client{}
	for _, s := range servers {
		readers[s.url], _ = httpapi.NewClient(s.url, httpapi.ClientConfig{Header: header, LongPoll: 5 * time.Second})
	}
	got := map[fsm.State]int{}
	for id, creator := range ids {
		var reader *httpapi.Client
		for u, c := range readers {
			if u != creator {
				reader = c
				break
			}
		}
		x, err := reader.Wait(ctx, id)
		if err != nil {
			t.Fatalf("wait for %s: %v", id, err)
		}
		got[x.Status]++
	}
	stopPruning()
	wg.Wait()

	if fmt.Sprint(got) != fmt.Sprint(wanted) {
		t.Fatalf("final histogram %v, want %v", got, wanted)
	}
	for i, l := range logs {
		if s := l.String(); strings.Contains(s, "locked") || strings.Contains(s, "SQLITE_BUSY") {
			t.Fatalf("process %d met a locked database:\n%s", i, s)
		}
	}
	if s := pruneErrs.String(); s != "" {
		t.Fatalf("the pruner failed: %s", s)
	}
	store, err := sqlite.Open(ctx, db, sqlite.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if st, _ := store.Stats(ctx); st.Executions != len(ids) {
		t.Fatalf("%d executions left, want the %d live ones: the old ones were not all pruned", st.Executions, len(ids))
	}
	t.Logf("%d processes created %d executions, read them back through other processes, %d prune runs alongside: histogram %v",
		processes, len(ids), prunes, got)
}

// oldCompleted writes n executions completed a month ago, each with its
// history and one event, straight into the file.
func oldCompleted(t *testing.T, db string, n int) {
	t.Helper()
	s, err := sqlite.Open(context.Background(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := time.Now().Add(-30 * 24 * time.Hour).UnixMilli()
	for _, q := range []string{
		`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
		 INSERT INTO executions (id, action, provider, owner, status, version, revision, input, request_hash,
			created_at, updated_at, completed_at)
		 SELECT printf('exe_0%025d', i), 'orders.place', 'httpjson', 'cus_1', 'completed', 2, 2, '{}', 'h', ?2, ?2, ?2 FROM n`,
		`INSERT INTO transitions (execution_id, version, from_status, to_status, event, reason, at)
		 SELECT id, 2, 'running', 'completed', 'complete', '', ?2 FROM executions WHERE ?1 > 0`,
		`INSERT INTO outbox (id, execution_id, type, version, payload, created_at, fanned_out)
		 SELECT 'evt' || substr(id, 4), id, 'execution.completed', 2, CAST('{}' AS BLOB), ?2, 1 FROM executions WHERE ?1 > 0`,
	} {
		if _, err := s.DB().Exec(q, n, at); err != nil {
			t.Fatal(err)
		}
	}
}
