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

// activeScrubRate bounds the active's scheduled read-back, in bytes of
// keys and values per second: a 1 GiB store in about a minute, beside the
// commits.
const activeScrubRate = 16 << 20

// verifyJob reads the WIP store back once every `every`
// (replication.verify-every), and on any node when the operator asks
// (tandemctl verify). Pebble reads a block only when something needs it,
// so without this a bad block lies unseen until a failover resumes the
// jobs whose state it holds (on the passive) or until the active's store
// is the only copy (the passive lost). On a passive whose store is
// consistent, and on the operator's request, it reads every block of
// every level at full speed (wip.Store.Verify); on the active it reads
// every live key at activeScrubRate (wip.Store.Scrub), so as not to
// compete with the commits. Corruption found is reported by the store
// itself (the wip-corrupt alarm; a passive resyncs by snapshot, an active
// hands over to an in-sync passive); the job records each run in the
// event log. One Verify at a time. Run owns the schedule: run ends with
// ctx, which also ends a scrub.
type verifyJob struct {
	every time.Duration
	store interface {
		Verify() (int64, error)
		Scrub(ctx context.Context, rate int64) (int64, error)
	}
	clk     clock.Clock
	log     *zap.Logger
	ev      *eventLog
	passive func() bool // a passive whose store is consistent
	active  func() bool

	mu  sync.Mutex      // one Verify at a time
	ctx context.Context // run's: ends a scrub
}

func (v *verifyJob) run(ctx context.Context) {
	if v.every <= 0 {
		return
	}
	v.ctx = ctx
	clock.Loop(ctx, v.clk, min(v.every, verifyFirstAfter), v.once)
}

// once reads the store back if this node is a consistent passive or the
// active, and returns the delay to the next turn: verify-every after a
// run, at most a minute while the node is neither (so a node that becomes
// one is read soon after).
func (v *verifyJob) once(time.Time) time.Duration {
	switch {
	case v.passive():
		v.verify("scheduled")
	case v.active():
		v.scrub()
	default:
		return min(v.every, time.Minute)
	}
	return v.every
}

// scrub reads the active's store back at activeScrubRate and records the
// outcome.
func (v *verifyJob) scrub() {
	start := v.clk.Now()
	keys, err := v.store.Scrub(v.ctx, activeScrubRate)
	if v.ctx.Err() != nil {
		return // stopping
	}
	v.record("scheduled, active", start, keys, err)
}

// verify reads the store back and records the outcome.
func (v *verifyJob) verify(why string) api.VerifyResult {
	v.mu.Lock()
	defer v.mu.Unlock()
	start := v.clk.Now()
	keys, err := v.store.Verify()
	return v.record(why, start, keys, err)
}

// record logs a read-back that began at start and puts it in the event
// log.
func (v *verifyJob) record(why string, start time.Time, keys int64, err error) api.VerifyResult {
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
