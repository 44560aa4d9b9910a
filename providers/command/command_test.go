package command_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
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

var exeCount atomic.Int32

func exe(action, input string) execution.Execution {
	return execution.Execution{ID: execution.ExampleID(int(exeCount.Add(1))), Action: action, Input: []byte(input)}
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

func TestOutputCapChildrenAndLateCancel(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	big := script(t, `head -c 2000000 /dev/zero | tr '\0' a | sed 's/^/{"x":"/; s/$/"}/'`)
	orphan := script(t, `sleep 30 & echo $! > `+pidFile+`; echo '{"ok":1}'`)
	hang := script(t, `sleep 30 & echo $! > `+pidFile+`.2; wait`)
	quick := script(t, `echo '{"ok":true}'`)
	p, err := command.New(map[string]command.Program{
		"big.job": {Path: big}, "orphan.job": {Path: orphan}, "hang.job": {Path: hang, Timeout: 200 * time.Millisecond},
		"quick.job": {Path: quick},
	})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := finish(t, p, exe("big.job", `{}`)); u.Status != fsm.Failed || u.Error.Code != command.CodeBadOutput || len(u.Output) != 0 {
		t.Fatalf("2 MB of output: %s %+v (%d bytes), %v", u.Status, u.Error, len(u.Output), err)
	}
	if u, err := finish(t, p, exe("orphan.job", `{}`)); err != nil || u.Status != fsm.Completed || string(u.Output) != `{"ok":1}` {
		t.Fatalf("a background child: %+v, %v", u, err)
	}
	if u, _ := finish(t, p, exe("hang.job", `{}`)); u.Status != fsm.Failed || u.Error.Code != command.CodeTimeout {
		t.Fatalf("timeout: %+v", u)
	}
	for _, f := range []string{pidFile, pidFile + ".2"} {
		if alive(t, f) {
			t.Fatalf("the child in %s outlived its program", f)
		}
	}
	e := exe("quick.job", `{}`)
	if u, _ := finish(t, p, e); u.Status != fsm.Completed {
		t.Fatalf("quick: %+v", u)
	}
	if err := p.Cancel(context.Background(), e); !errors.Is(err, execution.ErrInvalidTransition) {
		t.Fatalf("cancel after the end: %v", err)
	}
}

// alive reports whether the process whose id is in file still runs.
func alive(t *testing.T, file string) bool {
	t.Helper()
	var b []byte
	for range 100 {
		var err error
		if b, err = os.ReadFile(file); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("child pid in %s: %q", file, b)
	}
	for range 50 { // the kill is asynchronous
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || syscall.Kill(pid, 0) != nil {
			return false
		}
		// A killed child whose parent is gone may wait as a zombie for a
		// reaper; it runs no more.
		if fields := strings.Fields(string(stat)); len(fields) > 2 && fields[2] == "Z" {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
