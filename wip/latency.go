package wip

import (
	"time"
)

// LatencyBuckets is the number of buckets of a Histogram: one per bound in
// LatencyBounds, and one for what lies above the last bound.
const LatencyBuckets = 19

// LatencyBounds are the upper bounds (inclusive) of the latency histograms'
// buckets: 50 µs, doubling up to 6.55 s. Doubling keeps any quantile read
// from a histogram within a factor of two of the truth, across the range
// from a fast local fsync to a peer-ack-timeout.
var LatencyBounds = func() [LatencyBuckets - 1]time.Duration {
	var b [LatencyBuckets - 1]time.Duration
	d := 50 * time.Microsecond
	for i := range b {
		b[i] = d
		d *= 2
	}
	return b
}()

// Histogram counts durations into the LatencyBounds buckets. It is a value:
// a copy is a snapshot.
type Histogram struct {
	// Counts[i] is the number of durations d with LatencyBounds[i-1] < d <=
	// LatencyBounds[i]; the last bucket counts those above every bound.
	Counts [LatencyBuckets]uint64
	Count  uint64
	Sum    time.Duration
}

func (h *Histogram) observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(LatencyBounds) && d > LatencyBounds[i] {
		i++
	}
	h.Counts[i]++
	h.Count++
	h.Sum += d
}

func (h *Histogram) add(o *Histogram) {
	for i := range h.Counts {
		h.Counts[i] += o.Counts[i]
	}
	h.Count += o.Count
	h.Sum += o.Sum
}

// Quantile returns the upper bound of the bucket that holds the q-quantile
// (0 < q <= 1): the true quantile is at most that, and above half of it
// (except in the first bucket). It returns 0 for an empty histogram and -1
// when the quantile lies above the last bound.
func (h Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	rank := uint64(q*float64(h.Count) + 0.999999)
	rank = min(max(rank, 1), h.Count)
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			if i == len(LatencyBounds) {
				return -1
			}
			return LatencyBounds[i]
		}
	}
	return -1
}

// Latencies are the store's latency histograms. Which ones fill depends on
// the role:
//   - Commit (primary): a group of commits from the moment the committer
//     formed it to the moment its writers were released: local durability,
//     and in sync mode with the peer in sync, the peer's durable ack too.
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
	Commit, LocalSync, PeerWait Histogram
}

func (l *Latencies) add(o *Latencies) {
	l.Commit.add(&o.Commit)
	l.LocalSync.add(&o.LocalSync)
	l.PeerWait.add(&o.PeerWait)
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

func (l *latencies) observe(now time.Time, pick func(*Latencies) *Histogram, d time.Duration) {
	pick(&l.total).observe(d)
	pick(l.at(now)).observe(d)
}

// recent returns the last one to two windows' histograms.
func (l *latencies) recent(now time.Time) Latencies {
	r := *l.at(now)
	r.add(&l.prev)
	return r
}

func commitHist(l *Latencies) *Histogram    { return &l.Commit }
func localSyncHist(l *Latencies) *Histogram { return &l.LocalSync }
func peerWaitHist(l *Latencies) *Histogram  { return &l.PeerWait }
