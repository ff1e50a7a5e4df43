package daemon

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/wip"
)

// goAloneGate is the WIP store's fence-peer hook (wip.Options.MayGoAlone):
// in degrade mode the store acknowledges commits without the peer only
// while this node is the current active according to the pair machine, and
// the driver has run recently enough for that verdict to mean something.
//
// The second condition is the one that matters after a freeze: a process
// thawed after the peer took over wakes its store's timers and its driver
// at the same moment. The store's peer-ack-timeout has long passed, but
// until the driver has seen the gap (ClockJump) and the peer's new epoch,
// the machine still says "active". The gate refuses while the driver's last
// tick is older than staleAfter, so the store waits, the driver fences,
// and the demotion answers the waiting commits with an error instead of an
// acknowledgement the successor never saw (found by `make chaos`).
type goAloneGate struct {
	clk        clock.Clock
	staleAfter time.Duration
	active     atomic.Bool
	role       atomic.Pointer[string]
	tickAt     atomic.Int64 // Unix ns of the driver's last on-time tick
}

func newGoAloneGate(clk clock.Clock, staleAfter time.Duration) *goAloneGate {
	g := &goAloneGate{clk: clk, staleAfter: staleAfter}
	r := "starting"
	g.role.Store(&r)
	return g
}

// set records the machine's role; the driver calls it before carrying out
// a Ready's actions, so a demotion closes the gate before anything blocks.
func (g *goAloneGate) set(active bool, role string) {
	g.active.Store(active)
	g.role.Store(&role)
}

// ticked records an on-time driver turn.
func (g *goAloneGate) ticked(now time.Time) { g.tickAt.Store(now.UnixNano()) }

// check is wip.Options.MayGoAlone.
func (g *goAloneGate) check() error {
	if !g.active.Load() {
		return fmt.Errorf("%w: this node is not the active (%s)", wip.ErrFenced, *g.role.Load())
	}
	if age := g.clk.Now().Sub(time.Unix(0, g.tickAt.Load())); age > g.staleAfter {
		return fmt.Errorf("the pair driver last ran %v ago (frozen or starved?): waiting for its verdict", age.Round(time.Millisecond))
	}
	return nil
}
