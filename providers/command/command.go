// Package command is an execution.Provider that runs a local program per
// action.
//
// The execution's input goes to the program's standard input as JSON; its
// id and action are in the environment as EXECKIT_EXECUTION_ID and
// EXECKIT_ACTION. No shell is involved and nothing from the input reaches
// the argument list. Exit status 0 with a JSON object on standard output
// completes the execution with that output; any other exit fails it with
// the tail of standard error; running past the timeout kills the program
// and fails the execution.
package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
)

// Program is what runs for one action.
type Program struct {
	// Path is the executable; Args follow it. Both come from
	// configuration, never from an execution's input.
	Path string
	Args []string
	// Env is added to the program's environment, as KEY=value.
	Env []string
	// Dir is the working directory; empty means the host's.
	Dir string
	// Timeout kills the program and fails the execution. Zero means 10
	// minutes.
	Timeout time.Duration
	// Resubmit, after a restart that lost the process, runs the program
	// again; otherwise the execution fails with code "process_lost".
	Resubmit bool
}

// Error codes the provider sets.
const (
	CodeExit        = "exit_status"
	CodeTimeout     = "timeout"
	CodeBadOutput   = "bad_output"
	CodeProcessLost = "process_lost"
	CodeStart       = "start_failed"
)

// Output caps: standard output is read up to MaxStdout; the error message
// keeps the last MaxStderrTail bytes of standard error.
const (
	MaxStdout     = 1 << 20
	MaxStderrTail = 1500
)

// Provider runs programs. It is safe for concurrent use.
type Provider struct {
	programs map[string]Program
	poll     time.Duration

	mu   sync.Mutex
	runs map[string]*run
}

// run is one program run.
type run struct {
	done   chan struct{}
	update execution.Update
	err    error
	cancel context.CancelFunc
}

var (
	_ execution.Provider = (*Provider)(nil)
	_ execution.Canceler = (*Provider)(nil)
)

// New returns a provider running programs, keyed by action. Every program
// must name a Path.
func New(programs map[string]Program) (*Provider, error) {
	for action, p := range programs {
		if p.Path == "" {
			return nil, fmt.Errorf("command provider: action %s: no program path", action)
		}
		if p.Timeout < 0 {
			return nil, fmt.Errorf("command provider: action %s: negative timeout", action)
		}
	}
	return &Provider{programs: programs, poll: 200 * time.Millisecond, runs: map[string]*run{}}, nil
}

// Name returns "command".
func (p *Provider) Name() string { return "command" }

// Submit starts the program, unless it already runs for this execution.
func (p *Provider) Submit(ctx context.Context, e execution.Execution) (execution.Update, error) {
	prog, ok := p.programs[e.Action]
	if !ok {
		return execution.Update{}, execution.Permanent("unknown_action", "no program for "+e.Action)
	}
	p.mu.Lock()
	r := p.runs[e.ID]
	if r == nil {
		r = p.start(prog, e)
		p.runs[e.ID] = r
	}
	p.mu.Unlock()
	return p.report(r)
}

// Check reports on the program. A program this provider never started
// (the host restarted) is started again or failed, as configured.
func (p *Provider) Check(ctx context.Context, e execution.Execution) (execution.Update, error) {
	p.mu.Lock()
	r := p.runs[e.ID]
	p.mu.Unlock()
	if r != nil {
		return p.report(r)
	}
	if prog, ok := p.programs[e.Action]; ok && prog.Resubmit {
		return p.Submit(ctx, e)
	}
	return execution.Update{}, execution.Permanent(CodeProcessLost, "the program's process was lost, most likely in a restart")
}

// Cancel kills the program and every process it started. A program that
// already finished cannot be canceled: the error wraps
// execution.ErrInvalidTransition, and its result stands.
func (p *Provider) Cancel(ctx context.Context, e execution.Execution) error {
	p.mu.Lock()
	r := p.runs[e.ID]
	p.mu.Unlock()
	if r == nil {
		return nil
	}
	select {
	case <-r.done:
		return fmt.Errorf("command: %w: the program already finished", execution.ErrInvalidTransition)
	default:
	}
	r.cancel()
	return nil
}

// Close kills every program still running. Their executions are resubmitted
// or failed after a restart, as configured.
func (p *Provider) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.runs {
		r.cancel()
	}
}

func (p *Provider) report(r *run) (execution.Update, error) {
	select {
	case <-r.done:
		return r.update, r.err
	default:
		return execution.Update{Status: fsm.Running, CheckAfter: p.poll}, nil
	}
}

// start runs the program in the background.
func (p *Provider) start(prog Program, e execution.Execution) *run {
	timeout := prog.Timeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	r := &run{done: make(chan struct{}), cancel: cancel}

	cmd := exec.CommandContext(ctx, prog.Path, prog.Args...)
	cmd.Dir = prog.Dir
	cmd.Env = append(cmd.Environ(), prog.Env...)
	cmd.Env = append(cmd.Env, "EXECKIT_EXECUTION_ID="+e.ID, "EXECKIT_ACTION="+e.Action)
	cmd.Stdin = bytes.NewReader(e.Input)
	var stdout capped
	stdout.max = MaxStdout
	var stderr tail
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	inGroup(cmd) // a timeout or cancel kills the program's children too

	if err := cmd.Start(); err != nil {
		cancel()
		r.err = execution.Permanent(CodeStart, fmt.Sprintf("start %s: %v", prog.Path, err))
		close(r.done)
		return r
	}
	go func() {
		defer close(r.done)
		defer cancel()
		err := cmd.Wait()
		killGroup(cmd) // children left behind do not outlive the run
		r.update, r.err = result(ctx, err, &stdout, &stderr, timeout)
	}()
	return r
}

// result turns a finished run into an update or a permanent error.
func result(ctx context.Context, waitErr error, stdout *capped, stderr *tail, timeout time.Duration) (execution.Update, error) {
	var exit *exec.ExitError
	if errors.Is(waitErr, exec.ErrWaitDelay) {
		waitErr = nil // the program exited 0; a child it left kept its output open
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return execution.Update{Status: fsm.Failed, Error: &execution.Error{Code: CodeTimeout,
			Message: fmt.Sprintf("killed after %s", timeout)}}, nil
	case errors.Is(ctx.Err(), context.Canceled):
		return execution.Update{Status: fsm.Canceled}, nil
	case errors.As(waitErr, &exit):
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = "no output on standard error"
		}
		return execution.Update{Status: fsm.Failed, Error: &execution.Error{
			Code: fmt.Sprintf("%s_%d", CodeExit, exit.ExitCode()), Message: msg}}, nil
	case waitErr != nil:
		return execution.Update{Status: fsm.Failed, Error: &execution.Error{Code: CodeStart, Message: waitErr.Error()}}, nil
	case stdout.over:
		return execution.Update{Status: fsm.Failed, Error: &execution.Error{Code: CodeBadOutput,
			Message: fmt.Sprintf("standard output exceeds %d bytes", MaxStdout)}}, nil
	}
	out := bytes.TrimSpace(stdout.buf.Bytes())
	if len(out) == 0 {
		out = []byte("{}")
	}
	if !utf8.Valid(out) || !json.Valid(out) || out[0] != '{' {
		return execution.Update{Status: fsm.Failed, Error: &execution.Error{Code: CodeBadOutput,
			Message: "standard output is not one JSON object"}}, nil
	}
	return execution.Update{Status: fsm.Completed, Output: out}, nil
}

// capped keeps at most max bytes and notes whether more came. It has only
// Write, so that every copy goes through the cap.
type capped struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	n := len(p)
	if room := c.max - c.buf.Len(); n > room {
		c.over = true
		p = p[:max(room, 0)]
	}
	c.buf.Write(p)
	return n, nil // the rest is dropped, not refused
}

// tail keeps the last MaxStderrTail bytes written.
type tail struct {
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > MaxStderrTail {
		t.buf = t.buf[len(t.buf)-MaxStderrTail:]
	}
	return len(p), nil
}

func (t *tail) String() string { return strings.ToValidUTF8(string(t.buf), "?") }
