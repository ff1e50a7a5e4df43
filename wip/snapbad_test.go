package wip

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestSnapshotOfAnUnreadableStoreFails: the primary's store has a block
// it cannot read, and the peer needs a snapshot. The snapshot's iterator
// ends at the bad block; the snapshot must fail there rather than end as
// if the keys did (the peer would then hold part of the store, consistent
// and promotable). The peer stays Inconsistent and not promotable, holds
// none of the partial copy, and says why. Its next requests are refused
// at once, without another read of the store, while the corruption
// report stands.
func TestSnapshotOfAnUnreadableStoreFails(t *testing.T) {
	p := newPair(t, Options{Mode: Async, RetainBytes: 16 << 10})
	a := p.open("a", nil)
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	fillAlone(t, a, n, 1000)
	corruptLargestTable(t, a, p.dirA, 0.5)
	a = p.open("a", nil)
	defer a.Close()
	if err := a.Promote(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	b := p.open("b", nil)
	defer b.Close()
	waitFor(t, "a snapshot refused, or one taken", func() bool {
		return strings.Contains(b.Status().LastError, "does not try again") || b.Status().DurableLSN > 0
	})
	sessions := a.Status().Counters.Sessions
	waitFor(t, "the peer refused again", func() bool {
		return strings.Contains(b.Status().LastError, "does not try again") && a.snapRefusalCount() >= 2
	})
	st := b.Status()
	if !st.Inconsistent || st.DurableLSN != 0 {
		t.Fatalf("b after snapshots of a store with a bad block: inconsistent %v, durable LSN %d; want inconsistent, 0", st.Inconsistent, st.DurableLSN)
	}
	keys := 0
	if err := b.Scan([]byte("k"), func(k, v []byte) error { keys++; return nil }); err != nil || keys != 0 {
		t.Fatalf("b holds %d keys of the partial snapshots (%v)", keys, err)
	}
	if err := b.Promote(context.Background(), 3, PeerGone()); !errors.Is(err, ErrNotPromotable) {
		t.Fatalf("promote of b: %v, want ErrNotPromotable", err)
	}
	c := a.Status().Corruption
	if !strings.Contains(c, ".sst") {
		t.Fatalf("a's corruption %q names no table", c)
	}
	// b is told why: the failure (naming the corruption), then the
	// refusals; a read its store for one snapshot only.
	if e := b.Status().LastError; !strings.Contains(e, "cannot send a complete snapshot") || !strings.Contains(e, c) {
		t.Fatalf("b's last error %q does not say that a cannot send a snapshot of a store with %q", e, c)
	}
	if st := a.Status(); st.Counters.Snapshots != 1 || st.Counters.Sessions != sessions {
		t.Fatalf("a began %d snapshots and %d sessions (%d before the refusals); want 1 and no session for a refused request", st.Counters.Snapshots, st.Counters.Sessions, sessions)
	}
}
