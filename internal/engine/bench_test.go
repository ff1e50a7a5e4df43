package engine_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/engine"
	"github.com/tandem-ha/tandem/internal/engine/kvtest"
	"github.com/tandem-ha/tandem/internal/engine/testconn"
	"github.com/tandem-ha/tandem/wip"
)

const benchFlow = `project: bench
connections: {t: {kind: test}}
orchestrations:
  - name: five
    vars: {n: 0}
    steps:
      - id: each
        for-each: "[1, 2, 3, 4, 5]"
        do:
          - {id: call, call: {connection: t, operation: do, params: {i: "item"}, result: r}}
          - {id: add, assign: {n: "n + r.i"}}
`

// BenchmarkRuntime runs b.N jobs of 5 connector steps each (11 checkpoints
// per job, plus the creating commit) on a real pebble store on disk with
// every commit fsynced (the local half of sync mode), 64 jobs at a time,
// and prints the line:
//
//	runtime-bench: jobs_s=N checkpoints_s=N p99_checkpoint_ms=X
func BenchmarkRuntime(b *testing.B) {
	st, err := kvtest.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchRuntime(b, st, "local-fsync")
}

// BenchmarkRuntimeReplicated is the same workload on the WIP store in sync
// mode: a primary and a secondary over loopback TCP, every commit durable
// on both before it returns (what tandemd runs).
func BenchmarkRuntimeReplicated(b *testing.B) {
	benchRuntime(b, replicated(b), "wip-sync-replicated")
}

// replicated returns the primary of a WIP store pair in sync mode over
// loopback TCP, once the secondary is in sync.
func replicated(b *testing.B) engine.Store {
	b.Helper()
	key := []byte("0123456789abcdef0123456789abcdef")
	pa, err := wip.Open(b.TempDir(), wip.Options{NodeID: 1, PairKey: key, ListenAddr: "127.0.0.1:0", Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pa.Close() })
	sb, err := wip.Open(b.TempDir(), wip.Options{NodeID: 2, PairKey: key, PeerAddr: pa.ListenAddr(), Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sb.Close() })
	if err := pa.Promote(context.Background(), 1); err != nil {
		b.Fatal(err)
	}
	for i := 0; pa.Status().PeerState != wip.PeerInSync; i++ {
		if i > 1000 {
			b.Fatal("secondary never in sync")
		}
		clock.Sleep(context.Background(), clock.Real(), 10*time.Millisecond)
	}
	return engine.OnWIP(pa)
}

func benchRuntime(b *testing.B, st engine.Store, mode string) {
	reg := &connectors.Registry{}
	testconn.Register(reg, testconn.NewEndpoint())
	e, err := engine.New(engine.Options{Store: st, Connectors: reg, Clock: clock.Real(), Logger: zap.NewNop(), Node: "a", MaxConcurrentJobs: 64})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer e.Stop()
	if _, err := e.Deploy(ctx, map[string]string{"b.yaml": benchFlow}); err != nil {
		b.Fatal(err)
	}
	_, cp0 := e.CheckpointLatency(0.99)
	b.ResetTimer()
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				id, err := e.StartJob(ctx, "bench", "five", strconv.Itoa(i), nil)
				if err != nil {
					b.Error(err)
					return
				}
				if j, err := e.Wait(ctx, id); err != nil || j.Status != engine.StatusCompleted {
					b.Errorf("job %s: %+v %v", id, j, err)
				}
			}
		}()
	}
	for i := 0; i < b.N; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	secs := b.Elapsed().Seconds()
	p99, cp := e.CheckpointLatency(0.99)
	cps := float64(cp-cp0) / secs
	b.ReportMetric(float64(b.N)/secs, "jobs/s")
	b.ReportMetric(cps, "checkpoints/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99_checkpoint_ms")
	if b.N >= 100 {
		fmt.Printf("runtime-bench: jobs_s=%.0f checkpoints_s=%.0f p99_checkpoint_ms=%.2f (jobs=%d store=%s)\n", float64(b.N)/secs, cps, float64(p99.Microseconds())/1000, b.N, mode)
	}
}

// BenchmarkStartWithHistory times Start (a promotion's runtime start: load
// the deployments, find and resume the unfinished jobs) on a store that
// holds n finished jobs and none unfinished: what a pair's job history
// costs each failover. The records are copies of one real finished job of
// benchFlow under n ids.
//
// index=kept is the usual promotion (the index of unfinished jobs is
// trusted); index=rebuilt drops its mark before each Start, as after a
// term of an older tandemd that did not keep it.
func BenchmarkStartWithHistory(b *testing.B) {
	for _, c := range []struct {
		n       int
		rebuild bool
	}{{0, false}, {10_000, false}, {100_000, false}, {100_000, true}} {
		b.Run(fmt.Sprintf("finished=%d/index=%s", c.n, map[bool]string{false: "kept", true: "rebuilt"}[c.rebuild]), func(b *testing.B) {
			e, st, _ := withHistory(b, c.n)
			ctx := context.Background()
			e.Stop()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := e.Start(ctx); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				e.Stop()
				if c.rebuild {
					if err := st.Commit(ctx, []engine.Op{{Key: []byte("rt/meta/run-index"), Delete: true}}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkPurgeWithHistory times one retention pass over a store holding
// 100,000 finished jobs, none of them due: what the purge costs every
// purge-every while nothing needs deleting.
func BenchmarkPurgeWithHistory(b *testing.B) {
	e, _, now := withHistory(b, 100_000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if d, err := e.Purge(context.Background(), now.Add(-time.Hour)); err != nil || d != 0 {
			b.Fatalf("purged %d, %v; want none due", d, err)
		}
	}
}

// BenchmarkListJobsWithHistory times the job listing (GET /v1/jobs) over
// 100,000 finished jobs (the model job and 99,999 copies: MaxList, the
// most a listing without a limit may hold): all of them (limit 0, every
// record read) and the 100 most recent (tandemctl jobs' default, through
// rt/done/).
func BenchmarkListJobsWithHistory(b *testing.B) {
	e, _, _ := withHistory(b, 99_999)
	for _, limit := range []int{0, 100} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				js, _, err := e.ListJobs("", "", limit)
				if err != nil || (limit > 0 && len(js) != limit) {
					b.Fatalf("%d jobs, %v", len(js), err)
				}
			}
		})
	}
}

// withHistory returns a running engine on a store holding n finished jobs
// (copies of one real record of benchFlow) with their rt/done/ entries,
// as the engine writes them, finished from the returned time on, and the
// store.
func withHistory(b *testing.B, n int) (*engine.Engine, *kvtest.Store, time.Time) {
	b.Helper()
	st, err := kvtest.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	e := benchEngine(b, st, testconn.NewEndpoint())
	ctx := context.Background()
	if _, err := e.Deploy(ctx, map[string]string{"b.yaml": benchFlow}); err != nil {
		b.Fatal(err)
	}
	id, err := e.StartJob(ctx, "bench", "five", "model", nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.Wait(ctx, id); err != nil {
		b.Fatal(err)
	}
	rec, _, err := st.Get([]byte("rt/job/" + id))
	if err != nil {
		b.Fatal(err)
	}
	now := clock.Real().Now()
	var ops []engine.Op
	for i := 0; i < n; i++ {
		jid := fmt.Sprintf("h%023x", i)
		ops = append(ops, engine.Op{Key: []byte("rt/job/" + jid), Value: rec},
			engine.Op{Key: fmt.Appendf(nil, "rt/done/%020d/%s", now.UnixNano()+int64(i), jid), Value: []byte{}})
		if len(ops) == 1000 || i == n-1 {
			if err := st.Commit(ctx, ops); err != nil {
				b.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	return e, st, now
}

// BenchmarkStartWithUnfinished times Start on a store holding 1,000
// unfinished jobs (a backlog behind an endpoint that is down): each
// resumption is committed before its job runs again.
func BenchmarkStartWithUnfinished(b *testing.B) {
	b.Run("store=local-fsync", func(b *testing.B) {
		st, err := kvtest.Open(b.TempDir(), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		benchStartWithUnfinished(b, st)
	})
	b.Run("store=wip-sync-replicated", func(b *testing.B) { benchStartWithUnfinished(b, replicated(b)) })
}

func benchStartWithUnfinished(b *testing.B, st engine.Store) {
	const n = 1000
	ep := testconn.NewEndpoint()
	ep.Block(nil) // every job waits in its call
	defer ep.Release()
	e := benchEngine(b, st, ep)
	ctx := context.Background()
	if _, err := e.Deploy(ctx, map[string]string{"b.yaml": `project: held
connections: {t: {kind: test}}
orchestrations:
  - {name: wait, steps: [{id: a, call: {connection: t, operation: sleep}}]}
`}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := e.StartJob(ctx, "held", "wait", strconv.Itoa(i), nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.Stop(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := e.Start(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if st := e.Status(); st.Running != n {
			b.Fatalf("%d jobs resumed, want %d", st.Running, n)
		}
		e.Stop()
		b.StartTimer()
	}
}

// benchEngine returns a started engine on st with the test connector ep,
// stopped when b ends.
func benchEngine(b *testing.B, st engine.Store, ep *testconn.Endpoint) *engine.Engine {
	b.Helper()
	reg := &connectors.Registry{}
	testconn.Register(reg, ep)
	e, err := engine.New(engine.Options{Store: st, Connectors: reg, Clock: clock.Real(), Logger: zap.NewNop(), Node: "a"})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Stop() })
	return e
}
