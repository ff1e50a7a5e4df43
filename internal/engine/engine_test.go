package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/engine"
	"github.com/tandem-ha/tandem/internal/engine/testconn"
)

const flow = `project: p
connections:
  t: {kind: test}
orchestrations:
  - name: flow
    vars: {total: 0}
    output: "{'total': total, 'caught': caught ?? 'none', 'first': r1.n}"
    steps:
      - id: first
        call: {connection: t, operation: do, params: {n: "input + 1"}, result: r1, retry: {backoff: 1ms, max-backoff: 1ms}}
      - id: each
        for-each: "[10, 20]"
        as: v
        do:
          - id: send
            call: {connection: t, operation: do, params: {v: "v"}, result: sent}
          - id: add
            assign: {total: "total + sent.v"}
      - id: guarded
        try:
          - id: risky
            call: {connection: t, operation: do, params: {x: "'risky'"}, retry: {max-attempts: 1}}
        catch:
          - id: note
            assign: {caught: "error.step"}
      - id: big
        if: "total > 25"
        then:
          - id: final
            call: {connection: t, operation: do, params: {total: "total"}}
        else:
          - id: stop
            terminate: {status: failed, reason: "'small total'"}
`

func TestRunFlowKeysAndOutput(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	r.deploy(r.e, flow)
	id, err := r.e.StartJob(ctxT(t), "p", "flow", "k1", map[string]any{"input": 41})
	if err != nil {
		t.Fatal(err)
	}
	j := r.wait(r.e, id)
	if j.Status != engine.StatusCompleted {
		t.Fatalf("status %s (%s)", j.Status, j.Reason)
	}
	out := j.Output.(map[string]any)
	if out["total"] != 30 || out["caught"] != "none" || out["first"] != 42 {
		t.Fatalf("output %v", out)
	}
	var keys []string
	for _, c := range r.ep.Calls() {
		keys = append(keys, c.Key)
	}
	want := []string{id + "/first", id + "/each#0/send", id + "/each#1/send", id + "/risky", id + "/final"}
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Fatalf("keys\n%v\nwant\n%v", keys, want)
	}
	// 5 calls x (before + after) + final commit.
	if j.Checkpoints != 11 {
		t.Fatalf("checkpoints %d, want 11", j.Checkpoints)
	}
}

// I6: the keys derive from the trigger, not from time or attempts: the
// same trigger on a fresh store and engine gives the same keys.
func TestDeterministicIdempotencyKeys(t *testing.T) {
	run := func() []string {
		r := newRig(t, clock.Real(), nil)
		r.start(r.e)
		r.deploy(r.e, flow)
		r.ep.FailNext("", 1)
		id, err := r.e.StartJob(ctxT(t), "p", "flow", "same-trigger", map[string]any{"input": 1})
		if err != nil {
			t.Fatal(err)
		}
		r.wait(r.e, id)
		var keys []string
		for _, c := range r.ep.Calls() {
			keys = append(keys, c.Key)
		}
		return keys
	}
	a, b := run(), run()
	if strings.Join(a, ",") != strings.Join(b, ",") || len(a) != 6 {
		t.Fatalf("keys differ or wrong count:\n%v\n%v", a, b)
	}
}

func TestTriggerDeliveredTwiceStartsOneJob(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	r.deploy(r.e, flow)
	id1, err := r.e.StartJob(ctxT(t), "p", "flow", "row-7", map[string]any{"input": 1})
	if err != nil {
		t.Fatal(err)
	}
	r.wait(r.e, id1)
	id2, err := r.e.StartJob(ctxT(t), "p", "flow", "row-7", map[string]any{"input": 1})
	if err != nil || id2 != id1 {
		t.Fatalf("second delivery: %s %v (first %s)", id2, err, id1)
	}
	jobs, _ := r.e.Jobs("", "p")
	if len(jobs) != 1 || r.ep.CallsFor(id1+"/first") != 1 {
		t.Fatalf("%d jobs, %d calls", len(jobs), r.ep.CallsFor(id1+"/first"))
	}
}

const retrying = `project: p
connections: {t: {kind: test}}
orchestrations:
  - name: r
    steps:
      - id: c
        call: {connection: t, operation: do, retry: {max-attempts: 3, backoff: 1s, max-backoff: 10s}}
`

// The retry policy on the manual clock: attempts wait 1s then 2s, the job
// shows retry-wait meanwhile, and gives up after max-attempts.
func TestRetryPolicy(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, clk, nil)
	r.start(r.e)
	r.deploy(r.e, retrying)
	for _, tc := range []struct {
		fails  int
		status string
	}{{2, engine.StatusCompleted}, {3, engine.StatusFailed}} {
		trigger := fmt.Sprint("t", tc.fails)
		id := engine.JobID("p", "r", trigger)
		r.ep.FailNext(id+"/c", tc.fails)
		if _, err := r.e.StartJob(ctxT(t), "p", "r", trigger, nil); err != nil {
			t.Fatal(err)
		}
		for _, d := range []time.Duration{time.Second, 2 * time.Second}[:min(tc.fails, 2)] {
			if err := clk.WaitForTimers(ctxT(t), 1); err != nil {
				t.Fatal(err)
			}
			j, _ := r.e.Job(id)
			if j.Status != engine.StatusRetryWait {
				t.Fatalf("status %s while waiting to retry", j.Status)
			}
			clk.Advance(d - time.Millisecond)
			if clk.Pending() != 1 {
				t.Fatalf("retry fired before its backoff %s", d)
			}
			clk.Advance(time.Millisecond)
		}
		j := r.wait(r.e, id)
		if j.Status != tc.status || r.ep.CallsFor(id+"/c") != min(tc.fails+1, 3) {
			t.Fatalf("fails=%d: status %s (%s), %d calls", tc.fails, j.Status, j.Reason, r.ep.CallsFor(id+"/c"))
		}
		if tc.status == engine.StatusFailed && !strings.Contains(j.Reason, "after 3 attempts") {
			t.Fatalf("reason %q", j.Reason)
		}
	}
}

func TestPermanentErrorIsCaughtWithoutRetry(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	r.deploy(r.e, flow)
	id := engine.JobID("p", "flow", "x")
	r.ep.FailPermanently(id + "/risky")
	if _, err := r.e.StartJob(ctxT(t), "p", "flow", "x", map[string]any{"input": 0}); err != nil {
		t.Fatal(err)
	}
	j := r.wait(r.e, id)
	if j.Status != engine.StatusCompleted || j.Output.(map[string]any)["caught"] != "risky" || r.ep.CallsFor(id+"/risky") != 1 {
		t.Fatalf("status %s output %v calls %d", j.Status, j.Output, r.ep.CallsFor(id+"/risky"))
	}
}

func TestControlFlowFailures(t *testing.T) {
	src := `project: p
orchestrations:
  - name: spin
    vars: {n: 0}
    steps:
      - id: w
        while: "true"
        max-iterations: 5
        do: [{id: inc, assign: {n: "n + 1"}}]
  - name: badloop
    steps: [{id: f, for-each: "42", do: [{id: x, assign: {y: "1"}}]}]
  - name: term
    steps:
      - {id: a, assign: {x: "1"}}
      - {id: t, terminate: {status: failed, reason: "'x is ' + string(x)"}}
      - {id: never, assign: {x: "2"}}
`
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	r.deploy(r.e, src)
	for name, want := range map[string]string{"spin": "max-iterations (5)", "badloop": "not a list", "term": "terminated at t: x is 1"} {
		id, err := r.e.StartJob(ctxT(t), "p", name, "k", nil)
		if err != nil {
			t.Fatal(err)
		}
		j := r.wait(r.e, id)
		if j.Status != engine.StatusFailed || !strings.Contains(j.Reason, want) {
			t.Errorf("%s: status %s reason %q, want failed with %q", name, j.Status, j.Reason, want)
		}
	}
}

func TestCallTimeout(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, clk, nil)
	r.start(r.e)
	r.deploy(r.e, `project: p
connections: {t: {kind: test}}
orchestrations:
  - name: slow
    steps:
      - id: s
        call: {connection: t, operation: sleep, timeout: 3s, retry: {max-attempts: 1}}
`)
	r.ep.Block(nil)
	defer r.ep.Release()
	id, err := r.e.StartJob(ctxT(t), "p", "slow", "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := clk.WaitForTimers(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(3 * time.Second)
	j := r.wait(r.e, id)
	if j.Status != engine.StatusFailed || !strings.Contains(j.Reason, "timed out after 3s") {
		t.Fatalf("status %s reason %q", j.Status, j.Reason)
	}
}

// Start resumes unfinished jobs with a resumption count, using the
// definition version they started with even after a redeploy.
func TestResumeKeepsDefinitionVersion(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	src := indexFlow // a sleep call "one", then a call "two"
	r.deploy(r.e, src)
	entered := make(chan string, 1)
	r.ep.Block(entered)
	id, _ := r.e.StartJob(ctxT(t), "p", "s", "k", nil)
	<-entered
	r.deploy(r.e, strings.Replace(src, "id: two", "id: renamed", 1))
	if err := r.e.Stop(); err != nil {
		t.Fatal(err)
	}
	r.ep.Release()
	e2 := r.newEngine(r.store, nil)
	r.start(e2)
	j := r.wait(e2, id)
	if j.Status != engine.StatusCompleted || j.Resumptions != 1 || j.Version != 1 || r.ep.CallsFor(id+"/two") != 1 {
		t.Fatalf("%+v, calls two=%d", j, r.ep.CallsFor(id+"/two"))
	}
	if eff := r.ep.Effects()[id+"/one"]; eff != 1 {
		t.Fatalf("effect of one applied %d times", eff)
	}
}

func TestUndeployRefusedWhileJobsUnfinished(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	r.deploy(r.e, `project: p
connections: {t: {kind: test}}
orchestrations:
  - {name: s, steps: [{id: one, call: {connection: t, operation: sleep}}]}
`)
	entered := make(chan string, 1)
	r.ep.Block(entered)
	id, _ := r.e.StartJob(ctxT(t), "p", "s", "k", nil)
	<-entered
	if err := r.e.Undeploy(ctxT(t), "p"); !errors.Is(err, engine.ErrState) {
		t.Fatalf("undeploy with a running job: %v", err)
	}
	r.ep.Release()
	r.wait(r.e, id)
	if err := r.e.Undeploy(ctxT(t), "p"); err != nil {
		t.Fatal(err)
	}
	if p, _ := r.e.Projects(); len(p) != 0 {
		t.Fatalf("projects after undeploy: %v", p)
	}
	if _, err := r.e.StartJob(context.Background(), "p", "s", "k2", nil); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("start after undeploy: %v", err)
	}
}

func TestSchedules(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC))
	r := newRig(t, clk, nil)
	r.start(r.e)
	r.deploy(r.e, `project: p
orchestrations:
  - name: tick
    starter: {schedule: {every: 10s}}
    steps: [{id: a, assign: {x: "fired"}}]
`)
	for i := 0; i < 2; i++ {
		if err := clk.WaitForTimers(ctxT(t), 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(10 * time.Second)
	}
	// The schedule re-arms only after the fired job is committed and
	// launched.
	if err := clk.WaitForTimers(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	want := []string{
		engine.JobID("p", "tick", "schedule/2026-01-01T00:00:10Z"),
		engine.JobID("p", "tick", "schedule/2026-01-01T00:00:20Z"),
	}
	for _, id := range want {
		j := r.wait(r.e, id)
		if j.Status != engine.StatusCompleted {
			t.Fatalf("job %s: %+v", id, j)
		}
	}
}

func TestNextFireCron(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	r.deploy(r.e, `project: p
orchestrations:
  - {name: nightly, starter: {schedule: {cron: "30 2 * * *"}}, steps: [{id: a, assign: {x: "1"}}]}
`)
	p, _ := r.e.Projects()
	if len(p) != 1 || p[0].Orchestrations[0].Starter != "cron 30 2 * * *" {
		t.Fatalf("%+v", p)
	}
}

// A job whose project cannot be loaded at promotion (an endpoint refuses
// the connection) keeps its checkpoint and is retried, not failed.
func TestResumeWaitsForConnections(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, clk, nil)
	var down atomic.Bool
	r.reg.Register("flaky", func(name string, s connectors.Settings) (connectors.Connector, error) {
		if down.Load() {
			return nil, errors.New("connection refused")
		}
		return r.reg.Open(testconn.Kind, name, s)
	})
	r.start(r.e)
	r.deploy(r.e, `project: p
connections: {f: {kind: flaky}}
orchestrations:
  - {name: s, steps: [{id: one, call: {connection: f, operation: sleep}}]}
`)
	entered := make(chan string, 1)
	r.ep.Block(entered)
	id, _ := r.e.StartJob(ctxT(t), "p", "s", "k", nil)
	<-entered
	r.e.Stop()
	r.ep.Release()
	down.Store(true)
	e2 := r.newEngine(r.store, nil)
	r.start(e2)
	if err := clk.WaitForTimers(ctxT(t), 1); err != nil { // the job's reload backoff
		t.Fatal(err)
	}
	if j, _ := e2.Job(id); j.Status != engine.StatusRunning {
		t.Fatalf("job while its connections are down: %+v", j)
	}
	down.Store(false)
	clk.Advance(5 * time.Second)
	if j := r.wait(e2, id); j.Status != engine.StatusCompleted {
		t.Fatalf("%+v", j)
	}
}

// After a failover the latest missed interval instant is fired once (its
// key is the instant, so it cannot double a job the old active started).
func TestScheduleCatchesUpLatestInstant(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC))
	r := newRig(t, clk, nil)
	r.start(r.e)
	r.deploy(r.e, `project: p
orchestrations:
  - name: tick
    starter: {schedule: {every: 10s}}
    steps: [{id: a, assign: {x: "fired"}}]
`)
	if err := clk.WaitForTimers(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	r.e.Stop()
	clk.Set(time.Date(2026, 1, 1, 0, 0, 37, 0, time.UTC)) // down over 10s, 20s and 30s
	e2 := r.newEngine(r.store, nil)
	r.start(e2)
	if err := clk.WaitForTimers(ctxT(t), 1); err != nil { // catch-up done, next instant armed
		t.Fatal(err)
	}
	jobs, _ := e2.Jobs("", "p")
	if len(jobs) != 1 || jobs[0].ID != engine.JobID("p", "tick", "schedule/2026-01-01T00:00:30Z") {
		t.Fatalf("jobs after catch-up: %+v", jobs)
	}
	// A second promotion at the same time starts nothing new.
	e2.Stop()
	e3 := r.newEngine(r.store, nil)
	r.start(e3)
	if err := clk.WaitForTimers(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := e3.Jobs("", "p"); len(jobs) != 1 {
		t.Fatalf("%d jobs after a second promotion", len(jobs))
	}
}

func TestPurgeFinishedJobs(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, clk, nil)
	r.start(r.e)
	r.deploy(r.e, `project: p
connections: {t: {kind: test}}
orchestrations:
  - {name: ok, steps: [{id: a, assign: {x: "1"}}]}
  - {name: bad, steps: [{id: a, terminate: {status: failed}}]}
  - {name: slow, steps: [{id: a, call: {connection: t, operation: sleep}}]}
`)
	entered := make(chan string, 1)
	r.ep.Block(entered)
	defer r.ep.Release()
	var old []string
	for i := 0; i < 300; i++ {
		id, _ := r.e.StartJob(ctxT(t), "p", []string{"ok", "bad"}[i%2], fmt.Sprint(i), nil)
		old = append(old, id)
	}
	for _, id := range old {
		r.wait(r.e, id)
	}
	running, _ := r.e.StartJob(ctxT(t), "p", "slow", "s", nil)
	<-entered
	clk.Advance(time.Hour)
	recent, _ := r.e.StartJob(ctxT(t), "p", "ok", "recent", nil)
	r.wait(r.e, recent)
	n, err := r.e.Purge(ctxT(t), clk.Now().Add(-time.Minute))
	if err != nil || n != 300 {
		t.Fatalf("purged %d, %v", n, err)
	}
	jobs, _ := r.e.Jobs("", "")
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	if len(ids) != 2 || !slices.Contains(ids, running) || !slices.Contains(ids, recent) {
		t.Fatalf("left %v, want the running and the recent job", ids)
	}
}

// TestRetentionPurgesWhileRunning drives the purge loop with the manual
// clock: nothing goes before the retention, finished jobs go after it, a
// job still running never does, and Stop ends the loop.
func TestRetentionPurgesWhileRunning(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewManual(t0)
	var mu sync.Mutex
	var events []string
	r := newRig(t, clk, func(o *engine.Options) {
		o.JobRetention = time.Hour
		o.PurgeEvery = 10 * time.Minute
		o.Events = func(e api.Event) { mu.Lock(); events = append(events, e.Text); mu.Unlock() }
	})
	r.start(r.e)
	r.deploy(r.e, `project: p
connections: {t: {kind: test}}
orchestrations:
  - {name: ok, steps: [{id: a, assign: {x: "1"}}]}
  - {name: slow, steps: [{id: a, call: {connection: t, operation: sleep}}]}
`)
	// turn waits until the purge loop is back in its select, then jumps
	// the clock by d, firing its timer at most once (Advance would fire it
	// once per re-arm the loop managed on the way).
	turn := func(d time.Duration) {
		t.Helper()
		if err := clk.WaitForTimers(ctxT(t), 1); err != nil {
			t.Fatal(err)
		}
		clk.Jump(d)
		if err := clk.WaitForTimers(ctxT(t), 1); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		id, err := r.e.StartJob(ctxT(t), "p", "ok", fmt.Sprint(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		r.wait(r.e, id)
	}
	entered := make(chan string, 1)
	r.ep.Block(entered)
	defer r.ep.Release()
	running, _ := r.e.StartJob(ctxT(t), "p", "slow", "s", nil)
	<-entered

	turn(time.Minute) // first purge, one minute after Start: all too young
	turn(29 * time.Minute)
	if st := r.e.Status(); st.Purged != 0 {
		t.Fatalf("purged %d jobs before the retention", st.Purged)
	}
	recent, _ := r.e.StartJob(ctxT(t), "p", "ok", "recent", nil)
	r.wait(r.e, recent)
	turn(40 * time.Minute) // now t0+70m: the first 20 are 70 min old
	if st := r.e.Status(); st.Purged != 20 {
		t.Fatalf("purged %d jobs, want the 20 finished before the retention", st.Purged)
	}
	jobs, err := r.e.Jobs("", "")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	if len(ids) != 2 || !slices.Contains(ids, running) || !slices.Contains(ids, recent) {
		t.Fatalf("left %v, want the running and the recent job", ids)
	}
	mu.Lock()
	found := slices.ContainsFunc(events, func(s string) bool {
		return strings.HasPrefix(s, "purged 20 finished jobs last updated before 2026-01-01T00:10:00Z")
	})
	mu.Unlock()
	if !found {
		t.Fatalf("no purge event in %q", events)
	}
	r.ep.Release()
	if err := r.e.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := clk.Pending(); n != 0 {
		t.Fatalf("%d timers armed after Stop: the purge loop did not end", n)
	}
}
