package wip

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// A primary whose peer stops acking may go on alone only when the
// fence-peer hook agrees; until then nothing is acknowledged, and a
// demotion answers the waiting commits with ErrUnacknowledged (the frozen
// and replaced active of the chaos run: it must not acknowledge a commit
// its successor never saw).
func TestDegradeAsksFencePeerHook(t *testing.T) {
	var allow atomic.Bool
	a := primaryLosingPeer(t, func() error {
		if allow.Load() {
			return nil
		}
		return errors.New("test: not the current active")
	}, func(a *Store) { commitKV(t, a, "one", "1") })

	// Refused: the commit is not acknowledged.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	wb := a.NewBatch()
	wb.Set([]byte("two"), []byte("2"))
	if _, err := a.Commit(ctx, wb); err == nil {
		t.Fatal("commit acknowledged alone although the hook refused")
	}
	cancel()
	st := a.Status()
	if st.PeerOutdated || st.Counters.Degradations != 0 || st.Counters.GoAloneRefused == 0 {
		t.Fatalf("after refusals: outdated=%v degradations=%d refused=%d", st.PeerOutdated, st.Counters.Degradations, st.Counters.GoAloneRefused)
	}
	if st.AckWaitSince.IsZero() || st.GoAloneRefusal != "test: not the current active" {
		t.Fatalf("after refusals: ack wait since %v, refusal %q; want the waiting group's time and the hook's reason", st.AckWaitSince, st.GoAloneRefusal)
	}

	// Allowed: the next commit goes through alone.
	allow.Store(true)
	commitKV(t, a, "three", "3")
	if st := a.Status(); !st.PeerOutdated || st.Counters.Degradations != 1 {
		t.Fatalf("after allowing: outdated=%v degradations=%d", st.PeerOutdated, st.Counters.Degradations)
	}
	if st := a.Status(); !st.AckWaitSince.IsZero() || st.GoAloneRefusal != "" {
		t.Fatalf("alone: ack wait since %v, refusal %q; want neither", st.AckWaitSince, st.GoAloneRefusal)
	}
}

func TestDemoteFailsCommitsThePeerNeverAcked(t *testing.T) {
	a := primaryLosingPeer(t, func() error { return errors.New("test: fenced") }, nil)
	done := make(chan error, 1)
	go func() {
		wb := a.NewBatch()
		wb.Set([]byte("k"), []byte("v"))
		_, err := a.Commit(context.Background(), wb)
		done <- err
	}()
	waitFor(t, "a refusal", func() bool { return a.Status().Counters.GoAloneRefused > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Demote(ctx); err != nil {
		t.Fatalf("demote with an unacked commit: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrUnacknowledged) {
		t.Fatalf("waiting commit after demote: %v, want ErrUnacknowledged", err)
	}
}

func TestFencedRefusalFailsWaitingCommits(t *testing.T) {
	a := primaryLosingPeer(t, func() error { return fmt.Errorf("%w: test: passive now", ErrFenced) }, nil)
	wb := a.NewBatch()
	wb.Set([]byte("k"), []byte("v"))
	if _, err := a.Commit(context.Background(), wb); !errors.Is(err, ErrUnacknowledged) {
		t.Fatalf("commit while fenced: %v, want ErrUnacknowledged", err)
	}
	if st := a.Status(); st.PeerOutdated || st.Counters.Degradations != 0 {
		t.Fatalf("fenced store went on alone: %+v", st)
	}
}

// primaryLosingPeer returns a primary, its fence-peer hook set to hook,
// whose in-sync secondary was then killed; before runs just before the kill.
func primaryLosingPeer(t *testing.T, hook func() error, before func(a *Store)) *Store {
	t.Helper()
	p := newPair(t, Options{PeerAckTimeout: 100 * time.Millisecond, GoAloneRetry: 20 * time.Millisecond})
	a := p.open("a", func(o *Options) { o.MayGoAlone = hook })
	t.Cleanup(func() { a.Close() })
	b := p.open("b", nil)
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "in sync", inSync(a))
	if before != nil {
		before(a)
	}
	b.kill()
	return a
}
