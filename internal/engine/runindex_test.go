package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/engine"
	"github.com/tandem-ha/tandem/wip"
)

const indexFlow = `project: p
connections: {t: {kind: test}}
orchestrations:
  - name: s
    steps:
      - {id: one, call: {connection: t, operation: sleep}}
      - {id: two, call: {connection: t, operation: do}}
`

// handedOver starts a job of indexFlow on e, stops e while the job waits
// in its first call and returns the job's id: an unfinished job, indexed.
func (r *rig) handedOver(e *engine.Engine, key string) string {
	r.t.Helper()
	entered := make(chan string, 1)
	r.ep.Block(entered)
	id, err := e.StartJob(ctxT(r.t), "p", "s", key, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	<-entered
	if err := e.Stop(); err != nil {
		r.t.Fatal(err)
	}
	r.ep.Release()
	return id
}

// unindex makes id's job look written by a tandemd that does not keep the
// index: the record stays, its entry goes.
func unindex(t *testing.T, st engine.Store, id string) {
	t.Helper()
	if err := st.Commit(context.Background(), []engine.Op{{Key: []byte("rt/run/" + id), Delete: true}}); err != nil {
		t.Fatal(err)
	}
}

func hasKey(t *testing.T, st engine.Store, k string) bool {
	t.Helper()
	_, ok, err := st.Get([]byte(k))
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestIndexOfUnfinishedJobs: Start resumes through the index; a job
// finishing removes its entry in the same commit; a store without the
// index's mark (first start of this version, or a writer that did not
// keep it) is scanned whole and the index rebuilt, stale entries dropped.
func TestIndexOfUnfinishedJobs(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	r.deploy(r.e, indexFlow)
	id := r.handedOver(r.e, "a")
	if !hasKey(t, r.store, "rt/run/"+id) || !hasKey(t, r.store, "rt/meta/run-index") {
		t.Fatal("an unfinished job has no index entry, or Start left no mark")
	}

	// Written without the index, mark present: not resumed (the index is
	// trusted; kvtest has no terms to say otherwise).
	unindex(t, r.store, id)
	e2 := r.newEngine(r.store, nil)
	r.start(e2)
	if st := e2.Status(); st.Running != 0 {
		t.Fatalf("%d jobs resumed from a trusted index without entries", st.Running)
	}
	if err := e2.Stop(); err != nil {
		t.Fatal(err)
	}

	// Mark gone: Start scans every record, resumes the job, re-indexes it,
	// and drops an entry that names no record.
	if err := r.store.Commit(ctxT(t), []engine.Op{
		{Key: []byte("rt/meta/run-index"), Delete: true},
		{Key: []byte("rt/run/jnosuchjob"), Value: []byte{}},
	}); err != nil {
		t.Fatal(err)
	}
	e3 := r.newEngine(r.store, nil)
	r.start(e3)
	j := r.wait(e3, id)
	if j.Status != engine.StatusCompleted || j.Resumptions != 1 {
		t.Fatalf("after the rebuild: %+v, want completed after one resumption", j)
	}
	if hasKey(t, r.store, "rt/run/"+id) {
		t.Error("a finished job kept its index entry")
	}
	if hasKey(t, r.store, "rt/run/jnosuchjob") {
		t.Error("the rebuild kept an entry without a record")
	}
}

// termStore is a kvtest store that reports the pair's terms as a WIP store
// does.
type termStore struct {
	engine.Store
	cur     uint64
	writers []uint64
}

func (s *termStore) Terms() (uint64, []uint64) { return s.cur, s.writers }

// TestIndexDistrustedAfterAnotherWriter: the index is trusted only when no
// term but the current one wrote since the mark's term. A term in between
// may have run a tandemd that does not keep it (a rolling upgrade rolled
// back), so its jobs are found by a full scan.
func TestIndexDistrustedAfterAnotherWriter(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	ts := &termStore{Store: r.store, cur: 1, writers: []uint64{1}}
	e1 := r.newEngine(ts, nil)
	r.start(e1) // mark: epoch 1
	r.deploy(e1, indexFlow)
	id := r.handedOver(e1, "a")
	unindex(t, r.store, id)

	ts.cur, ts.writers = 3, []uint64{1, 3} // term 2 wrote nothing
	e2 := r.newEngine(ts, nil)
	r.start(e2) // trusted: mark now at 3
	if st := e2.Status(); st.Running != 0 {
		t.Fatalf("%d jobs resumed; the index was trusted and has no entry", st.Running)
	}
	if err := e2.Stop(); err != nil {
		t.Fatal(err)
	}

	ts.cur, ts.writers = 5, []uint64{1, 3, 4, 5} // term 4 wrote
	e3 := r.newEngine(ts, nil)
	r.start(e3)
	if j := r.wait(e3, id); j.Status != engine.StatusCompleted {
		t.Fatalf("job after term 4 wrote: %+v, want found by the full scan and completed", j)
	}
}

// TestIndexOnTheWIPStoreTerms runs the same check on the real WIP store's
// epoch history: a term that commits a job record without its entry (as
// an older tandemd would) makes the next promotion scan everything.
func TestIndexOnTheWIPStoreTerms(t *testing.T) {
	ctx := ctxT(t)
	ws, err := wip.Open(t.TempDir(), wip.Options{Mode: wip.Async, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	st := engine.OnWIP(ws)
	r := newRig(t, clock.Real(), nil)
	if err := ws.Promote(ctx, 1); err != nil {
		t.Fatal(err)
	}
	e1 := r.newEngine(st, nil)
	r.start(e1)
	r.deploy(e1, indexFlow)
	id := r.handedOver(e1, "a")
	rec, ok, err := st.Get([]byte("rt/job/" + id))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}

	// Term 2: an older tandemd rewrites the record and drops the entry.
	// (It never wrote entries; dropping the one term 1 wrote stands for a
	// job it created itself.)
	promote := func(epoch uint64) {
		t.Helper()
		if err := ws.Demote(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ws.Promote(ctx, epoch); err != nil {
			t.Fatal(err)
		}
	}
	promote(2)
	if err := st.Commit(ctx, []engine.Op{{Key: []byte("rt/job/" + id), Value: rec}, {Key: []byte("rt/run/" + id), Delete: true}}); err != nil {
		t.Fatal(err)
	}
	promote(3)
	e2 := r.newEngine(st, nil)
	r.start(e2)
	if j := r.wait(e2, id); j.Status != engine.StatusCompleted || j.Resumptions != 1 {
		t.Fatalf("job written in term 2 without its entry: %+v, want resumed by the full scan", j)
	}
}

func doneKeys(t *testing.T, st engine.Store) []string {
	t.Helper()
	var ks []string
	if err := st.Scan([]byte("rt/done/"), func(k, _ []byte) error { ks = append(ks, string(k)); return nil }); err != nil {
		t.Fatal(err)
	}
	return ks
}

// TestDoneIndexDrivesPurge: a finishing commit moves the job from rt/run/
// to rt/done/; a rebuild restores a missing rt/done/ entry; Purge reads
// rt/done/ up to its cut, deletes the finished jobs there and only drops
// an entry whose job is not finished.
func TestDoneIndexDrivesPurge(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	r.deploy(r.e, indexFlow)
	fin, err := r.e.StartJob(ctxT(t), "p", "s", "finished", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.wait(r.e, fin)
	ks := doneKeys(t, r.store)
	if len(ks) != 1 || !strings.HasSuffix(ks[0], "/"+fin) || hasKey(t, r.store, "rt/run/"+fin) {
		t.Fatalf("after finishing: rt/done/ %v, rt/run/ entry %v", ks, hasKey(t, r.store, "rt/run/"+fin))
	}
	unf := r.handedOver(r.e, "unfinished")

	// As if an older tandemd had finished it: no rt/done/ entry, no mark.
	// A bogus rt/done/ entry names the unfinished job.
	if err := r.store.Commit(ctxT(t), []engine.Op{
		{Key: []byte(ks[0]), Delete: true},
		{Key: []byte("rt/meta/run-index"), Delete: true},
		{Key: []byte("rt/done/00000000000000000001/" + unf), Value: []byte{}},
	}); err != nil {
		t.Fatal(err)
	}
	r.ep.Block(make(chan string, 1)) // the resumed job waits in its call
	defer r.ep.Release()
	e2 := r.newEngine(r.store, nil)
	r.start(e2)
	if ks := doneKeys(t, r.store); len(ks) != 2 || !slices.ContainsFunc(ks, func(k string) bool { return strings.HasSuffix(k, "/"+fin) }) {
		t.Fatalf("after the rebuild rt/done/ holds %v, want the finished job's entry restored beside the bogus one", ks)
	}
	n, err := e2.Purge(ctxT(t), clock.Real().Now().Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v; want the one finished job", n, err)
	}
	if hasKey(t, r.store, "rt/job/"+fin) || !hasKey(t, r.store, "rt/job/"+unf) {
		t.Fatalf("after Purge: finished record present %v, unfinished record present %v",
			hasKey(t, r.store, "rt/job/"+fin), hasKey(t, r.store, "rt/job/"+unf))
	}
	if ks := doneKeys(t, r.store); len(ks) != 0 {
		t.Fatalf("rt/done/ after Purge: %v", ks)
	}
}

func ids(js []api.JobInfo) []string {
	var out []string
	for _, j := range js {
		out = append(out, j.ID)
	}
	return out
}

// TestListJobsThroughTheIndexes: a limited listing holds every unfinished
// job and the most recently finished ones, oldest first, and says what it
// left out; filters apply; a passive (engine not running) whose store a
// term wrote after the mark reads every record instead of the indexes.
func TestListJobsThroughTheIndexes(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, clk, nil)
	ts := &termStore{Store: r.store, cur: 1, writers: []uint64{1}}
	e := r.newEngine(ts, nil)
	r.start(e)
	r.deploy(e, indexFlow)
	var fin []string
	for i := range 5 {
		id, err := e.StartJob(ctxT(t), "p", "s", fmt.Sprint(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		r.wait(e, id)
		fin = append(fin, id)
		clk.Advance(time.Minute)
	}
	entered := make(chan string, 1)
	r.ep.Block(entered)
	defer r.ep.Release()
	run, _ := e.StartJob(ctxT(t), "p", "s", "unfinished", nil)
	<-entered

	js, more, err := e.ListJobs("", "", 2)
	if want := []string{fin[3], fin[4], run}; err != nil || !more || !slices.Equal(ids(js), want) {
		t.Fatalf("ListJobs(limit 2) = %v, more=%v, %v; want %v, more", ids(js), more, err, want)
	}
	if js, more, _ := e.ListJobs("completed", "", 10); more || !slices.Equal(ids(js), fin) {
		t.Fatalf("ListJobs(completed, limit 10) = %v, more=%v; want all 5", ids(js), more)
	}
	if js, _, _ := e.ListJobs("running", "", 1); !slices.Equal(ids(js), []string{run}) {
		t.Fatalf("ListJobs(running) = %v", ids(js))
	}
	if js, _, _ := e.ListJobs("", "other", 0); len(js) != 0 {
		t.Fatalf("ListJobs(project other) = %v", ids(js))
	}
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}

	// Passive: term 2 (another node) wrote a finished job without entries.
	rec, _, _ := r.store.Get([]byte("rt/job/" + fin[0]))
	if err := r.store.Commit(ctxT(t), []engine.Op{{Key: []byte("rt/job/jfromterm2"), Value: rec}}); err != nil {
		t.Fatal(err)
	}
	ts.cur, ts.writers = 2, []uint64{1, 2}
	js, _, err = e.ListJobs("completed", "", 0)
	if err != nil || len(js) != 6 {
		t.Fatalf("passive listing after term 2 wrote: %d jobs %v, %v; want the 6 records", len(js), ids(js), err)
	}
	if js, _, _ := e.ListJobs("completed", "", 10); len(js) != 6 {
		t.Fatalf("passive limited listing after term 2 wrote: %v; want the 6 records (indexes not trusted)", ids(js))
	}
	// Through the records, a limit keeps the newest finished ones as the
	// scan goes (trimmed at twice the limit): the same answer.
	if js, more, _ := e.ListJobs("completed", "", 2); !more || !slices.Equal(ids(js), []string{fin[3], fin[4]}) {
		t.Fatalf("passive listing, limit 2, after term 2 wrote: %v, more=%v; want the two newest %v, more", ids(js), more, fin[3:])
	}
}

// TestPurgePassesAreBounded: a pass deletes at most its limit, oldest
// finished first, and says whether more are due.
func TestPurgePassesAreBounded(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, clk, nil)
	r.start(r.e)
	r.deploy(r.e, indexFlow)
	var fin []string
	for i := range 5 {
		id, err := r.e.StartJob(ctxT(t), "p", "s", fmt.Sprint(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		r.wait(r.e, id)
		fin = append(fin, id)
		clk.Advance(time.Minute)
	}
	for i, want := range []struct {
		n    int
		more bool
	}{{2, true}, {2, true}, {1, false}, {0, false}} {
		n, more, err := r.e.PurgePass(ctxT(t), clk.Now(), 2)
		if err != nil || n != want.n || more != want.more {
			t.Fatalf("pass %d: %d, more=%v, %v; want %d, more=%v", i+1, n, more, err, want.n, want.more)
		}
		if i == 0 && (hasKey(t, r.store, "rt/job/"+fin[0]) || !hasKey(t, r.store, "rt/job/"+fin[2])) {
			t.Fatal("the first pass did not take the two oldest")
		}
	}
}

// TestResumeInGroups: a backlog larger than one resumption commit is
// resumed whole, each job's resumption counted once.
func TestResumeInGroups(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	r.deploy(r.e, indexFlow)
	r.ep.Block(nil)
	defer r.ep.Release()
	const n = 300 // over two groups of 128
	for i := range n {
		if _, err := r.e.StartJob(ctxT(t), "p", "s", fmt.Sprint(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.e.Stop(); err != nil {
		t.Fatal(err)
	}
	e2 := r.newEngine(r.store, nil)
	r.start(e2)
	if st := e2.Status(); st.Running != n {
		t.Fatalf("%d jobs resumed, want %d", st.Running, n)
	}
	if err := e2.Stop(); err != nil {
		t.Fatal(err)
	}
	js, err := e2.Jobs("", "p")
	if err != nil || len(js) != n {
		t.Fatalf("%d jobs, %v", len(js), err)
	}
	for _, j := range js {
		if j.Resumptions != 1 {
			t.Fatalf("job %s: %d resumptions, want 1", j.ID, j.Resumptions)
		}
	}
}

// TestListJobsIsBounded: a listing never builds more than MaxList jobs in
// the daemon's memory. Limit 0 over a larger history, or a larger limit,
// is refused with ErrTooMany naming what to ask instead; a limit within
// the bound, or a filter that matches few, still lists.
func TestListJobsIsBounded(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRig(t, clk, nil)
	e := r.newEngine(r.store, func(o *engine.Options) { o.MaxList = 3 })
	r.start(e)
	r.deploy(e, indexFlow)
	for i := range 4 {
		id, err := e.StartJob(ctxT(t), "p", "s", fmt.Sprint(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		r.wait(e, id)
		clk.Advance(time.Minute)
	}
	if _, _, err := e.ListJobs("", "", 0); !errors.Is(err, engine.ErrTooMany) || !strings.Contains(err.Error(), "more than 3 jobs match: give limit=N") {
		t.Fatalf("ListJobs(limit 0) over 4 jobs with MaxList 3: %v, want ErrTooMany naming limit", err)
	}
	if _, _, err := e.ListJobs("", "", 4); !errors.Is(err, engine.ErrTooMany) || !strings.Contains(err.Error(), "limit=4: at most 3") {
		t.Fatalf("ListJobs(limit 4) with MaxList 3: %v, want ErrTooMany", err)
	}
	if js, more, err := e.ListJobs("", "", 3); err != nil || len(js) != 3 || !more {
		t.Fatalf("ListJobs(limit 3) = %d jobs, more=%v, %v; want 3, more", len(js), more, err)
	}
	if js, _, err := e.ListJobs("", "other", 0); err != nil || len(js) != 0 {
		t.Fatalf("ListJobs(project other, limit 0) = %d jobs, %v; want none, no error", len(js), err)
	}
}
