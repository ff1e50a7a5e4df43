// Package engine is the orchestration runtime: it runs the jobs of the
// deployed projects (package orch) on the active node, checkpointing each
// job in the WIP store so that the node that takes over resumes every
// unfinished job where it stood.
//
// # Contract
//
//   - A job exists once its record is committed (Store.Commit returns only
//     when durable, and replicated in sync mode); a starter's trigger is
//     acknowledged (HTTP 202/200, row, message) only after that commit.
//     Job ids derive from (project, orchestration, trigger key), so a
//     trigger delivered twice starts one job.
//   - Pure steps (assign, if, for-each, while, try, terminate) run in
//     memory. Before every connector activity the job's variables, cursor
//     and the activity's idempotency key and parameters are committed; after
//     it, the result and the advanced cursor. A resumed job re-runs the pure
//     steps since its last checkpoint (they are deterministic: expressions
//     have no now()) and repeats a call in doubt with the same key.
//   - Idempotency keys (invariant I6) are Key(job id, step path) where the
//     path is the enclosing loops with their iteration and the step id, e.g.
//     "j3f0.../each#2/send": never time, never the attempt number.
//   - Start resumes every unfinished job (its resumption count grows by
//     one), found through the index of unfinished jobs (see Store layout). Pause (seed 001) stops the starters, answers HTTP starters with
//     503 and Retry-After, waits for running jobs up to ForceStopAfter (0:
//     forever) and then hands the rest over: their goroutines stop without
//     a further commit, the last checkpoint stands.
//
// # Store layout
//
// Every key starts with Prefix "rt/"; values are JSON objects with "v":
// FormatVersion (1), and a reader refuses another version rather than
// guess:
//
//	rt/dep/<project>                   {"v","version","deployed"}: the current version
//	rt/depv/<project>/<version:%010d>  {"v","project","version","files","deployed"}: its source files
//	rt/job/<job id>                    the job record, which is the checkpoint:
//	    {"v","id","project","version","orch","trigger","status","reason",
//	     "vars":     variables (JSON values; whole numbers read back as integers),
//	     "stack":    cursor, outermost first: [{"step","part","i","iter","items"}],
//	                 step/part name the step list (""/"" = top level; part is
//	                 then|else|do|try|catch), i the next index in it, iter and
//	                 items the loop's iteration and list,
//	     "pending":  {"step","key","params","attempt"}: a call whose outcome is
//	                 not recorded (present between the before and after checkpoints),
//	     "resumptions","checkpoints","node","created","updated","output"}
//	rt/run/<job id>                    empty; present while the job is unfinished: set by the
//	                                   commit that creates it, deleted by the one that finishes it
//	rt/done/<updated ns %020d>/<job id> empty; a finished job, written by the commit that
//	                                   finishes it: Purge reads this range up to its cut
//	rt/meta/run-index                  {"v","epoch"}: the term whose Start last checked the
//	                                   rt/run/ and rt/done/ indexes
//
// Start finds the jobs to resume through rt/run/, so a promotion costs the
// jobs in flight, not the job history (BenchmarkStartWithHistory). It
// trusts that index only if its mark exists and the store's epoch history
// (TermStore) shows no term but the current one writing since the mark's
// term: a term of an older tandemd, which writes jobs without entries,
// makes the next Start scan every record and rebuild both indexes.
//
// Job ids are "j" + 24 hex digits of SHA-256(project NUL orchestration NUL
// trigger key). decodeJob is fuzzed (FuzzDecodeJob).
//
// # Goroutines
//
//   - one per job (runner.run), owned by the Engine: it ends when the job
//     finishes, on a store error, or when its context (Engine.jobCtx) is
//     cancelled by Pause/Stop; Pause and Stop wait for all of them.
//   - one per scheduled/connector starter, owned by its deployment: ended by
//     cancelling the deployment's starter context (Pause, Stop, undeploy,
//     redeploy), waited for by the same call.
//   - with Options.JobRetention, one purge goroutine (purgeLoop) per Start,
//     owned by the Engine: it ends with the job context (Pause, Stop) and
//     shutdown waits for it. Finished jobs older than the retention are
//     deleted; unfinished ones never are.
//   - during Pause, one goroutine waiting for the job goroutines (jobWG):
//     it ends when they have, which Pause ensures before it returns.
//   - HTTP handlers run on the caller's server goroutines; a synchronous
//     request waits for its job on a channel closed when the job ends or is
//     handed over.
package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/orch"
)

// TermStore is implemented by a store that knows the pair's terms (the
// WIP store, through OnWIP). Start uses it to tell whether a term that
// may not keep the index of unfinished jobs wrote the store.
type TermStore interface {
	// Terms returns the current epoch and the epochs of the terms that
	// committed anything, oldest first.
	Terms() (current uint64, writers []uint64)
}

// Store is the narrow view of the WIP store the engine needs.
type Store interface {
	Get(key []byte) (value []byte, ok bool, err error)
	// Scan calls fn for each key with prefix, in key order. key and value
	// are valid only during the call: fn copies what it keeps.
	Scan(prefix []byte, fn func(key, value []byte) error) error
	// ScanReverse is Scan in descending key order.
	ScanReverse(prefix []byte, fn func(key, value []byte) error) error
	// Commit applies ops atomically; it returns once they are durable
	// (and replicated, in sync mode).
	Commit(ctx context.Context, ops []Op) error
}

// Op is one change of a Commit.
type Op struct {
	Key, Value []byte
	Delete     bool
}

// StarterSource is implemented by connectors that can start jobs (buffer
// table polls, queue subscriptions): the engine asks for a Starter for an
// orchestration's `starter: connector:` block. NewStarter checks the
// operation and params (connectors.StarterParams) without I/O or holding
// resources before Run: Deploy calls it once to refuse a bad starter, and
// the runtime again each time it (re)starts the starter. The connectors
// that implement it: sqlconn ("buffer"), natsconn ("subscribe"), amqpconn
// ("consume"), fileconn ("poll"), testconn ("subscribe").
type StarterSource interface {
	NewStarter(operation string, params map[string]any) (connectors.Starter, error)
}

// Errors.
var (
	ErrStore    = errors.New("engine: store failed")
	ErrCorrupt  = errors.New("engine: corrupt record")
	ErrPaused   = errors.New("engine: not running (pausing, stopped or passive)")
	ErrNotFound = errors.New("engine: not found")
	ErrState    = errors.New("engine: wrong state")
	// ErrTooMany: a listing would hold more jobs than Options.MaxList.
	ErrTooMany = errors.New("engine: too many jobs to list")
)

// Options configure an Engine.
type Options struct {
	Store      Store
	Connectors *connectors.Registry
	Clock      clock.Clock
	Logger     *zap.Logger
	Node       string
	// ForceStopAfter bounds how long Pause waits for running jobs; 0
	// waits indefinitely (seed 001's default).
	ForceStopAfter time.Duration
	// MaxConcurrentJobs bounds jobs running at once (default 64); the
	// others wait, committed, for a slot.
	MaxConcurrentJobs int
	// RetryAfter is the Retry-After of HTTP starters while not running
	// (default 5s: about a failover).
	RetryAfter time.Duration
	// Events receives status events (pause reports, resumptions). Called
	// synchronously; must not block.
	Events func(api.Event)
	// JobRetention is how long a finished (completed or failed) job is
	// kept after its last update; while running, the engine purges older
	// ones every PurgeEvery. 0 keeps every job (the store then grows
	// without bound, and so does the scan each promotion makes). A job id
	// derives from its trigger key, so a trigger redelivered after its job
	// was purged starts the job again: keep jobs longer than any starter
	// can redeliver.
	JobRetention time.Duration
	// PurgeEvery is the purge period (default 10m; used only with
	// JobRetention).
	PurgeEvery time.Duration
	// MaxList bounds the jobs one ListJobs returns (default 100,000,
	// about 40 MB of JSON): an unlimited listing of a larger history, or
	// a larger limit, is refused (ErrTooMany) instead of building it in
	// the daemon's memory.
	MaxList int
}

// Engine states.
const (
	StateStopped  = "stopped"
	StateStarting = "starting"
	StateRunning  = "running"
	StatePausing  = "pausing"
)

// Engine runs jobs. Create with New; Start on promotion; Pause or Stop on
// demotion.
type Engine struct {
	o   Options
	clk clock.Clock
	log *zap.Logger
	sem chan struct{}
	m   metrics

	createMu [64]sync.Mutex // job creation, striped by job id

	mu       sync.Mutex
	state    string
	deps     map[string]*deployment // current deployment of each project
	versions map[string]*deployment // project@version -> deployment (running jobs of older versions)
	jobs     map[string]*liveJob
	jobCtx   context.Context
	jobStop  context.CancelFunc
	jobWG    sync.WaitGroup
	purgeWG  sync.WaitGroup // purgeLoop, ended by jobStop
	purged   atomic.Uint64  // jobs deleted by the retention purge, since New
}

type liveJob struct {
	snap    jobRecord     // last published state
	done    chan struct{} // closed when the goroutine ends
	started bool          // holds a concurrency slot
}

type metrics struct {
	callErrors  atomic.Uint64
	checkpoints atomic.Uint64
	mu          sync.Mutex
	cpLatencies []time.Duration // ring of the latest checkpoint latencies
	cpNext      int
}

func (m *metrics) observeCheckpoint(d time.Duration) {
	m.checkpoints.Add(1)
	m.mu.Lock()
	if len(m.cpLatencies) < 4096 {
		m.cpLatencies = append(m.cpLatencies, d)
	} else {
		m.cpLatencies[m.cpNext] = d
		m.cpNext = (m.cpNext + 1) % len(m.cpLatencies)
	}
	m.mu.Unlock()
}

// CheckpointLatency returns the q-quantile (0..1) of the latest checkpoint
// commit latencies, and how many checkpoints were committed in all.
func (e *Engine) CheckpointLatency(q float64) (time.Duration, uint64) {
	e.m.mu.Lock()
	l := slices.Clone(e.m.cpLatencies)
	e.m.mu.Unlock()
	if len(l) == 0 {
		return 0, e.m.checkpoints.Load()
	}
	slices.Sort(l)
	return l[min(len(l)-1, int(q*float64(len(l))))], e.m.checkpoints.Load()
}

// New checks o and returns a stopped Engine.
func New(o Options) (*Engine, error) {
	if o.Store == nil {
		return nil, fmt.Errorf("engine: Options.Store is required")
	}
	if o.Connectors == nil {
		return nil, fmt.Errorf("engine: Options.Connectors is required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.MaxConcurrentJobs <= 0 {
		o.MaxConcurrentJobs = 64
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = 5 * time.Second
	}
	if o.ForceStopAfter < 0 {
		return nil, fmt.Errorf("engine: Options.ForceStopAfter %s is negative", o.ForceStopAfter)
	}
	if o.JobRetention < 0 {
		return nil, fmt.Errorf("engine: Options.JobRetention %s is negative", o.JobRetention)
	}
	if o.PurgeEvery < 0 {
		return nil, fmt.Errorf("engine: Options.PurgeEvery %s is negative", o.PurgeEvery)
	}
	if o.PurgeEvery == 0 {
		o.PurgeEvery = 10 * time.Minute
	}
	if o.MaxList <= 0 {
		o.MaxList = 100_000
	}
	e := &Engine{
		o: o, clk: o.Clock, log: o.Logger.Named("engine"),
		sem:   make(chan struct{}, o.MaxConcurrentJobs),
		state: StateStopped, deps: map[string]*deployment{}, versions: map[string]*deployment{},
		jobs: map[string]*liveJob{},
	}
	return e, nil
}

func (e *Engine) event(text string) {
	e.log.Info(text)
	if e.o.Events != nil {
		e.o.Events(api.Event{Time: e.clk.Now().UTC(), Kind: "runtime", Text: text})
	}
}

// Start loads the deployments, resumes every unfinished job from its last
// checkpoint and starts the starters. Call it on promotion, after the
// epoch is persisted and the VIP claimed (I3).
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	if e.state != StateStopped {
		e.mu.Unlock()
		return fmt.Errorf("%w: Start while %s", ErrState, e.state)
	}
	e.state = StateStarting
	e.jobCtx, e.jobStop = context.WithCancel(context.WithoutCancel(ctx))
	e.mu.Unlock()

	heads := map[string]depHead{}
	err := e.o.Store.Scan([]byte(depPrefix), func(k, v []byte) error {
		var h depHead
		if err := decodeStrict(v, &h); err != nil || h.V != FormatVersion {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, k, err)
		}
		heads[string(k[len(depPrefix):])] = h
		return nil
	})
	if err != nil {
		return e.abortStart(fmt.Errorf("engine: loading deployments: %w", err))
	}
	for name, h := range heads {
		d, err := e.loadVersion(name, h.Version)
		if err != nil {
			// One broken project must not keep the others down.
			e.log.Error("project not loaded", zap.String("project", name), zap.Error(err))
			e.event(fmt.Sprintf("project %s@%d not loaded: %v", name, h.Version, err))
			continue
		}
		e.mu.Lock()
		e.deps[name] = d
		e.mu.Unlock()
	}
	resume, err := e.unfinishedJobs(ctx)
	if err != nil {
		return e.abortStart(fmt.Errorf("engine: loading jobs: %w", err))
	}
	sort.Slice(resume, func(i, j int) bool { return resume[i].Created.Before(resume[j].Created) })
	resumed := 0
	// Running from here on: launch accepts jobs only while running, so a
	// Pause that saw the state change knows no job goroutine starts after.
	e.mu.Lock()
	e.state = StateRunning
	e.mu.Unlock()
	// The resumptions are counted durably before the jobs run again, so
	// the counts survive a crash right after the restart: one commit per
	// group of jobs, not per job, so a backlog does not hold the promotion
	// for a commit round trip each (BenchmarkStartWithUnfinished).
	for len(resume) > 0 {
		group := resume[:min(len(resume), resumeGroup)]
		resume = resume[len(group):]
		var ops []Op
		now := e.clk.Now().UTC()
		for _, j := range group {
			j.Resumptions++
			j.Status = StatusRunning
			j.Updated = now
			ops = append(ops, j.ops()...)
		}
		if err := e.o.Store.Commit(ctx, ops); err != nil {
			return e.abortStart(fmt.Errorf("%w: resuming jobs %s to %s: %v", ErrStore, group[0].ID, group[len(group)-1].ID, err))
		}
		for _, j := range group {
			e.launch(j)
		}
		resumed += len(group)
	}
	e.mu.Lock()
	for _, d := range e.deps {
		e.startStarters(d)
	}
	jobCtx := e.jobCtx
	e.mu.Unlock()
	if e.o.JobRetention > 0 {
		e.purgeWG.Add(1)
		go e.purgeLoop(jobCtx)
	}
	e.event(fmt.Sprintf("runtime started on %s: %d projects, %d jobs resumed", e.o.Node, len(heads), resumed))
	return nil
}

// unfinishedJobs returns the jobs Start resumes. It reads them through
// the index of unfinished jobs (rt/run/), so a promotion costs what is in
// flight, not the pair's whole job history, when the index can be
// trusted: its mark exists and no term wrote the store since the mark's
// epoch but the current one (a TermStore tells; a node running an older
// tandemd writes jobs without indexing them). Otherwise it scans every
// job record and rebuilds the index. Either way it leaves the mark at the
// current epoch.
func (e *Engine) unfinishedJobs(ctx context.Context) ([]*jobRecord, error) {
	epoch, why := e.indexDistrust(true)
	var resume []*jobRecord
	var ops []Op
	if why == "" {
		var ids []string
		err := e.o.Store.Scan([]byte(runPrefix), func(k, _ []byte) error {
			ids = append(ids, string(k[len(runPrefix):]))
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			v, ok, err := e.o.Store.Get(jobKey(id))
			if err != nil {
				return nil, err
			}
			var j *jobRecord
			if ok {
				if j, err = decodeJob(v); err != nil {
					e.log.Error("unreadable job left alone", zap.String("job", id), zap.Error(err))
					continue
				}
			}
			if !ok || finished(j.Status) {
				// Cannot happen while every writer keeps the index; the
				// entry only costs a lookup, but say so and drop it.
				e.log.Warn("index of unfinished jobs named a finished or missing job; entry removed", zap.String("job", id), zap.Bool("record", ok))
				ops = append(ops, Op{Key: runKey(id), Delete: true})
				continue
			}
			resume = append(resume, j)
		}
	} else {
		start := e.clk.Now()
		indexed, done := map[string]bool{}, map[string]bool{}
		err := e.o.Store.Scan([]byte(runPrefix), func(k, _ []byte) error {
			indexed[string(k[len(runPrefix):])] = true
			return nil
		})
		if err == nil {
			err = e.o.Store.Scan([]byte(donePrefix), func(k, _ []byte) error {
				done[doneID(k)] = true
				return nil
			})
		}
		if err != nil {
			return nil, err
		}
		all := 0
		err = e.o.Store.Scan([]byte(jobPrefix), func(k, v []byte) error {
			all++
			id := string(k[len(jobPrefix):])
			j, err := decodeJob(v)
			if err != nil {
				e.log.Error("unreadable job left alone", zap.String("job", id), zap.Error(err))
				delete(indexed, id) // as it was: neither added nor removed
				return nil
			}
			switch {
			case !finished(j.Status):
				resume = append(resume, j)
				if !indexed[id] {
					ops = append(ops, Op{Key: runKey(id), Value: []byte{}})
				}
			default:
				if indexed[id] {
					ops = append(ops, Op{Key: runKey(id), Delete: true})
				}
				if !done[id] {
					ops = append(ops, Op{Key: doneKey(j), Value: []byte{}})
				}
			}
			delete(indexed, id)
			return nil
		})
		if err != nil {
			return nil, err
		}
		for id := range indexed { // entries without a record
			ops = append(ops, Op{Key: runKey(id), Delete: true})
		}
		e.log.Info("index of unfinished jobs rebuilt", zap.String("why", why), zap.Int("jobs", all),
			zap.Int("unfinished", len(resume)), zap.Int("entries_changed", len(ops)), zap.Duration("took", e.clk.Since(start)))
	}
	// The mark goes in the last commit: a crash before it leaves the old
	// mark, and the next Start checks again.
	for len(ops) > 256 {
		if err := e.o.Store.Commit(ctx, ops[:256]); err != nil {
			return nil, fmt.Errorf("%w: updating the index of unfinished jobs: %v", ErrStore, err)
		}
		ops = ops[256:]
	}
	mark, _ := json.Marshal(runIndexMark{V: FormatVersion, Epoch: epoch})
	if err := e.o.Store.Commit(ctx, append(ops, Op{Key: []byte(runIndexKey), Value: mark})); err != nil {
		return nil, fmt.Errorf("%w: updating the index of unfinished jobs: %v", ErrStore, err)
	}
	return resume, nil
}

// indexDistrust returns the current epoch (0 for a store without terms)
// and why the indexes of jobs cannot be trusted ("" if they can). self
// says the current term's writes are this engine's (Start, and while
// running); otherwise a write of the current term counts like any other.
func (e *Engine) indexDistrust(self bool) (uint64, string) {
	var cur uint64
	var writers []uint64
	ts, hasTerms := e.o.Store.(TermStore)
	if hasTerms {
		cur, writers = ts.Terms()
	}
	v, ok, err := e.o.Store.Get([]byte(runIndexKey))
	switch {
	case err != nil:
		return cur, fmt.Sprintf("reading its mark: %v", err)
	case !ok:
		return cur, "no index yet (first start of this tandemd version on this store)"
	}
	var m runIndexMark
	if err := decodeStrict(v, &m); err != nil || m.V != FormatVersion {
		return cur, fmt.Sprintf("unreadable mark %q", v)
	}
	for _, w := range writers {
		if w > m.Epoch && (w != cur || !self) {
			return cur, fmt.Sprintf("term %d wrote the store after the index was last checked in term %d", w, m.Epoch)
		}
	}
	if m.Epoch > cur && hasTerms {
		return cur, fmt.Sprintf("mark of term %d is ahead of the current term %d", m.Epoch, cur)
	}
	return cur, ""
}

func (e *Engine) abortStart(err error) error {
	e.mu.Lock()
	e.state = StatePausing
	e.mu.Unlock()
	e.shutdown()
	return err
}

// launch starts the goroutine of a committed job.
func (e *Engine) launch(j *jobRecord) *liveJob {
	lj := &liveJob{snap: *j, done: make(chan struct{})}
	e.mu.Lock()
	if old, ok := e.jobs[j.ID]; ok {
		e.mu.Unlock()
		return old
	}
	if e.state != StateRunning {
		// Committed while a pause began: the record is the handover.
		e.mu.Unlock()
		close(lj.done)
		return lj
	}
	e.jobs[j.ID] = lj
	ctx := e.jobCtx
	e.jobWG.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.jobWG.Done()
		defer close(lj.done)
		defer func() {
			e.mu.Lock()
			delete(e.jobs, j.ID)
			e.mu.Unlock()
		}()
		select {
		case e.sem <- struct{}{}:
		case <-ctx.Done():
			return // handed over before it ran: its record stands
		}
		defer func() { <-e.sem }()
		e.mu.Lock()
		lj.started = true
		e.mu.Unlock()
		e.runJob(ctx, j)
	}()
	return lj
}

func (e *Engine) runJob(ctx context.Context, j *jobRecord) {
	log := e.log.With(zap.String("job", j.ID), zap.String("orch", j.Project+"/"+j.Orch))
	d, err := e.version(j.Project, j.Version)
	for backoff := 5 * time.Second; err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, orch.ErrInvalid) && !errors.Is(err, ErrCorrupt); backoff = min(2*backoff, time.Minute) {
		// Opening the project's connections failed (an endpoint down at
		// promotion): the job keeps its checkpoint and waits, it is not
		// failed for a transient reason.
		log.Warn("job's project not loadable, retrying", zap.Duration("in", backoff), zap.Error(err))
		if clock.Sleep(ctx, e.clk, backoff) != nil {
			return
		}
		d, err = e.version(j.Project, j.Version)
	}
	if err == nil && d.prj.Orchestrations[j.Orch] == nil {
		err = fmt.Errorf("%w: orchestration %s not in %s@%d", ErrNotFound, j.Orch, j.Project, j.Version)
	}
	if err != nil {
		// Without its definition the job cannot run; fail it visibly.
		log.Error("job cannot run", zap.Error(err))
		j.Status, j.Reason, j.Stack, j.Pending = StatusFailed, err.Error(), nil, nil
		j.Updated = e.clk.Now().UTC()
		if cerr := e.o.Store.Commit(context.WithoutCancel(ctx), j.ops()); cerr != nil {
			log.Error("recording the failure", zap.Error(cerr))
		}
		e.publish(j)
		return
	}
	r := &runner{e: e, dep: d, o: d.prj.Orchestrations[j.Orch], rec: j, log: log}
	switch err := r.run(ctx); {
	case err == nil:
		log.Debug("job ended", zap.String("status", j.Status))
	case errors.Is(err, errHandover):
		log.Info("job handed over at its last checkpoint")
	default:
		log.Error("job stopped", zap.Error(err))
	}
}

// publish makes a copy of j's state visible to Status, the job API and
// waiters.
func (e *Engine) publish(j *jobRecord) {
	e.mu.Lock()
	if lj, ok := e.jobs[j.ID]; ok {
		lj.snap = *j
		lj.snap.Vars = nil // listings do not need them; avoids sharing the map
		lj.snap.Stack = slices.Clone(j.Stack)
	}
	e.mu.Unlock()
}

// JobID is the id of the job a trigger starts: derived from the
// trigger's key, so a trigger delivered twice starts one job.
func JobID(project, orchestration, triggerKey string) string {
	h := sha256.Sum256([]byte(project + "\x00" + orchestration + "\x00" + triggerKey))
	return "j" + hex.EncodeToString(h[:12])
}

// startJob commits a new job for a trigger and launches it. It returns
// the job id, and created=false when the trigger was seen before (no
// second job). It returns only after the commit: the caller may then
// acknowledge the trigger.
func (e *Engine) startJob(ctx context.Context, project, name, trigger string, input map[string]any) (string, *liveJob, bool, error) {
	e.mu.Lock()
	d := e.deps[project]
	running := e.state == StateRunning
	e.mu.Unlock()
	if !running {
		return "", nil, false, ErrPaused
	}
	if d == nil {
		return "", nil, false, fmt.Errorf("%w: project %q", ErrNotFound, project)
	}
	o := d.prj.Orchestrations[name]
	if o == nil {
		return "", nil, false, fmt.Errorf("%w: orchestration %q in project %q", ErrNotFound, name, project)
	}
	id := JobID(project, name, trigger)
	mu := &e.createMu[id[len(id)-1]%64]
	mu.Lock()
	defer mu.Unlock()
	if _, ok, err := e.o.Store.Get(jobKey(id)); err != nil {
		return "", nil, false, fmt.Errorf("%w: %v", ErrStore, err)
	} else if ok {
		e.mu.Lock()
		lj := e.jobs[id]
		e.mu.Unlock()
		return id, lj, false, nil
	}
	vars := map[string]any{}
	for k, v := range o.Vars {
		vars[k] = v
	}
	maps.Copy(vars, input)
	nv, err := normalize(vars)
	if err != nil {
		return "", nil, false, fmt.Errorf("engine: job input: %w", err)
	}
	now := e.clk.Now().UTC()
	j := &jobRecord{V: FormatVersion, ID: id, Project: project, Version: d.version, Orch: name, Trigger: trigger,
		Status: StatusRunning, Vars: nv.(map[string]any), Node: e.o.Node, Created: now, Updated: now}
	if err := e.o.Store.Commit(ctx, j.createOps()); err != nil {
		return "", nil, false, fmt.Errorf("%w: creating job: %v", ErrStore, err)
	}
	return id, e.launch(j), true, nil
}

// StartJob starts a job of project/orchestration for trigger key (the
// API's manual start, and tests). See startJob.
func (e *Engine) StartJob(ctx context.Context, project, orchestration, triggerKey string, input map[string]any) (string, error) {
	id, _, _, err := e.startJob(ctx, project, orchestration, triggerKey, input)
	return id, err
}

// Wait blocks until job id is no longer running on this node (finished,
// handed over or stopped) or ctx ends, and returns its stored record.
func (e *Engine) Wait(ctx context.Context, id string) (api.JobInfo, error) {
	e.mu.Lock()
	lj := e.jobs[id]
	e.mu.Unlock()
	if lj != nil {
		select {
		case <-lj.done:
		case <-ctx.Done():
			return api.JobInfo{}, ctx.Err()
		}
	}
	return e.Job(id)
}

// Job returns a job's state: live if it runs here, else as stored.
func (e *Engine) Job(id string) (api.JobInfo, error) {
	e.mu.Lock()
	if lj, ok := e.jobs[id]; ok {
		info := jobInfo(&lj.snap)
		e.mu.Unlock()
		return info, nil
	}
	e.mu.Unlock()
	v, ok, err := e.o.Store.Get(jobKey(id))
	if err != nil {
		return api.JobInfo{}, fmt.Errorf("%w: %v", ErrStore, err)
	}
	if !ok {
		return api.JobInfo{}, fmt.Errorf("%w: job %q", ErrNotFound, id)
	}
	j, err := decodeJob(v)
	if err != nil {
		return api.JobInfo{}, err
	}
	return jobInfo(j), nil
}

// Jobs lists jobs, optionally only those with the given status and/or of
// one project, oldest first. It is ListJobs without a limit.
func (e *Engine) Jobs(status, project string) ([]api.JobInfo, error) {
	js, _, err := e.ListJobs(status, project, 0)
	return js, err
}

// ListJobs lists the jobs with the given status and/or of one project
// (empty: any), oldest first: every unfinished one, and of the finished
// ones the limit most recently finished (limit 0: all). more reports
// that the limit left finished jobs out. With the indexes trusted (see
// Store layout) the unfinished jobs come from rt/run/ and a limited
// listing of finished ones walks rt/done/ from the newest, so it costs
// what it returns; otherwise, or with limit 0, every record is read. A
// limit above Options.MaxList, or a listing with limit 0 that would hold
// more jobs than that, is refused with ErrTooMany.
func (e *Engine) ListJobs(status, project string, limit int) (out []api.JobInfo, more bool, err error) {
	if limit > e.o.MaxList {
		return nil, false, fmt.Errorf("%w: limit=%d: at most %d", ErrTooMany, limit, e.o.MaxList)
	}
	e.mu.Lock()
	live := map[string]api.JobInfo{}
	for id, lj := range e.jobs {
		live[id] = jobInfo(&lj.snap)
	}
	// The current term's writes are this engine's only while it runs;
	// a passive lists what the active wrote.
	self := e.state == StateRunning
	e.mu.Unlock()
	match := func(info api.JobInfo) bool {
		return (status == "" || info.Status == status) && (project == "" || info.Project == project)
	}
	info := func(id string, v []byte) api.JobInfo {
		if info, ok := live[id]; ok {
			return info
		}
		j, err := decodeJob(v)
		if err != nil {
			return api.JobInfo{ID: id, Status: "corrupt", Reason: err.Error()}
		}
		return jobInfo(j)
	}
	wantDone := status == "" || finished(status)
	wantRun := status == "" || !finished(status)
	_, why := e.indexDistrust(self)
	if why != "" || (limit == 0 && wantDone) {
		errMany := fmt.Errorf("%w: more than %d jobs match: give limit=N (the newest N finished ones and every unfinished one), "+
			"or a status or project", ErrTooMany, e.o.MaxList)
		// With a limit, the finished jobs are kept to the newest limit as
		// the scan goes (trimmed whenever twice that many are held), so
		// the listing holds O(limit) of them whatever the history.
		var done []api.JobInfo
		trim := func() {
			sort.SliceStable(done, func(i, j int) bool { return done[i].Updated.After(done[j].Updated) })
			if len(done) > limit {
				done, more = done[:limit], true
			}
		}
		err := e.o.Store.Scan([]byte(jobPrefix), func(k, v []byte) error {
			i := info(string(k[len(jobPrefix):]), v)
			switch {
			case !match(i):
			case limit > 0 && finished(i.Status):
				if done = append(done, i); len(done) >= 2*limit {
					trim()
				}
			case len(out) == e.o.MaxList:
				return errMany
			default:
				out = append(out, i)
			}
			return nil
		})
		if errors.Is(err, errMany) {
			return nil, false, err
		}
		if err != nil {
			return nil, false, fmt.Errorf("%w: %v", ErrStore, err)
		}
		if limit > 0 {
			trim()
			out = append(out, done...)
		}
		sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
		return out, more, nil
	}
	get := func(id string) (api.JobInfo, bool, error) {
		v, ok, err := e.o.Store.Get(jobKey(id))
		if err != nil || !ok {
			return api.JobInfo{}, false, err
		}
		return info(id, v), true, nil
	}
	seen := map[string]bool{} // a job finishing during the listing is in both indexes
	var ids []string
	if wantRun {
		err = e.o.Store.Scan([]byte(runPrefix), func(k, _ []byte) error {
			ids = append(ids, string(k[len(runPrefix):]))
			return nil
		})
	}
	for _, id := range ids {
		if err != nil {
			break
		}
		var i api.JobInfo
		var ok bool
		if i, ok, err = get(id); ok && match(i) && !finished(i.Status) {
			out = append(out, i)
			seen[id] = true
		}
	}
	if wantDone && err == nil {
		n := 0
		stop := errors.New("limit reached")
		err = e.o.Store.ScanReverse([]byte(donePrefix), func(k, _ []byte) error {
			i, ok, err := get(doneID(k))
			if err != nil || !ok || !match(i) || !finished(i.Status) || seen[i.ID] {
				return err
			}
			if n == limit {
				more = true
				return stop
			}
			out = append(out, i)
			n++
			return nil
		})
		if errors.Is(err, stop) {
			err = nil
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrStore, err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, more, nil
}

func jobInfo(j *jobRecord) api.JobInfo {
	info := api.JobInfo{ID: j.ID, Project: j.Project, Version: j.Version, Orchestration: j.Orch, Status: j.Status,
		Reason: j.Reason, Resumptions: j.Resumptions, Checkpoints: j.Checkpoints, Node: j.Node,
		Created: j.Created, Updated: j.Updated, Output: j.Output}
	if j.Pending != nil {
		info.Step, info.Attempt = j.Pending.Step, j.Pending.Attempt
	}
	return info
}

// PauseReport says what a Pause waited for and what it handed over.
type PauseReport struct {
	Waited     []string      `json:"waited"`      // jobs that finished while pausing
	HandedOver []string      `json:"handed_over"` // jobs left at their last checkpoint
	Forced     bool          `json:"forced"`      // force-stop-after expired (or ctx ended)
	Took       time.Duration `json:"took"`
}

// Pause implements seed 001: starters stop at once (HTTP starters answer
// 503 with Retry-After), running jobs get up to ForceStopAfter (0:
// indefinitely, or until ctx ends) to finish, the rest are handed over at
// their last checkpoint. Afterwards the engine is stopped; Start resumes.
func (e *Engine) Pause(ctx context.Context) (PauseReport, error) {
	start := e.clk.Now()
	e.mu.Lock()
	if e.state != StateRunning {
		st := e.state
		e.mu.Unlock()
		return PauseReport{}, fmt.Errorf("%w: Pause while %s", ErrState, st)
	}
	e.state = StatePausing
	before := slices.Collect(maps.Keys(e.jobs))
	e.mu.Unlock()
	e.event(fmt.Sprintf("runtime pausing: %d jobs in flight, force-stop-after %s", len(before), fmtLimit(e.o.ForceStopAfter)))
	e.stopStarters()

	all := make(chan struct{})
	go func() { e.jobWG.Wait(); close(all) }()
	var expired <-chan time.Time
	if e.o.ForceStopAfter > 0 {
		t := e.clk.NewTimer(e.o.ForceStopAfter)
		defer t.Stop()
		expired = t.C()
	}
	forced := false
	select {
	case <-all:
	case <-expired:
		forced = true
	case <-ctx.Done():
		forced = true
	}
	e.mu.Lock()
	handed := slices.Sorted(maps.Keys(e.jobs))
	e.mu.Unlock()
	e.shutdown()
	<-all
	rep := PauseReport{HandedOver: handed, Forced: forced, Took: e.clk.Since(start)}
	for _, id := range before {
		if !slices.Contains(handed, id) {
			rep.Waited = append(rep.Waited, id)
		}
	}
	slices.Sort(rep.Waited)
	e.event(fmt.Sprintf("runtime paused in %s: waited for %d jobs %s, handed over %d jobs %s", rep.Took, len(rep.Waited), idList(rep.Waited), len(rep.HandedOver), idList(rep.HandedOver)))
	return rep, nil
}

// idList names at most 20 jobs: an event is a line, not a listing (the
// job API has the rest).
func idList(ids []string) string {
	if len(ids) > 20 {
		return fmt.Sprintf("%v and %d more", ids[:20], len(ids)-20)
	}
	return fmt.Sprint(ids)
}

func fmtLimit(d time.Duration) string {
	if d == 0 {
		return "unset (wait indefinitely)"
	}
	return d.String()
}

// Stop hands every job over at once (demotion, I1) and closes the
// connections. It is Pause with no wait.
func (e *Engine) Stop() error {
	e.mu.Lock()
	if e.state == StateStopped {
		e.mu.Unlock()
		return nil
	}
	e.state = StatePausing
	n := len(e.jobs)
	e.mu.Unlock()
	e.stopStarters()
	e.shutdown()
	e.event(fmt.Sprintf("runtime stopped: %d jobs handed over", n))
	return nil
}

// shutdown cancels the jobs, waits for their goroutines, closes the
// connections and marks the engine stopped.
func (e *Engine) shutdown() {
	e.mu.Lock()
	stop := e.jobStop
	e.mu.Unlock()
	if stop != nil {
		stop()
	}
	e.jobWG.Wait()
	e.purgeWG.Wait()
	e.stopStarters()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.state = StateStopped
	// Connections are closed and the deployments forgotten: the next
	// Start reloads them from the store, which the peer may have changed.
	for _, d := range e.versions {
		d.close(e.log)
	}
	e.deps, e.versions = map[string]*deployment{}, map[string]*deployment{}
}

// Status reports the engine's state for the daemon's status.
func (e *Engine) Status() api.RuntimeStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	return api.RuntimeStatus{State: e.state, Running: len(e.jobs), Purged: e.purged.Load()}
}

// purgeLoop deletes the jobs that finished more than JobRetention ago,
// first a minute after Start (or PurgeEvery, if shorter: a promotion's
// resumptions go first) and then every PurgeEvery, until ctx (the
// engine's job context) ends. A failed purge is reported and retried at
// the next turn: what it could not delete is only kept longer.
func (e *Engine) purgeLoop(ctx context.Context) {
	defer e.purgeWG.Done()
	clock.Loop(ctx, e.clk, min(time.Minute, e.o.PurgeEvery), func(now time.Time) time.Duration {
		cutoff := now.Add(-e.o.JobRetention)
		n, more, err := e.purge(ctx, cutoff, purgePassMax)
		e.purged.Add(uint64(n))
		switch {
		case err != nil && ctx.Err() != nil:
			return 0 // the loop ends at ctx
		case err != nil:
			e.log.Warn("job purge failed; retried next period", zap.Int("purged", n), zap.Error(err))
			e.event(fmt.Sprintf("job purge failed after %d jobs (retried in %s): %v", n, e.o.PurgeEvery, err))
		case n > 0:
			e.event(fmt.Sprintf("purged %d finished jobs last updated before %s (job-retention %s)",
				n, cutoff.UTC().Format(time.RFC3339), e.o.JobRetention))
		}
		if more && err == nil {
			// A backlog (the first pass after an upgrade, a shorter
			// retention): the next bounded pass after a breath.
			return min(time.Second, e.o.PurgeEvery)
		}
		return e.o.PurgeEvery
	})
}

// resumeGroup is how many resumed jobs Start commits at once (two ops
// each, records of a few KiB: a batch of a few hundred KiB).
const resumeGroup = 128

// purgePassMax bounds the jobs one pass of purgeLoop deletes, and so the
// keys it holds in memory (about 60 bytes each).
const purgePassMax = 100_000

// Purge deletes finished (completed or failed) jobs last updated before
// before, in commits of at most 256 records, and returns how many it
// deleted. It reads the index of finished jobs (rt/done/, in the order
// they finished) up to before, so it costs what it deletes, not the job
// history. Unfinished jobs are never purged. While running with
// Options.JobRetention, the engine calls it every Options.PurgeEvery.
func (e *Engine) Purge(ctx context.Context, before time.Time) (int, error) {
	n := 0
	for {
		d, more, err := e.purge(ctx, before, purgePassMax)
		n += d
		if err != nil || !more {
			return n, err
		}
	}
}

// purge is one pass of Purge: it deletes at most limit of the due jobs and
// reports whether more are due.
func (e *Engine) purge(ctx context.Context, before time.Time, limit int) (int, bool, error) {
	cut := fmt.Appendf(nil, "%s%020d/", donePrefix, max(before.UnixNano(), 0))
	var due [][]byte
	more := false
	errCut := errors.New("past the cut")
	err := e.o.Store.Scan([]byte(donePrefix), func(k, _ []byte) error {
		if bytes.Compare(k, cut) >= 0 {
			return errCut
		}
		if len(due) == limit {
			more = true
			return errCut
		}
		due = append(due, bytes.Clone(k)) // k is valid only during the call
		return nil
	})
	if err != nil && !errors.Is(err, errCut) {
		return 0, false, fmt.Errorf("%w: %v", ErrStore, err)
	}
	// Deleting after the scan: a store may not allow commits inside Scan.
	var ops []Op
	n, pending := 0, 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if err := e.o.Store.Commit(ctx, ops); err != nil {
			return fmt.Errorf("%w: purging jobs: %v", ErrStore, err)
		}
		n += pending
		ops, pending = ops[:0], 0
		return nil
	}
	for _, k := range due {
		id := doneID(k)
		ops = append(ops, Op{Key: k, Delete: true})
		v, ok, err := e.o.Store.Get(jobKey(id))
		if err != nil {
			return n, false, fmt.Errorf("%w: %v", ErrStore, err)
		}
		if j, derr := decodeJob(v); ok && derr == nil && finished(j.Status) {
			// The run entry too, should a writer that does not keep the
			// indexes have left one.
			ops = append(ops, Op{Key: jobKey(id), Delete: true}, Op{Key: runKey(id), Delete: true})
			pending++
		}
		if len(ops) >= 256 {
			if err := flush(); err != nil {
				return n, false, err
			}
		}
	}
	err = flush()
	return n, more && err == nil, err
}
