package wip

import (
	"context"
	"fmt"
	"testing"
)

// TestPeerGonePromotesOverAStaleSession: a primary that froze (or lost
// power) leaves its session looking open; when the pair has judged it
// dead, PeerGone closes the session and the in-sync secondary promotes
// with every acknowledged commit.
func TestPeerGonePromotesOverAStaleSession(t *testing.T) {
	p := newPair(t, Options{})
	a, b := p.open("a", nil), p.open("b", nil)
	defer b.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peer in sync", inSync(a))
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
