package daemon

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
)

// verifyFirstAfter is how soon after the start the first read-back runs
// (or verify-every, if shorter): a node restarted more often than
// verify-every still verifies.
const verifyFirstAfter = 10 * time.Minute

// verifyJob reads the WIP store back, every block of every level
// (wip.Store.Verify): on the passive, once every `every`
// (replication.verify-every), and on any node when the operator asks
// (tandemctl verify). Pebble reads a block only when something needs it,
// so without this a bad block on the passive lies unseen until a failover
// resumes the jobs whose state it holds. Corruption found is reported by
// the store itself (the wip-corrupt alarm; a passive resyncs by snapshot,
// an active hands over to an in-sync passive); the job records each run
// in the event log. The schedule runs only on a passive whose store is
// consistent: on the active the read competes with the commits, and its
// corruption is met by its own reads and compactions. One read-back at a
// time. Run owns the schedule: run ends with ctx.
type verifyJob struct {
	every   time.Duration
	store   interface{ Verify() (int64, error) }
	clk     clock.Clock
	log     *zap.Logger
	ev      *eventLog
	passive func() bool

	mu sync.Mutex // one read-back at a time
}

func (v *verifyJob) run(ctx context.Context) {
	if v.every <= 0 {
		return
	}
	clock.Loop(ctx, v.clk, min(v.every, verifyFirstAfter), v.once)
}

// once verifies if this node is a consistent passive, and returns the
// delay to the next turn: verify-every after a run, at most a minute
// while the node is not passive (so a node that becomes passive is
// verified soon after).
func (v *verifyJob) once(time.Time) time.Duration {
	if !v.passive() {
		return min(v.every, time.Minute)
	}
	v.verify("scheduled")
	return v.every
}

// verify reads the store back and records the outcome.
func (v *verifyJob) verify(why string) api.VerifyResult {
	v.mu.Lock()
	defer v.mu.Unlock()
	start := v.clk.Now()
	keys, err := v.store.Verify()
	r := api.VerifyResult{Keys: keys, Took: v.clk.Since(start).Round(time.Millisecond)}
	if err != nil {
		r.Fault = err.Error()
		v.log.Error("WIP store read-back found a fault", zap.String("why", why), zap.Int64("keys", keys), zap.Duration("took", r.Took), zap.Error(err))
		v.ev.add(start, "replication", fmt.Sprintf("store read-back (%s) failed (%v): %v", why, r.Took, err))
		return r
	}
	v.log.Info("WIP store read back: no corruption", zap.String("why", why), zap.Int64("keys", keys), zap.Duration("took", r.Took))
	v.ev.add(start, "replication", fmt.Sprintf("store read back (%s): %d keys, no corruption (%v)", why, keys, r.Took))
	return r
}

func (v *verifyJob) register(srv *api.Server) {
	srv.Handle("POST /v1/admin/verify", func(w http.ResponseWriter, r *http.Request) {
		if err := api.DecodeBody(r, &struct{}{}); err != nil {
			srv.Reply(w, r, nil, err)
			return
		}
		// A fault is the answer, not a failure of the request.
		srv.Reply(w, r, v.verify("operator"), nil)
	})
}
