package engine_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/engine"
	"github.com/tandem-ha/tandem/internal/orch"
)

// A connector starter acknowledges a trigger only after its job is
// committed; a trigger delivered twice starts one job.
func TestConnectorStarter(t *testing.T) {
	r := newRig(t, clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), nil)
	r.start(r.e)
	r.deploy(r.e, `project: q
connections: {t: {kind: test}}
orchestrations:
  - name: consume
    starter: {connector: {connection: t, operation: subscribe}}
    steps:
      - {id: handle, call: {connection: t, operation: do, params: {order: "order"}}}
`)
	r.ep.Deliver(connectors.Trigger{Key: "m1", Input: map[string]any{"order": 1}})
	r.ep.Deliver(connectors.Trigger{Key: "m2", Input: map[string]any{"order": 2}})
	r.ep.Deliver(connectors.Trigger{Key: "m1", Input: map[string]any{"order": 1}}) // redelivered
	ids := []string{engine.JobID("q", "consume", "connector/m1"), engine.JobID("q", "consume", "connector/m2")}
	// The starter acks each trigger after StartFunc returned, so once all
	// three are acked both jobs exist.
	if err := r.ep.WaitAcked(ctxT(t), 3); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if j := r.wait(r.e, id); j.Status != engine.StatusCompleted {
			t.Fatalf("%s: %+v", id, j)
		}
	}
	if !slices.Equal(r.ep.Acked(), []string{"m1", "m2", "m1"}) {
		t.Fatalf("acked %v", r.ep.Acked())
	}
	if jobs, _ := r.e.Jobs("", "q"); len(jobs) != 2 {
		t.Fatalf("%d jobs, want 2", len(jobs))
	}
}

// A starter its connection refuses (here an unknown operation) refuses
// the deployment, naming the orchestration; nothing is stored.
func TestDeployRefusesBadConnectorStarter(t *testing.T) {
	r := newRig(t, clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), nil)
	r.start(r.e)
	_, err := r.e.Deploy(ctxT(t), map[string]string{"p.yaml": `project: q
connections: {t: {kind: test}}
orchestrations:
  - name: consume
    starter: {connector: {connection: t, operation: consume}}
    steps:
      - {id: a, assign: {x: "1"}}
`})
	if !errors.Is(err, orch.ErrInvalid) || !errors.Is(err, connectors.ErrUnknownOperation) ||
		!strings.Contains(err.Error(), "p.yaml:4: orchestration consume: starter.connector:") || !strings.Contains(err.Error(), `"consume"`) {
		t.Fatalf("Deploy = %v", err)
	}
	if ps, err := r.e.Projects(); err != nil || len(ps) != 0 {
		t.Fatalf("projects after a refused deploy: %v %v", ps, err)
	}
	// A param the starter does not take (the test connector's subscribe
	// takes none) is refused by name too, as the real connectors do.
	_, err = r.e.Deploy(ctxT(t), map[string]string{"p.yaml": `project: q
connections: {t: {kind: test}}
orchestrations:
  - name: consume
    starter: {connector: {connection: t, operation: subscribe, params: {batch: 4}}}
    steps:
      - {id: a, assign: {x: "1"}}
`})
	if !errors.Is(err, orch.ErrInvalid) || !strings.Contains(err.Error(), "orchestration consume: starter.connector:") ||
		!strings.Contains(err.Error(), "batch") || !strings.Contains(err.Error(), "unknown (subscribe takes no params)") {
		t.Fatalf("Deploy with an unknown starter param = %v", err)
	}
}

// A stored version whose starter the connection now refuses for good
// (Permanent) is reported once and not retried every backoff; the rest of
// the runtime runs.
func TestPermanentStarterRefusalIsReportedOnce(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var mu sync.Mutex
	var events []string
	recordEvents := func(o *engine.Options) {
		o.Events = func(e api.Event) { mu.Lock(); events = append(events, e.Text); mu.Unlock() }
	}
	r := newRig(t, clk, recordEvents)
	r.start(r.e)
	r.deploy(r.e, `project: q
connections: {t: {kind: test}}
orchestrations:
  - name: consume
    starter: {connector: {connection: t, operation: subscribe}}
    steps:
      - {id: a, assign: {x: "1"}}
`)
	if err := r.e.Stop(); err != nil {
		t.Fatal(err)
	}
	r.ep.RefuseStarters(connectors.Permanent(errors.New("test: starter param gone")))
	calls := r.ep.StarterCalls()
	e2 := r.newEngine(r.store, recordEvents)
	r.start(e2)
	reported := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, e := range events {
			if strings.Contains(e, "starter of q/consume cannot run") && strings.Contains(e, "test: starter param gone") {
				n++
			}
		}
		return n
	}
	for ctx := ctxT(t); reported() == 0; {
		if ctx.Err() != nil {
			t.Fatalf("no event; events: %v", events)
		}
		clock.Sleep(ctx, clock.Real(), 5*time.Millisecond)
	}
	// Well past every backoff: still one call and one report.
	for i := 0; i < 10; i++ {
		clk.Advance(time.Minute)
		clock.Sleep(context.Background(), clock.Real(), 2*time.Millisecond)
	}
	if got := r.ep.StarterCalls() - calls; got != 1 || reported() != 1 {
		t.Fatalf("after a permanent refusal: %d NewStarter calls, %d reports; want 1 and 1", got, reported())
	}
}
