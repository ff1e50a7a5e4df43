package daemon

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// verifyFirstAfter is how soon after the start the first read-back runs
// (or verify-every, if shorter): a node restarted more often than
// verify-every still verifies.
const verifyFirstAfter = 10 * time.Minute

// verifyJob reads the passive's WIP store back, every block of every level
// (wip.Store.Verify), once every `every` (replication.verify-every). Pebble
// reads a block only when something needs it, so without this a bad block
// on the passive lies unseen until a failover resumes the jobs whose state
// it holds. Corruption found is reported by the store itself (the
// wip-corrupt alarm; the passive resyncs by snapshot); the job records
// each run in the event log. Only on a passive whose store is consistent:
// on the active, the read would compete with the commits, and its
// corruption is met by its own reads and compactions. Run owns it: run
// ends with ctx.
type verifyJob struct {
	every   time.Duration
	store   interface{ Verify() (int64, error) }
	clk     clock.Clock
	log     *zap.Logger
	ev      *eventLog
	passive func() bool
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
func (v *verifyJob) once(now time.Time) time.Duration {
	if !v.passive() {
		return min(v.every, time.Minute)
	}
	points, err := v.store.Verify()
	took := v.clk.Since(now).Round(time.Millisecond)
	if err != nil {
		v.log.Error("WIP store read-back found a fault", zap.Int64("keys", points), zap.Duration("took", took), zap.Error(err))
		v.ev.add(now, "replication", fmt.Sprintf("store read-back failed after %d keys (%v): %v", points, took, err))
		return v.every
	}
	v.log.Info("WIP store read back: no corruption", zap.Int64("keys", points), zap.Duration("took", took))
	v.ev.add(now, "replication", fmt.Sprintf("store read back: %d keys, no corruption (%v)", points, took))
	return v.every
}
