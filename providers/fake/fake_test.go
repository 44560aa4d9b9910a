package fake_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/providers/fake"
	"github.com/execkit/execkit/providers/providertest"
)

func TestTimelineAnswersFromTheClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := fake.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	p := fake.New(clock)
	p.Script("a.b", fake.Script{Steps: []fake.Step{
		fake.Accept(time.Second),
		fake.Progress(2*time.Second, `{"p":1}`),
		fake.Complete(5*time.Second, `{"done":true}`),
	}})
	e := execution.Execution{ID: "exe_1", Action: "a.b"}

	u, err := p.Submit(ctx, e)
	if err != nil || u.Status != "" || u.CheckAfter != time.Second || u.ExternalRef != "fake-1" {
		t.Fatalf("at submit: %+v, %v", u, err)
	}
	clock.Advance(2500 * time.Millisecond)
	u, err = p.Check(ctx, e)
	if err != nil || u.Status != fsm.Running || string(u.Progress) != `{"p":1}` || u.CheckAfter != 2500*time.Millisecond {
		t.Fatalf("at 2.5s: %+v, %v", u, err)
	}
	// A second submission does not restart the timeline.
	if u, _ := p.Submit(ctx, e); u.Status != fsm.Running || u.ExternalRef != "fake-1" {
		t.Fatalf("resubmit: %+v", u)
	}
	clock.Advance(10 * time.Second)
	u, _ = p.Check(ctx, e)
	if u.Status != fsm.Completed || string(u.Output) != `{"done":true}` || u.CheckAfter != 0 {
		t.Fatalf("at 12.5s: %+v", u)
	}
	if n := p.CallsFor("exe_1", fake.MethodSubmit); n != 2 {
		t.Fatalf("%d submits recorded", n)
	}
	if n := len(p.Calls()); n != 4 {
		t.Fatalf("%d calls recorded", n)
	}
}

func TestInjectedErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := fake.New(fake.NewClock(time.Unix(0, 0)))
	p.Script("flaky.job", fake.Script{TransientErrors: 2, Steps: []fake.Step{fake.Complete(0, `{}`)}})
	p.Script("bad.job", fake.Script{Reject: &execution.Error{Code: "nope", Message: "rejected"}})

	flaky := execution.Execution{ID: "exe_f", Action: "flaky.job"}
	for i := range 2 {
		if _, err := p.Submit(ctx, flaky); !errors.Is(err, fake.ErrTransient) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if u, err := p.Submit(ctx, flaky); err != nil || u.Status != fsm.Completed {
		t.Fatalf("third call: %+v, %v", u, err)
	}

	var perm *execution.PermanentError
	if _, err := p.Submit(ctx, execution.Execution{ID: "exe_b", Action: "bad.job"}); !errors.As(err, &perm) || perm.Code != "nope" {
		t.Fatalf("reject: %v", err)
	}
	if _, err := p.Check(ctx, execution.Execution{ID: "exe_x", Action: "bad.job"}); !errors.As(err, &perm) || perm.Code != "unknown_execution" {
		t.Fatalf("check of an unknown execution: %v", err)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := fake.New(nil)
	p.Script("yes.job", fake.Script{Cancelable: true, Steps: []fake.Step{fake.Start(0)}})
	p.Script("no.job", fake.Script{Steps: []fake.Step{fake.Start(0)}})

	yes := execution.Execution{ID: "exe_y", Action: "yes.job"}
	if _, err := p.Submit(ctx, yes); err != nil {
		t.Fatal(err)
	}
	if err := p.Cancel(ctx, yes); err != nil {
		t.Fatal(err)
	}
	if u, _ := p.Check(ctx, yes); u.Status != fsm.Canceled {
		t.Fatalf("after cancel: %+v", u)
	}
	if err := p.Cancel(ctx, execution.Execution{ID: "exe_n", Action: "no.job"}); err == nil {
		t.Fatal("cancel of a non-cancelable script succeeded")
	}
}

func TestConformance(t *testing.T) {
	clock := fake.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	providertest.Run(t, providertest.Harness{
		New: func(*testing.T) execution.Provider {
			p := fake.New(clock)
			p.Script("servers.provision", fake.Script{Steps: []fake.Step{
				fake.Accept(time.Second), fake.Start(2 * time.Second), fake.Complete(3*time.Second, `{"ip":"203.0.113.1"}`)}})
			p.Script("companies.form", fake.Script{Steps: []fake.Step{
				fake.Accept(time.Second), fake.Refund(2*time.Second, "rejected", "no")}})
			return p
		},
		Succeeds: execution.Execution{Action: "servers.provision", Input: []byte(`{}`)},
		Fails:    execution.Execution{Action: "companies.form", Input: []byte(`{}`)},
		Wait:     clock.Advance,
	})
}
