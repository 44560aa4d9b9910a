package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execkit/execkit/httpapi"
	"github.com/execkit/execkit/sqlite"
	"github.com/execkit/execkit/webhook"
	"github.com/execkit/execkit/webhook/webhooktest"
)

// binary builds execkit once for the end-to-end test.
func binary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "execkit")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// server is one run of execkit serve.
type server struct {
	cmd *exec.Cmd
	url string
}

// start runs serve and waits for it to listen.
func start(t *testing.T, bin string, args ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--log-level", "warn"}, args...)...)
	return startWith(t, cmd, os.Stderr)
}

// startWith starts a prepared serve command, its standard error to
// stderr, and waits for it to listen.
func startWith(t *testing.T, cmd *exec.Cmd, stderr io.Writer) *server {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		if u, ok := strings.CutPrefix(lines.Text(), "listening on "); ok {
			go io.Copy(io.Discard, stdout)
			return &server{cmd: cmd, url: u}
		}
	}
	t.Fatalf("serve exited before listening: %v", cmd.Wait())
	return nil
}

func (s *server) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	err := s.cmd.Wait()
	if sig == syscall.SIGTERM && err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
}

// TestServeSurvivesTermAndKill runs the built binary on a temporary file,
// creates executions over HTTP, receives the signed webhooks on a loopback
// receiver, stops the binary with SIGTERM and then SIGKILL in the middle
// of work, restarts it each time, and finds every execution completed and
// every event delivered.
func TestServeSurvivesTermAndKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := binary(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "edge.db")
	script := filepath.Join(dir, "provision.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat >/dev/null\nsleep 0.3\necho '{\"ok\":true}'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "execkit.toml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `
[api]
tokens = { "t1" = "cus_1" }
[engine]
check_interval = "100ms"
lease_duration = "2s"
poll_interval = "50ms"
[webhooks]
allow_loopback = true
timeout = "1s"
connect_timeout = "1s"
poll_interval = "50ms"
[[actions]]
name = "servers.provision"
provider = "command"
command = [%q]
on_restart = "resubmit"
`, script), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := webhook.NewSecret()
	receiver := webhooktest.NewServer(t, secret)
	args := []string{"--db", db, "--config", config, "--webhook-url", receiver.URL, "--webhook-secret", secret.Reveal()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var ids []string
	create := func(s *server, n int) {
		c, err := httpapi.NewClient(s.url, httpapi.ClientConfig{Header: http.Header{"Authorization": {"Bearer t1"}}})
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			x, err := c.Create(ctx, httpapi.CreateRequest{Action: "servers.provision", Input: fmt.Appendf(nil, `{"n":%d}`, len(ids)+i)}, "")
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, x.ID)
		}
	}

	s := start(t, bin, args...)
	create(s, 10)
	time.Sleep(200 * time.Millisecond) // let work begin, then interrupt it
	s.stop(t, syscall.SIGTERM)

	s = start(t, bin, args...)
	create(s, 10)
	time.Sleep(200 * time.Millisecond)
	s.stop(t, syscall.SIGKILL)

	s = start(t, bin, args...)
	defer s.stop(t, syscall.SIGTERM)
	c, _ := httpapi.NewClient(s.url, httpapi.ClientConfig{Header: http.Header{"Authorization": {"Bearer t1"}}, LongPoll: 5 * time.Second})
	events := 0
	for _, id := range ids {
		x, err := c.Wait(ctx, id)
		if err != nil || x.Status != "completed" {
			t.Fatalf("execution %s: %+v, %v", id, x, err)
		}
		events += int(x.Version)
	}
	got, err := receiver.WaitFor(ctx, func(r []webhooktest.Received) bool {
		seen := map[string]bool{}
		for _, x := range r {
			seen[x.ID] = true
		}
		return len(seen) >= events
	})
	if err != nil {
		t.Fatalf("received %d deliveries, want %d distinct events: %v", len(got), events, err)
	}

	// Every stored event reached the receiver.
	store, err := sqlite.Open(ctx, db, sqlite.Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	seen := map[string]bool{}
	for _, r := range got {
		seen[r.ID] = true
	}
	for _, id := range ids {
		evs, err := store.Events(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if !seen[ev.ID] {
				t.Fatalf("event %s (%s) never reached the receiver", ev.ID, ev.Type)
			}
		}
	}
	t.Logf("%d executions, %d events, %d deliveries received (%d duplicates), %d refused signatures",
		len(ids), events, len(got), len(got)-len(seen), receiver.Rejected())
}

// TestCommandLine checks the inspection commands and their exit codes.
func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "x.db")
	var out, errOut strings.Builder
	runCmd := func(args ...string) int {
		out.Reset()
		errOut.Reset()
		return run(append([]string{"--db", db}, args...), &out, &errOut)
	}
	if code := runCmd("ls"); code != exitDatabase || !strings.Contains(errOut.String(), "does not exist") {
		t.Fatalf("ls on a missing file: %d %q", code, errOut.String())
	}
	if code := runCmd("migrate"); code != exitOK || !strings.Contains(out.String(), "schema version") {
		t.Fatalf("migrate: %d %q %q", code, out.String(), errOut.String())
	}
	if code := runCmd("ls", "--json"); code != exitOK || strings.TrimSpace(out.String()) != "[]" {
		t.Fatalf("ls --json: %d %q", code, out.String())
	}
	if code := runCmd("show", "exe_01JZZZZZZZZZZZZZZZZZZZZZZZ"); code != exitNotFound {
		t.Fatalf("show of an unknown id: %d %q", code, errOut.String())
	}
	if code := runCmd("show", "nope"); code != exitUsage {
		t.Fatalf("show of a malformed id: %d", code)
	}
	if code := runCmd("endpoints", "add", "http://127.0.0.1:9/x"); code != exitUsage || !strings.Contains(errOut.String(), "loopback") {
		t.Fatalf("endpoint on loopback without permission: %d %q", code, errOut.String())
	}
	if code := runCmd("endpoints", "add", "https://203.0.113.5/hooks", "--events", "execution.completed"); code != exitOK ||
		!strings.Contains(out.String(), "whsec_") {
		t.Fatalf("endpoints add: %d %q %q", code, out.String(), errOut.String())
	}
	if code := runCmd("endpoints", "disable", "wep_nope"); code != exitNotFound {
		t.Fatalf("disable unknown: %d", code)
	}
	if code := runCmd("deliveries", "ls", "--dead"); code != exitOK {
		t.Fatalf("deliveries ls: %d %q", code, errOut.String())
	}
	if code := runCmd("frobnicate"); code != exitUsage {
		t.Fatalf("unknown command: %d", code)
	}
	if code := runCmd("prune", "--older-than", "1h"); code != exitOK || !strings.Contains(out.String(), "pruned 0") {
		t.Fatalf("prune: %d %q", code, out.String())
	}
	if code := run([]string{"--config", filepath.Join(dir, "missing.toml"), "--db", db, "serve"}, &out, &errOut); code != exitFailure {
		t.Fatalf("serve with a missing explicit config: %d", code)
	}
	if code := runCmd("prune", "--older-than", "-5h"); code != exitUsage {
		t.Fatalf("negative prune age: %d", code)
	}

	// An empty file is not a database, and reading it does not make one.
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"--db", empty, "ls"}, &out, &errOut); code != exitDatabase {
		t.Fatalf("ls on an empty file: %d %q", code, errOut.String())
	}
	if fi, _ := os.Stat(empty); fi.Size() != 0 {
		t.Fatalf("ls wrote %d bytes into the empty file", fi.Size())
	}

	// Without --db, the configuration's database is the one read.
	cfg := filepath.Join(dir, "execkit.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "database = %q\n", db), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"--config", cfg, "endpoints", "ls", "--json"}, &out, &errOut); code != exitOK ||
		!strings.Contains(out.String(), "203.0.113.5") {
		t.Fatalf("endpoints ls through the configuration's database: %d %q %q", code, out.String(), errOut.String())
	}
}

// TestConfigurationFromTheEnvironment is not parallel: it sets a variable
// of the process.
func TestConfigurationFromTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "env.db")
	var out, errOut strings.Builder
	if code := run([]string{"--db", db, "migrate"}, &out, &errOut); code != exitOK {
		t.Fatalf("migrate: %d %q", code, errOut.String())
	}
	if code := run([]string{"--db", db, "endpoints", "add", "https://203.0.113.7/hooks"}, &out, &errOut); code != exitOK {
		t.Fatalf("endpoints add: %d %q", code, errOut.String())
	}
	cfg := filepath.Join(dir, "execkit.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "database = %q\n", db), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EXECKIT_CONFIG", cfg)
	out.Reset()
	if code := run([]string{"endpoints", "ls", "--json"}, &out, &errOut); code != exitOK ||
		!strings.Contains(out.String(), "203.0.113.7") {
		t.Fatalf("endpoints ls with EXECKIT_CONFIG: %d %q %q", code, out.String(), errOut.String())
	}
	t.Setenv("EXECKIT_CONFIG", filepath.Join(dir, "missing.toml"))
	if code := run([]string{"--db", db, "endpoints", "ls"}, &out, &errOut); code != exitFailure {
		t.Fatalf("a missing configuration named by EXECKIT_CONFIG: %d, want %d", code, exitFailure)
	}
}
