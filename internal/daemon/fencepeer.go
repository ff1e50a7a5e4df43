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

// storeEvents turns the WIP store's events into the operator's event log
// (tandemctl status, the console) and raises the I4 alarm when a losing
// suffix was quarantined: the alarm names the file and stays until the
// daemon restarts, after the operator has dealt with it (the file holds
// a header line and one JSON line per lost batch, for replay by hand).
// Rejected frames are counted in the status, not logged here: a peer or
// an attacker sending garbage must not flood the event log.
func storeEvents(ev *eventLog, clk clock.Clock) func(wip.Event) {
	return func(e wip.Event) {
		now := clk.Now()
		text := e.Kind.String()
		if e.Detail != "" {
			text += ": " + e.Detail
		}
		switch e.Kind {
		case wip.EventRejected:
			return
		case wip.EventDiverged:
			ev.raise(now, "wip-quarantine", "critical", fmt.Sprintf("histories diverged (%s); this node's losing commits are in %s", e.Detail, e.File))
			text += "; quarantined to " + e.File
		}
		ev.add(now, "replication", text)
	}
}
