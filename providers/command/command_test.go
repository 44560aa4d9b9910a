package command_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/command"
	"github.com/execkit/execkit/providers/providertest"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prog.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func exe(action, input string) execution.Execution {
	return execution.Execution{ID: execution.ExampleID(int(time.Now().UnixNano() % 1e9)), Action: action, Input: []byte(input)}
}

// finish checks until the program's run is over.
func finish(t *testing.T, p *command.Provider, e execution.Execution) (execution.Update, error) {
	t.Helper()
	u, err := p.Submit(context.Background(), e)
	for range 500 {
		if err != nil || u.Status.Terminal() {
			return u, err
		}
		time.Sleep(10 * time.Millisecond)
		u, err = p.Check(context.Background(), e)
	}
	t.Fatal("the program did not finish")
	return u, err
}

func TestConformance(t *testing.T) {
	t.Parallel()
	ok := script(t, `cat >/dev/null; echo '{"serverId":"srv_1"}'`)
	bad := script(t, `echo "no capacity in fsn1" >&2; exit 3`)
	providertest.Run(t, providertest.Harness{
		New: func(t *testing.T) execution.Provider {
			p, err := command.New(map[string]command.Program{
				"servers.provision": {Path: ok}, "servers.fail": {Path: bad}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			return p
		},
		Succeeds:  execution.Execution{Action: "servers.provision", Input: []byte(`{}`)},
		Fails:     execution.Execution{Action: "servers.fail", Input: []byte(`{}`)},
		Wait:      func(time.Duration) { time.Sleep(10 * time.Millisecond) },
		MaxChecks: 500,
	})
}

func TestInputGoesToStdinAndIdToTheEnvironment(t *testing.T) {
	t.Parallel()
	// The program echoes its input back inside an object with its id and
	// its argument count: input never reaches the argument list.
	prog := script(t, `printf '{"id":"%s","args":%d,"input":%s}' "$EXECKIT_EXECUTION_ID" "$#" "$(cat)"`)
	p, err := command.New(map[string]command.Program{"a.b": {Path: prog, Args: []string{"--fixed"}}})
	if err != nil {
		t.Fatal(err)
	}
	e := exe("a.b", `{"name":"x; rm -rf / $(reboot) `+"`id`"+`"}`)
	u, err := finish(t, p, e)
	want := `{"id":"` + e.ID + `","args":1,"input":{"name":"x; rm -rf / $(reboot) ` + "`id`" + `"}}`
	if err != nil || u.Status != fsm.Completed || string(u.Output) != want {
		t.Fatalf("got %+v, %v\nwant output %s", u, err, want)
	}
}

func TestFailuresTimeoutsAndBadOutput(t *testing.T) {
	t.Parallel()
	noisy := script(t, `i=0; while [ $i -lt 400 ]; do echo "line $i of a long complaint" >&2; i=$((i+1)); done; exit 7`)
	slow := script(t, `sleep 30`)
	array := script(t, `echo '[1,2]'`)
	p, err := command.New(map[string]command.Program{
		"noisy.job": {Path: noisy},
		"slow.job":  {Path: slow, Timeout: 100 * time.Millisecond},
		"array.job": {Path: array},
		"gone.job":  {Path: filepath.Join(t.TempDir(), "missing")},
	})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := finish(t, p, exe("noisy.job", `{}`))
	if u.Status != fsm.Failed || u.Error.Code != "exit_status_7" || len(u.Error.Message) > command.MaxStderrTail ||
		!strings.HasSuffix(u.Error.Message, "line 399 of a long complaint") {
		t.Fatalf("noisy: %+v", u.Error)
	}
	start := time.Now()
	u, _ = finish(t, p, exe("slow.job", `{}`))
	if u.Status != fsm.Failed || u.Error.Code != command.CodeTimeout || time.Since(start) > 10*time.Second {
		t.Fatalf("slow: %+v after %s", u.Error, time.Since(start))
	}
	if u, _ = finish(t, p, exe("array.job", `{}`)); u.Status != fsm.Failed || u.Error.Code != command.CodeBadOutput {
		t.Fatalf("array: %+v", u)
	}
	_, err = finish(t, p, exe("gone.job", `{}`))
	var perm *execution.PermanentError
	if !errors.As(err, &perm) || perm.Code != command.CodeStart {
		t.Fatalf("missing program: %v", err)
	}
}

func TestAfterARestart(t *testing.T) {
	t.Parallel()
	ok := script(t, `echo '{}'`)
	fail, _ := command.New(map[string]command.Program{"a.b": {Path: ok}})
	again, _ := command.New(map[string]command.Program{"a.b": {Path: ok, Resubmit: true}})
	t.Cleanup(again.Close)
	e := exe("a.b", `{}`)
	// Neither provider started e: as after a restart.
	_, err := fail.Check(context.Background(), e)
	var perm *execution.PermanentError
	if !errors.As(err, &perm) || perm.Code != command.CodeProcessLost {
		t.Fatalf("lost process: %v", err)
	}
	if u, err := again.Check(context.Background(), e); err != nil || u.Status != fsm.Running {
		t.Fatalf("resubmitted: %+v, %v", u, err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	if _, err := command.New(map[string]command.Program{"a.b": {}}); err == nil {
		t.Fatal("a program without a path was accepted")
	}
}
