package wip

import (
	"time"

	"github.com/tandem-ha/tandem/internal/latency"
)

// Latencies are the store's latency histograms. Which ones fill depends on
// the role:
//   - Commit (primary): a group of commits from the moment the committer
//     formed it to the moment its writers were released: local durability,
//     and in sync mode, unless the peer is marked Outdated, its durable ack.
//     The time a commit queued before its group formed is not in it.
//   - LocalSync: the node's own durable write. Primary: a group's pebble
//     write with its fsync. Secondary: a received batch, from applying it
//     to its fsync's completion (the passive's disk, as the active's
//     PeerWait sees it).
//   - PeerWait (primary in sync mode, while commits wait for the peer: not
//     once it is marked Outdated): from a group's local durability to the
//     peer's ack of it; 0 when the ack came first. The share of a commit's
//     latency the peer adds. A group released by degrading is not in it
//     (its wait shows in Commit).
type Latencies struct {
	Commit, LocalSync, PeerWait latency.Histogram
}

func (l *Latencies) add(o *Latencies) {
	l.Commit.Add(&o.Commit)
	l.LocalSync.Add(&o.LocalSync)
	l.PeerWait.Add(&o.PeerWait)
}

// recentWindow is the span of Status.RecentLatency: it covers the last one
// to two windows.
const recentWindow = time.Minute

// latencies keeps the histograms since Open and those of the current and
// the previous window. Guarded by Store.mu.
type latencies struct {
	total, cur, prev Latencies
	curStart         time.Time
}

// at returns the window histograms for now, rotating them first when the
// current window is over (a whole window idle clears both).
func (l *latencies) at(now time.Time) *Latencies {
	switch {
	case l.curStart.IsZero():
		l.curStart = now
	case now.Sub(l.curStart) >= 2*recentWindow:
		l.prev, l.cur, l.curStart = Latencies{}, Latencies{}, now
	case now.Sub(l.curStart) >= recentWindow:
		l.prev, l.cur = l.cur, Latencies{}
		l.curStart = l.curStart.Add(recentWindow)
	}
	return &l.cur
}

func (l *latencies) observe(now time.Time, pick func(*Latencies) *latency.Histogram, d time.Duration) {
	pick(&l.total).Observe(d)
	pick(l.at(now)).Observe(d)
}

// recent returns the last one to two windows' histograms.
func (l *latencies) recent(now time.Time) Latencies {
	r := *l.at(now)
	r.add(&l.prev)
	return r
}

func commitHist(l *Latencies) *latency.Histogram    { return &l.Commit }
func localSyncHist(l *Latencies) *latency.Histogram { return &l.LocalSync }
func peerWaitHist(l *Latencies) *latency.Histogram  { return &l.PeerWait }
