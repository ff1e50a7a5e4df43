package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/engine"
	"github.com/tandem-ha/tandem/internal/engine/kvtest"
	"github.com/tandem-ha/tandem/internal/engine/testconn"
)

// crashStore is a kvtest store on a crashable in-memory FS that "kills the
// process" at its at-th commit: the commit is made durable (or, with lose,
// written without fsync so the crash drops it), the FS is crash-cloned
// (only synced data survives), and the committing goroutine never returns
// until the test releases it, so the old engine does nothing more, as if
// dead.
type crashStore struct {
	*kvtest.Store
	fs      *vfs.MemFS
	at      int
	lose    bool
	mu      sync.Mutex
	n       int
	clone   *vfs.MemFS
	crashed chan struct{}
	release chan struct{}
}

var errCrashed = errors.New("store crashed")

func (c *crashStore) Commit(ctx context.Context, ops []engine.Op) error {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	if c.at == 0 || n < c.at {
		return c.Store.Commit(ctx, ops)
	}
	if n == c.at {
		c.Store.NoSync = c.lose
		c.Store.Commit(ctx, ops)
		c.clone = c.fs.CrashClone(vfs.CrashCloneCfg{})
		close(c.crashed)
	}
	<-c.release
	return errCrashed
}

func (c *crashStore) commits() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// The acceptance test of issue 7: a job of 5 connector steps (one inside a
// loop of two, one inside try, one retried once) is crashed at every
// checkpoint boundary in turn, both after the commit became durable and
// with the commit lost. After restart it completes; each key's effect
// happened exactly once; a key was called a second time (with the same
// key, answered as a replay) only where its effect happened before the
// crash but its "after" checkpoint did not survive; no step is lost.
func TestCrashAtEveryBoundary(t *testing.T) {
	const trigger = "order-1"
	id := engine.JobID("p", "flow", trigger)
	keys := []string{id + "/first", id + "/each#0/send", id + "/each#1/send", id + "/risky", id + "/final"}

	var doubts []string
	run := func(t *testing.T, at int, lose bool) (commits int) {
		ep := testconn.NewEndpoint()
		reg := &connectors.Registry{}
		testconn.Register(reg, ep)
		fs := vfs.NewCrashableMem()
		st, err := kvtest.Open("db", fs)
		if err != nil {
			t.Fatal(err)
		}
		cs := &crashStore{Store: st, fs: fs, crashed: make(chan struct{}), release: make(chan struct{})}
		r := &rig{t: t, ep: ep, reg: reg, clk: clock.Real()}
		e1 := r.newEngine(cs, nil)
		r.start(e1)
		r.deploy(e1, flow)
		ep.FailNext(id+"/first", 1) // a retry-wait checkpoint is a boundary too
		cs.mu.Lock()
		cs.n, cs.at, cs.lose = 0, at, lose
		cs.mu.Unlock()
		started := make(chan error, 1)
		go func() {
			_, err := e1.StartJob(context.Background(), "p", "flow", trigger, map[string]any{"input": 1})
			started <- err
		}()
		defer func() {
			close(cs.release)
			e1.Stop()
			st.Close()
		}()
		if at == 0 {
			if err := <-started; err != nil {
				t.Fatal(err)
			}
			j := r.wait(e1, id)
			if j.Status != engine.StatusCompleted {
				t.Fatalf("uncrashed run: %+v", j)
			}
			return cs.commits()
		}
		for waiting := true; waiting; {
			select {
			case <-cs.crashed:
				waiting = false
			case err := <-started:
				if err != nil || at == 1 {
					t.Fatalf("StartJob returned %v before the crash", err)
				}
			case <-ctxT(t).Done():
				t.Fatal("no crash")
			}
		}
		effectsBefore := ep.Effects()

		// Restart on what survived the crash.
		st2, err := kvtest.Open("db", cs.clone)
		if err != nil {
			t.Fatal(err)
		}
		defer st2.Close()
		var durable struct {
			Checkpoints int    `json:"checkpoints"`
			Status      string `json:"status"`
			Pending     *struct {
				Key string `json:"key"`
			} `json:"pending"`
		}
		v, existed, err := st2.Get([]byte("rt/job/" + id))
		if err != nil {
			t.Fatal(err)
		}
		inDoubt := ""
		if existed {
			json.Unmarshal(v, &durable)
			if durable.Pending != nil && effectsBefore[durable.Pending.Key] > 0 {
				inDoubt = durable.Pending.Key
				doubts = append(doubts, inDoubt)
			}
		}
		// The crash kept exactly the durable commits: commit `at` carries
		// checkpoint at-1 (the first commit creates the job).
		wantCP := at - 1
		if lose {
			wantCP = at - 2
		}
		if (wantCP < 0) == existed || (existed && durable.Checkpoints != wantCP) {
			t.Fatalf("after the crash: job existed=%v checkpoints=%d, want %d", existed, durable.Checkpoints, wantCP)
		}
		e2 := r.newEngine(st2, func(o *engine.Options) { o.Node = "b" })
		r.start(e2)
		// The starter never saw an acknowledgement: it delivers again.
		if _, err := e2.StartJob(ctxT(t), "p", "flow", trigger, map[string]any{"input": 1}); err != nil {
			t.Fatal(err)
		}
		j := r.wait(e2, id)
		out, _ := j.Output.(map[string]any)
		if j.Status != engine.StatusCompleted || out["total"] != 30 || out["first"] != 2 {
			t.Fatalf("after restart: %+v", j)
		}
		if wantRes := existed && durable.Status != engine.StatusCompleted; j.Resumptions != map[bool]int{true: 1}[wantRes] {
			t.Fatalf("resumptions %d, want 1", j.Resumptions)
		}
		eff := ep.Effects()
		if len(eff) != len(keys) {
			t.Fatalf("effects on %d keys, want %d: %v", len(eff), len(keys), eff)
		}
		ok := map[string]int{}
		replays := map[string]int{}
		for _, c := range ep.Calls() {
			if c.Err == nil {
				ok[c.Key]++
				if c.Replayed {
					replays[c.Key]++
				}
			}
		}
		for _, k := range keys {
			want := 1
			if k == inDoubt {
				want = 2
			}
			if eff[k] != 1 || ok[k] != want || replays[k] != want-1 {
				t.Errorf("key %s: effects %d, successful calls %d (replays %d), want 1, %d (%d)", k, eff[k], ok[k], replays[k], want, want-1)
			}
		}
		return 0
	}

	total := run(t, 0, false)
	// create + (before, retry-wait, after) + 4 x (before, after) + final
	if total != 13 {
		t.Fatalf("an uncrashed job made %d commits, want 13", total)
	}
	for at := 1; at <= total; at++ {
		for _, lose := range []bool{false, true} {
			t.Run(fmt.Sprintf("commit%02d/lost=%v", at, lose), func(t *testing.T) { run(t, at, lose) })
		}
	}
	// Each call's "after" checkpoint, lost once, leaves that call in
	// doubt: the sweep must have exercised the replay path for all five.
	if len(doubts) != len(keys) {
		t.Fatalf("calls in doubt after a crash: %v, want each of %v once", doubts, keys)
	}
}
