package wip

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/latency"
)

// The recent histograms cover the last one to two windows; the totals keep
// everything.
func TestRecentLatencyWindows(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var l latencies
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	l.observe(at(0), commitHist, time.Millisecond)
	l.observe(at(30*time.Second), commitHist, time.Millisecond)
	l.observe(at(30*time.Second), peerWaitHist, time.Millisecond)
	steps := []struct {
		at                       time.Duration
		observe                  bool
		recentCommit, recentPeer uint64 // recent Commit and PeerWait counts after the step
	}{
		{59 * time.Second, false, 2, 1},
		{70 * time.Second, true, 3, 1},   // window 2 begins at 60 s; window 1 is the previous
		{119 * time.Second, false, 3, 1}, // still windows 1 and 2
		{121 * time.Second, false, 1, 0}, // window 3: window 1 is out
		{250 * time.Second, false, 0, 0}, // two windows idle: nothing recent
		{251 * time.Second, true, 1, 0},
	}
	for _, s := range steps {
		if s.observe {
			l.observe(at(s.at), commitHist, 2*time.Millisecond)
		}
		r := l.recent(at(s.at))
		if r.Commit.Count != s.recentCommit || r.PeerWait.Count != s.recentPeer {
			t.Errorf("at %v: recent commit %d, peer wait %d; want %d, %d", s.at, r.Commit.Count, r.PeerWait.Count, s.recentCommit, s.recentPeer)
		}
	}
	if l.total.Commit.Count != 4 || l.total.PeerWait.Count != 1 {
		t.Errorf("totals: commit %d, peer wait %d; want 4, 1", l.total.Commit.Count, l.total.PeerWait.Count)
	}
}

// A sync pair fills the primary's three histograms and the secondary's
// LocalSync, one observation per group; a commit held for an absent peer
// until it degraded shows that wait in Commit and none in PeerWait.
func TestLatencyHistogramsFollowCommits(t *testing.T) {
	const timeout = 300 * time.Millisecond
	p := newPair(t, Options{PeerAckTimeout: timeout})
	a, b := p.synced()
	defer a.Close()
	before, bBefore := a.Status(), b.Status()
	const n = 40
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("k%02d", i)
		commitKV(t, a, k, k) // one writer: one group per commit
	}
	st, bst := a.Status(), b.Status()
	groups := st.Counters.Groups - before.Counters.Groups
	if groups != n {
		t.Fatalf("%d groups for %d sequential commits", groups, n)
	}
	for _, h := range []struct {
		name              string
		now, then, recent latency.Histogram
	}{
		{"commit", st.Latency.Commit, before.Latency.Commit, st.RecentLatency.Commit},
		{"local sync", st.Latency.LocalSync, before.Latency.LocalSync, st.RecentLatency.LocalSync},
		{"peer wait", st.Latency.PeerWait, before.Latency.PeerWait, st.RecentLatency.PeerWait},
	} {
		if got := h.now.Count - h.then.Count; got != n {
			t.Errorf("primary %s: %d observations for %d groups", h.name, got, n)
		}
		if h.recent.Count != h.now.Count {
			t.Errorf("primary %s: %d recent observations, %d since open (all within the minute)", h.name, h.recent.Count, h.now.Count)
		}
	}
	// Each group's commit spans its local sync and its peer wait.
	if st.Latency.Commit.Sum < st.Latency.LocalSync.Sum || st.Latency.Commit.Sum < st.Latency.PeerWait.Sum || st.Latency.LocalSync.Sum <= 0 {
		t.Errorf("sums: commit %v, local sync %v, peer wait %v", st.Latency.Commit.Sum, st.Latency.LocalSync.Sum, st.Latency.PeerWait.Sum)
	}
	applied := bst.Latency.LocalSync.Count - bBefore.Latency.LocalSync.Count
	if applied == 0 || applied > n {
		t.Errorf("secondary: %d local syncs for %d groups received", applied, n)
	}
	if bst.Latency.Commit.Count != 0 || bst.Latency.PeerWait.Count != 0 {
		t.Errorf("secondary filled primary histograms: %+v", bst.Latency)
	}

	// The peer goes away: the next commit waits PeerAckTimeout, then the
	// primary degrades and releases it.
	b.Close()
	waitFor(t, "the session to end", func() bool { return a.Status().PeerState != PeerInSync })
	before = a.Status()
	commitKV(t, a, "alone", "x")
	st = a.Status()
	if st.Latency.PeerWait.Count != before.Latency.PeerWait.Count {
		t.Errorf("a group released without the peer counted as a peer wait")
	}
	var slow uint64
	for i, c := range st.Latency.Commit.Counts {
		if i > 0 && latency.Bounds[i-1] >= timeout/2 {
			slow += c - before.Latency.Commit.Counts[i]
		}
	}
	if st.Latency.Commit.Count-before.Latency.Commit.Count != 1 || slow != 1 {
		t.Errorf("the commit held for the peer: %d new observations, %d of them above %v; want 1, 1 (states: %v, outdated %v)",
			st.Latency.Commit.Count-before.Latency.Commit.Count, slow, timeout/2, st.PeerState, st.PeerOutdated)
	}
}

// A slow passive disk (every WAL sync of b's store takes 30 ms more) shows
// in b's LocalSync and in a's Commit: each of them holds such a sync. Only
// these lower bounds are asserted (they follow from the delay, whatever the
// machine); where the rest of a's time went is what the histograms tell an
// operator, and the test logs it.
func TestSlowPassiveDiskShowsInLatency(t *testing.T) {
	const delay = 30 * time.Millisecond
	var slow atomic.Bool
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch op.Kind {
		case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
			if slow.Load() && strings.HasSuffix(op.Path, ".log") {
				clock.Sleep(context.Background(), clock.Real(), delay)
			}
		}
		return nil
	})
	p := newPair(t, Options{PeerAckTimeout: time.Minute})
	a := p.open("a", nil)
	defer a.Close()
	b := p.open("b", func(o *Options) { o.FS = errorfs.Wrap(vfs.Default, inj) })
	defer b.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peer in sync", inSync(a))
	slow.Store(true)
	before, bBefore := a.Status().Latency, b.Status().Latency
	const n = 10
	for i := 0; i < n; i++ {
		commitKV(t, a, fmt.Sprintf("k%02d", i), "v")
	}
	after, bAfter := a.Status().Latency, b.Status().Latency
	// Observations in buckets whose upper bound is below the delay.
	fast := func(h0, h1 latency.Histogram) (below, all uint64) {
		for i, bound := range latency.Bounds {
			if bound < delay {
				below += h1.Counts[i] - h0.Counts[i]
			}
		}
		return below, h1.Count - h0.Count
	}
	if below, all := fast(bBefore.LocalSync, bAfter.LocalSync); all == 0 || below != 0 {
		t.Errorf("b's local syncs: %d of %d below %v, want none of at least one", below, all, delay)
	}
	if below, all := fast(before.Commit, after.Commit); all != n || below != 0 {
		t.Errorf("a's commits: %d of %d below %v, want none of %d", below, all, delay, n)
	}
	mean := func(h0, h1 latency.Histogram) time.Duration {
		return (h1.Sum - h0.Sum) / time.Duration(max(1, h1.Count-h0.Count))
	}
	t.Logf("a: commit %v, local sync %v, peer wait %v (means); b: local sync %v",
		mean(before.Commit, after.Commit), mean(before.LocalSync, after.LocalSync),
		mean(before.PeerWait, after.PeerWait), mean(bBefore.LocalSync, bAfter.LocalSync))
}
