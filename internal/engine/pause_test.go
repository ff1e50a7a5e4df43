package engine_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
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
	entered := make(chan string, 2)
	r.ep.Block(entered)
	id, err := r.e.StartJob(ctxT(t), "p", "slow", "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A synchronous HTTP caller whose job is handed over gets 202 and
	// the job id: the job finishes on the peer.
	srv := httptest.NewServer(r.e.Handler())
	defer srv.Close()
	httpID := engine.JobID("p", "slow", "http/sync-1")
	syncDone := make(chan int, 1)
	go func() {
		code, m, _ := post(t, srv.URL+"/v1/run/p/slow", `{}`, map[string]string{"Idempotency-Key": "sync-1"})
		if m["job_id"] != httpID {
			code = -code
		}
		syncDone <- code
	}()
	<-entered
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
	if st := r.e.Status(); st.State != engine.StatePausing || st.Running != 2 {
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
	if res.err != nil || !res.rep.Forced || !slices.Equal(res.rep.HandedOver, slices.Sorted(slices.Values([]string{id, httpID}))) || len(res.rep.Waited) != 0 || res.rep.Took != 2*time.Second {
		t.Fatalf("report %+v, %v", res.rep, res.err)
	}
	if code := <-syncDone; code != http.StatusAccepted {
		t.Fatalf("synchronous caller of a handed-over job got %d", code)
	}
	if st := r.e.Status(); st.State != engine.StateStopped || st.Running != 0 {
		t.Fatalf("status after pause: %+v", st)
	}
	// The peer (here: a new engine on the same store) resumes it.
	r.ep.Release()
	e2 := r.newEngine(r.store, func(o *engine.Options) { o.Node = "b" })
	r.start(e2)
	for _, jid := range []string{id, httpID} {
		j := r.wait(e2, jid)
		if j.Status != engine.StatusCompleted || j.Resumptions != 1 || j.Node != "b" {
			t.Fatalf("resumed job: %+v", j)
		}
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
	events := make(chan api.Event, 16)
	r := newRig(t, clk, func(o *engine.Options) { o.Events = func(e api.Event) { events <- e } })
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
	for ev := range events {
		if strings.Contains(ev.Text, "runtime pausing: 1 jobs in flight, force-stop-after unset") {
			break
		}
	}
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
	for ev := range events {
		// The status event records what was waited for and handed over.
		if strings.HasPrefix(ev.Text, "runtime paused") {
			if !strings.Contains(ev.Text, "waited for 1 jobs ["+id+"], handed over 0 jobs []") {
				t.Fatalf("event %q", ev.Text)
			}
			break
		}
	}
	j, _ := r.e.Job(id)
	if j.Status != engine.StatusCompleted {
		t.Fatalf("job %+v", j)
	}
}

// Many jobs handed over mid-way (some running, some still queued for a
// slot) all complete on the next engine; no job restarts from the
// beginning and every effect happens once.
func TestHandoverUnderLoad(t *testing.T) {
	const jobs = 200
	r := newRig(t, clock.Real(), func(o *engine.Options) { o.MaxConcurrentJobs = 16 })
	r.start(r.e)
	r.deploy(r.e, `project: p
connections: {t: {kind: test}}
orchestrations:
  - name: five
    steps:
      - {id: s1, call: {connection: t, operation: do}}
      - {id: s2, call: {connection: t, operation: do}}
      - {id: s3, call: {connection: t, operation: sleep}}
      - {id: s4, call: {connection: t, operation: do}}
      - {id: s5, call: {connection: t, operation: do}}
`)
	entered := make(chan string, jobs)
	r.ep.Block(entered)
	var ids []string
	for i := 0; i < jobs; i++ {
		id, err := r.e.StartJob(ctxT(t), "p", "five", fmt.Sprint(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for i := 0; i < 16; i++ { // every slot is blocked in s3
		<-entered
	}
	if err := r.e.Stop(); err != nil {
		t.Fatal(err)
	}
	r.ep.Release()
	e2 := r.newEngine(r.store, func(o *engine.Options) { o.Node = "b"; o.MaxConcurrentJobs = 16 })
	r.start(e2)
	for _, id := range ids {
		if j := r.wait(e2, id); j.Status != engine.StatusCompleted {
			t.Fatalf("%s: %+v", id, j)
		}
	}
	eff := r.ep.Effects()
	if len(eff) != 5*jobs {
		t.Fatalf("%d keys with effects, want %d", len(eff), 5*jobs)
	}
	for _, id := range ids {
		for _, s := range []string{"s1", "s2", "s3", "s4", "s5"} {
			if eff[id+"/"+s] != 1 {
				t.Fatalf("%s/%s: effect applied %d times", id, s, eff[id+"/"+s])
			}
		}
		// s1 and s2 were done before the handover for the 16 running
		// jobs and not at all for the queued ones: never called twice.
		if n := r.ep.CallsFor(id + "/s1"); n != 1 {
			t.Fatalf("%s/s1 called %d times: the job restarted from the beginning", id, n)
		}
	}
}
