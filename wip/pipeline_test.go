package wip

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
)

// TestPipelineHoldsGroupsBeyondMaxUnacked holds the secondary's acks and
// commits one batch at a time: with MaxUnackedGroups = d, the first d
// batches become locally durable while the peer has not acked, and the
// next one is held in the queue (not written) until an ack comes; then
// every commit completes. A degrade (peer-ack-timeout) also releases a
// held pipeline.
func TestPipelineHoldsGroupsBeyondMaxUnacked(t *testing.T) {
	for _, tc := range []struct {
		depth   int
		timeout time.Duration
	}{{1, time.Minute}, {2, time.Minute}, {1, 300 * time.Millisecond}} {
		t.Run(fmt.Sprintf("depth=%d,ack-timeout=%v", tc.depth, tc.timeout), func(t *testing.T) {
			p := newPair(t, Options{PeerAckTimeout: tc.timeout, MaxUnackedGroups: tc.depth})
			var gate atomic.Bool
			release := make(chan struct{})
			a := p.open("a", nil)
			defer a.Close()
			b := p.open("b", func(o *Options) {
				o.testBeforeAck = func(uint64) {
					if gate.Load() {
						<-release
					}
				}
			})
			defer b.Close()
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()
			if err := a.Promote(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "in sync", inSync(a))
			base := commitKV(t, a, "before", "x")
			gate.Store(true)
			n := tc.depth + 1
			errs := make(chan error, n)
			for i := 0; i < n; i++ {
				go func(i int) {
					bt := a.NewBatch()
					bt.Set([]byte(fmt.Sprint("held", i)), []byte("v"))
					_, err := a.Commit(context.Background(), bt)
					errs <- err
				}(i)
				if i < tc.depth {
					waitFor(t, fmt.Sprint("commit ", i, " locally durable"), func() bool { return a.Status().DurableLSN == base+uint64(i)+1 })
				}
			}
			if tc.timeout == time.Minute {
				// The last commit must stay queued. A wait cannot prove a
				// negative; 300 ms is far beyond a local fsync here, and
				// a broken hold fails this check, never a working one.
				clock.Sleep(context.Background(), clock.Real(), 300*time.Millisecond)
				if got := a.Status().DurableLSN; got != base+uint64(tc.depth) {
					t.Fatalf("with %d groups unacked, durable LSN %d, want %d (held)", tc.depth, got, base+uint64(tc.depth))
				}
				close(release)
			}
			for i := 0; i < n; i++ {
				if err := <-errs; err != nil {
					t.Fatalf("commit: %v", err)
				}
			}
			st := a.Status()
			if st.DurableLSN != base+uint64(n) {
				t.Fatalf("durable LSN %d after all commits, want %d", st.DurableLSN, base+uint64(n))
			}
			if tc.timeout != time.Minute && !st.PeerOutdated {
				t.Fatalf("commits completed with the acks held but the peer is not outdated: %+v", st)
			}
		})
	}
}

// TestMaxUnackedGroupsValidated: a negative bound names the field.
func TestMaxUnackedGroupsValidated(t *testing.T) {
	_, err := Open(t.TempDir(), Options{MaxUnackedGroups: -1})
	if err == nil || !contains(err.Error(), "MaxUnackedGroups") {
		t.Fatalf("MaxUnackedGroups -1: %v", err)
	}
}

// TestDemoteFailsCommitsHeldByThePipeline: with the peer's acks held, one
// group waits for the peer and the next commit is held in the queue;
// Demote fails the held commit with ErrNotPrimary at once, while it still
// waits (until its context ends) for the commit the peer has not acked.
func TestDemoteFailsCommitsHeldByThePipeline(t *testing.T) {
	p := newPair(t, Options{PeerAckTimeout: time.Minute, MaxUnackedGroups: 1})
	var gate atomic.Bool
	release := make(chan struct{})
	a := p.open("a", nil)
	defer a.Close()
	b := p.open("b", func(o *Options) {
		o.testBeforeAck = func(uint64) {
			if gate.Load() {
				<-release
			}
		}
	})
	defer b.Close()
	defer close(release)
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "in sync", inSync(a))
	base := commitKV(t, a, "before", "x")
	gate.Store(true)
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func(i int) {
			bt := a.NewBatch()
			bt.Set([]byte(fmt.Sprint("held", i)), []byte("v"))
			_, err := a.Commit(context.Background(), bt)
			errs <- err
		}(i)
		if i == 0 {
			waitFor(t, "first commit locally durable", func() bool { return a.Status().DurableLSN == base+1 })
		}
	}
	waitFor(t, "the second commit queued", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.inflight == 2
	})
	clock.Sleep(context.Background(), clock.Real(), 50*time.Millisecond) // and taken by the held committer, or still in the queue: both are held
	if got := a.Status().DurableLSN; got != base+1 {
		t.Fatalf("second commit not held: durable LSN %d", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	demoted := make(chan struct{})
	go func() { _ = a.Demote(ctx); close(demoted) }()
	var got error
	waitFor(t, "the held commit to fail", func() bool {
		select {
		case got = <-errs:
			return true
		default:
			return false
		}
	})
	if !errors.Is(got, ErrNotPrimary) {
		t.Fatalf("held commit after Demote: %v, want ErrNotPrimary", got)
	}
	select {
	case <-demoted:
		t.Fatal("the held commit failed only once Demote gave up waiting for the peer")
	default: // Demote still waits for the commit the peer has not acked
	}
	t.Logf("held commit: %v", got)
}
