package wip

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandem-ha/tandem/internal/clock"
)

// TestPeerGonePromotesOverAStaleSession: a primary that froze (or lost
// power) leaves its session looking open; when the pair has judged it
// dead, PeerGone closes the session and the in-sync secondary promotes
// with every acknowledged commit.
func TestPeerGonePromotesOverAStaleSession(t *testing.T) {
	p := newPair(t, Options{})
	a, b := p.synced()
	defer b.Close()
	for i := 0; i < 20; i++ {
		commitKV(t, a, fmt.Sprintf("k%02d", i), "v")
	}
	// a is still up and connected: without PeerGone the veto holds.
	if err := b.Promote(context.Background(), 2); err == nil {
		t.Fatal("promoted while connected to a live primary without PeerGone")
	}
	if err := b.Promote(context.Background(), 2, PeerGone()); err != nil {
		t.Fatalf("PeerGone promotion: %v", err)
	}
	if st := b.Status(); !st.PeerOutdated {
		t.Error("promoted with PeerGone in sync/degrade mode, but the peer is not marked outdated: every commit would wait peer-ack-timeout first")
	}
	a.Close()
	for i := 0; i < 20; i++ {
		mustGet(t, b, fmt.Sprintf("k%02d", i), "v")
	}
	if lsn := commitKV(t, b, "after", "x"); lsn != 21 {
		t.Errorf("first commit of the new primary has LSN %d, want 21", lsn)
	}
}

// A secondary still catching up when its sync primary dies lacks only
// commits that were never acknowledged: PeerGone promotes it. In async mode
// the same gap is lost acknowledged commits, and only Force promotes.
func TestBehindPromotableWithPeerGoneOnlyInSyncMode(t *testing.T) {
	for _, tc := range []struct {
		mode Mode
		ok   bool
	}{{Sync, true}, {Async, false}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			s := openT(t, t.TempDir(), Options{Mode: tc.mode})
			defer s.Close()
			s.mu.Lock()
			s.peerLSN = 40 // the primary was at 40 when it died; this node holds 0
			s.mu.Unlock()
			err := s.Promote(context.Background(), 2, PeerGone())
			if tc.ok && err != nil {
				t.Fatalf("sync mode, behind, PeerGone: %v", err)
			}
			if !tc.ok {
				if !errors.Is(err, ErrNotPromotable) || !strings.Contains(err.Error(), "behind") {
					t.Fatalf("async mode, behind, PeerGone: %v, want a refusal naming 'behind'", err)
				}
				if err := s.Promote(context.Background(), 2, PeerGone(), Force()); err != nil {
					t.Fatalf("forced: %v", err)
				}
			}
		})
	}
}

// TestPeerFollowsKeepsTheOldPrimaryPromotable: a switchover. b is promoted
// while a hands over; with PeerFollows, b's first commit waits for a to
// reconnect as secondary instead of marking it Outdated, so a holds it and
// could take the role back at once. Without PeerFollows a is Outdated.
func TestPeerFollowsKeepsTheOldPrimaryPromotable(t *testing.T) {
	for _, follows := range []bool{true, false} {
		t.Run(fmt.Sprint("follows=", follows), func(t *testing.T) {
			p := newPair(t, Options{})
			a, b := p.synced()
			defer a.Close()
			defer b.Close()
			commitKV(t, a, "before", "v")
			if err := a.Demote(context.Background()); err != nil {
				t.Fatal(err)
			}
			opts := []PromoteOption{PeerGone()}
			if follows {
				opts = append(opts, PeerFollows())
			}
			if err := b.Promote(context.Background(), 2, opts...); err != nil {
				t.Fatal(err)
			}
			commitKV(t, b, "after", "v")
			// Degradations counts the times the peer was marked Outdated
			// (PeerOutdated itself clears once a has caught up, which may
			// already have happened).
			if d := b.Status().Counters.Degradations; (d > 0) == follows {
				t.Fatalf("b marked its peer outdated %d times with PeerFollows %v", d, follows)
			}
			if !follows {
				return
			}
			// Acknowledged in sync mode: durable on a.
			mustGet(t, a, "after", "v")
			if st := a.Status(); st.Outdated {
				t.Fatalf("a is outdated after a handover with PeerFollows: %+v", st)
			}
			b.Close()
			if err := a.Promote(context.Background(), 3, PeerGone()); err != nil {
				t.Fatalf("a taking the role back: %v", err)
			}
		})
	}
}

// TestDemotedStoreDialsAtOnce: a store whose dial loop was in a backoff
// when it was promoted (it had dialled a peer that was not up or not
// primary) dials as soon as it is demoted, not when that backoff ends (up
// to 2 s; seen in the lab as 0.44 s after a switchover, which the new
// primary's commits wait for with PeerFollows). The clock never moves
// here, so only the demotion can end the backoff.
func TestDemotedStoreDialsAtOnce(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	p := newPair(t, Options{Clock: clk})
	core, logs := observer.New(zap.DebugLevel)
	b := p.open("b", func(o *Options) { o.Logger = zap.New(core) })
	defer b.Close()
	attempts := func() int { return logs.FilterMessage("replication session ended").Len() }
	// Nothing listens at a's address: the dial fails, b backs off on the
	// (frozen) clock.
	waitFor(t, "b's first dial", func() bool { return attempts() == 1 })
	if err := b.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Demote(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b dialling again at its demotion, the clock frozen", func() bool { return attempts() >= 2 })
	// Backing off again (nothing listens): Redial, which the pair calls
	// when the peer's heartbeat says it has become active, dials now too.
	n := attempts()
	b.Redial()
	waitFor(t, "b dialling again at Redial, the clock frozen", func() bool { return attempts() > n })
}
