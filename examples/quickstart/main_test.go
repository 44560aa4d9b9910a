package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestQuickstart runs the quickstart end to end on a temp file and checks
// the timelines it prints.
func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out, filepath.Join(t.TempDir(), "q.db")); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"all 3 executions terminal",
		"with long polls:",
		"GET -> pending   version 1",
		"GET -> completed version 5",
		"servers.provision  COMPLETED (version 5",
		"domains.register  COMPLETED (version 4",
		"companies.form  REFUNDED (version 3",
		"error:  name_unavailable: the registry rejected the company name",
		"webhooks verified and handled by the receiver, in arrival order (12):",
		"execution.completed  v5  servers.provision   canonical now: completed v5",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Every history row is printed, and one outbox event for each.
	rows := regexp.MustCompile(`(?m)^  \+\S+\s+v\d`).FindAllString(got, -1)
	events := regexp.MustCompile(`(?m)^    \{"id":"evt_`).FindAllString(got, -1)
	hooks := regexp.MustCompile(`(?m)^  execution\.\w+ +v\d .* canonical now: `).FindAllString(got, -1)
	if len(hooks) != 12 {
		t.Errorf("printed %d webhooks, want 12", len(hooks))
	}
	if len(rows) != 5+4+3 || len(events) != len(rows) {
		t.Errorf("printed %d history rows and %d events, want 12 of each:\n%s", len(rows), len(events), got)
	}
}
