package engine_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/engine"
)

const slow = `project: p
connections: {t: {kind: test}}
orchestrations:
  - name: slow
    starter: {http: {mode: both}}
    steps:
      - {id: work, call: {connection: t, operation: sleep}}
      - {id: after, call: {connection: t, operation: do}}
`

// Seed 001 with force-stop-after: the pause refuses new HTTP work with 503
// and Retry-After, waits up to ForceStopAfter, then hands the running job
// over at its checkpoint; the next engine resumes it and it completes with
// each effect once.
func TestPauseForceStopHandsOver(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, clk, func(o *engine.Options) { o.ForceStopAfter = 2 * time.Second; o.RetryAfter = 3 * time.Second })
	r.start(r.e)
	r.deploy(r.e, slow)
	entered := make(chan string, 1)
	r.ep.Block(entered)
	id, err := r.e.StartJob(ctxT(t), "p", "slow", "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	type result struct {
		rep engine.PauseReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := r.e.Pause(context.Background())
		done <- result{rep, err}
	}()
	if err := clk.WaitForTimers(ctxT(t), 1); err != nil { // the force-stop timer
		t.Fatal(err)
	}
	if st := r.e.Status(); st.State != engine.StatePausing || st.Running != 1 {
		t.Fatalf("status while pausing: %+v", st)
	}
	w := httptest.NewRecorder()
	r.e.Handler().ServeHTTP(w, httptest.NewRequest("POST", "/v1/run/p/slow", nil))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "3" {
		t.Fatalf("HTTP starter while pausing: %d Retry-After=%q", w.Code, w.Header().Get("Retry-After"))
	}
	if _, err := r.e.StartJob(ctxT(t), "p", "slow", "k2", nil); err == nil {
		t.Fatal("a job started while pausing")
	}
	clk.Advance(2 * time.Second)
	res := <-done
	if res.err != nil || !res.rep.Forced || !slices.Equal(res.rep.HandedOver, []string{id}) || len(res.rep.Waited) != 0 || res.rep.Took != 2*time.Second {
		t.Fatalf("report %+v, %v", res.rep, res.err)
	}
	if st := r.e.Status(); st.State != engine.StateStopped || st.Running != 0 {
		t.Fatalf("status after pause: %+v", st)
	}
	// The peer (here: a new engine on the same store) resumes it.
	r.ep.Release()
	e2 := r.newEngine(r.store, func(o *engine.Options) { o.Node = "b" })
	r.start(e2)
	j := r.wait(e2, id)
	if j.Status != engine.StatusCompleted || j.Resumptions != 1 || j.Node != "b" {
		t.Fatalf("resumed job: %+v", j)
	}
	if eff := r.ep.Effects(); eff[id+"/work"] != 1 || eff[id+"/after"] != 1 {
		t.Fatalf("effects %v", eff)
	}
	if n := r.ep.CallsFor(id + "/work"); n != 2 {
		t.Fatalf("work called %d times, want 2 (cancelled, then repeated with its key)", n)
	}
}

// Without force-stop-after the pause waits for the job to finish.
func TestPauseWaitsIndefinitely(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, clk, nil)
	r.start(r.e)
	r.deploy(r.e, slow)
	entered := make(chan string, 1)
	r.ep.Block(entered)
	id, _ := r.e.StartJob(ctxT(t), "p", "slow", "k", nil)
	<-entered
	done := make(chan engine.PauseReport, 1)
	go func() {
		rep, _ := r.e.Pause(context.Background())
		done <- rep
	}()
	clk.Advance(time.Hour) // no deadline: nothing is forced
	select {
	case rep := <-done:
		t.Fatalf("pause returned while the job ran: %+v", rep)
	default:
	}
	r.ep.Release()
	rep := <-done
	if rep.Forced || !slices.Equal(rep.Waited, []string{id}) || len(rep.HandedOver) != 0 {
		t.Fatalf("report %+v", rep)
	}
	j, _ := r.e.Job(id)
	if j.Status != engine.StatusCompleted {
		t.Fatalf("job %+v", j)
	}
}
