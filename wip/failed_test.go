package wip

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// reopened opens node of p again on a working disk (a restart) and checks
// that it holds every key of acked (committed by commitKeys) and has not
// failed. Closing it is the caller's.
func reopened(t *testing.T, p *pairT, node string, acked []string) *Store {
	t.Helper()
	s := p.open(node, nil)
	for _, k := range acked {
		mustGet(t, s, k, k)
	}
	if st := s.Status(); st.Failed != "" {
		t.Errorf("reopened: Failed = %q", st.Failed)
	}
	return s
}

// walFull returns an injector that fails every WAL write with ENOSPC once
// full is set, as a file system that has filled up does.
func walFull(full *atomic.Bool) errorfs.Injector {
	return errorfs.InjectorFunc(func(op errorfs.Op) error {
		if full.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".log") {
			return fmt.Errorf("write %s: %w", op.Path, syscall.ENOSPC)
		}
		return nil
	})
}

// A primary whose file system fills up fails: the commit that met it gets
// ErrFailed, so does every later one, EventFailed says why (once), Status
// says so, and CommittedLSN is the last durable LSN, so that the peer's
// ack of it (which the daemon's handover waits for) comes. What was
// acknowledged before is on both nodes, and the store, reopened once
// there is room, works again.
func TestPrimaryFailsCleanlyWhenItsDiskIsFull(t *testing.T) {
	var full atomic.Bool
	var ev eventsSeen
	p := newPair(t, Options{PeerAckTimeout: time.Minute})
	a := p.open("a", func(o *Options) {
		o.FS = errorfs.Wrap(vfs.Default, walFull(&full))
		o.Events = ev.add
	})
	b := p.open("b", nil)
	defer b.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peer in sync", inSync(a))
	acked := commitKeys(t, a, 20)
	full.Store(true)
	for i := 0; i < 3; i++ {
		bt := a.NewBatch()
		bt.Set([]byte(fmt.Sprintf("late%d", i)), []byte("x"))
		_, err := a.Commit(context.Background(), bt)
		if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.ENOSPC) && !strings.Contains(err.Error(), "no space left") {
			t.Fatalf("commit %d on a full disk: %v, want ErrFailed naming ENOSPC", i, err)
		}
	}
	st := a.Status()
	if !strings.Contains(st.Failed, "no space left on device") || !strings.Contains(st.Failed, "commit of LSN 21..21") {
		t.Errorf("Status.Failed = %q, want the commit's LSNs and the ENOSPC", st.Failed)
	}
	if strings.Contains(st.Failed, "pebble: pebble:") {
		t.Errorf("Status.Failed = %q: the prefix is doubled", st.Failed)
	}
	if st.FailedStall {
		t.Error("Status.FailedStall for a full disk")
	}
	if st.CommittedLSN != 20 || st.DurableLSN != 20 {
		t.Errorf("committed %d, durable %d; want 20, 20 (the failed group was never acknowledged)", st.CommittedLSN, st.DurableLSN)
	}
	waitFor(t, "the peer's ack of every acknowledged commit", func() bool {
		st := a.Status()
		return st.PeerState == PeerInSync && st.PeerAckedLSN >= st.CommittedLSN
	})
	if got := ev.of(EventFailed); len(got) != 1 || !strings.Contains(got[0].Detail, "no space left on device") || !errors.Is(got[0].Err, ErrFailed) {
		t.Errorf("EventFailed: %+v, want one naming ENOSPC", got)
	}
	for _, k := range acked {
		mustGet(t, b, k, k)
	}
	_ = a.Close()

	// Room again (the operator freed it) and a restart: every
	// acknowledged commit is there and the store commits again.
	full.Store(false)
	b.Close()
	a = reopened(t, p, "a", acked)
	defer a.Close()
	if err := a.Promote(context.Background(), 2, PeerGone()); err != nil {
		t.Fatal(err)
	}
	commitKV(t, a, "after", "x")
}

// A secondary whose disk fills up fails too: it acknowledges nothing more,
// says so, and refuses promotion even when forced (pebble could not
// persist the epoch); the primary goes on alone after peer-ack-timeout.
func TestFailedSecondaryIsNotPromotable(t *testing.T) {
	var full atomic.Bool
	var ev eventsSeen
	p := newPair(t, Options{PeerAckTimeout: 200 * time.Millisecond})
	a := p.open("a", nil)
	defer a.Close()
	b := p.open("b", func(o *Options) {
		o.FS = errorfs.Wrap(vfs.Default, walFull(&full))
		o.Events = ev.add
	})
	defer b.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peer in sync", inSync(a))
	commitKV(t, a, "before", "x")
	full.Store(true)
	lsn := commitKV(t, a, "during", "x") // acknowledged alone, after the timeout
	if st := a.Status(); !st.PeerOutdated || st.PeerAckedLSN >= lsn {
		t.Errorf("a: peer outdated %v, acked %d; want true, below %d", st.PeerOutdated, st.PeerAckedLSN, lsn)
	}
	waitFor(t, "b failed", func() bool { return b.Status().Failed != "" })
	if st := b.Status(); !strings.Contains(st.Failed, "no space left on device") || st.DurableLSN >= lsn {
		t.Errorf("b: Failed %q, durable %d; want ENOSPC, below %d", st.Failed, st.DurableLSN, lsn)
	}
	a.Close() // the primary is gone: b would be asked to take over
	for _, opts := range [][]PromoteOption{{PeerGone()}, {Force()}} {
		if err := b.Promote(context.Background(), 2, opts...); !errors.Is(err, ErrNotPromotable) || !strings.Contains(err.Error(), "no space left on device") {
			t.Errorf("promoting the failed secondary: %v, want ErrNotPromotable naming ENOSPC", err)
		}
	}
	if st := b.Status(); st.Role != Secondary {
		t.Errorf("b is %v after refused promotions", st.Role)
	}
	if got := ev.of(EventFailed); len(got) != 1 {
		t.Errorf("EventFailed %d times (%+v), want once", len(got), got)
	}
}

// PeerCannotAck (the pair's word that the peer's store failed) makes a
// primary go on alone at once rather than after PeerAckTimeout (a minute
// here), and changes nothing while the peer is in sync.
func TestPeerCannotAckGoesAloneAtOnce(t *testing.T) {
	var full atomic.Bool
	p := newPair(t, Options{PeerAckTimeout: time.Minute})
	a := p.open("a", nil)
	defer a.Close()
	b := p.open("b", func(o *Options) { o.FS = errorfs.Wrap(vfs.Default, walFull(&full)) })
	defer b.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peer in sync", inSync(a))
	a.PeerCannotAck("a stale word")
	lsn := commitKV(t, a, "in-sync", "x")
	if st := a.Status(); st.PeerOutdated || st.PeerAckedLSN < lsn {
		t.Fatalf("in sync, after PeerCannotAck: peer outdated %v, acked %d of %d; want the peer's ack", st.PeerOutdated, st.PeerAckedLSN, lsn)
	}

	full.Store(true)
	done := make(chan error, 1)
	go func() {
		bt := a.NewBatch()
		bt.Set([]byte("alone"), []byte("x"))
		_, err := a.Commit(context.Background(), bt)
		done <- err
	}()
	waitFor(t, "b failed", func() bool { return b.Status().Failed != "" })
	waitFor(t, "a waiting for the peer", func() bool { st := a.Status(); return st.PeerState != PeerInSync && st.LagBatches > 0 })
	a.PeerCannotAck("the peer's store has failed")
	// Bounded far below PeerAckTimeout: without the word the commit
	// would wait the whole minute.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("commit after PeerCannotAck: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the commit still waits for a peer the pair says cannot ack")
	}
	if st := a.Status(); !st.PeerOutdated {
		t.Fatal("the peer is not marked outdated")
	}
}
