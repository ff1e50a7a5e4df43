package wip

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
			a, base, release, holding := heldAckPair(t, Options{PeerAckTimeout: tc.timeout, MaxUnackedGroups: tc.depth})
			n := tc.depth + 1
			errs := commitOneByOne(t, a, base, n, tc.depth)
			if tc.timeout == time.Minute {
				// The committer reports that it holds with depth groups
				// unacked, and the last commit is queued: while it holds,
				// that commit cannot be written.
				waitHeld(t, a, holding, tc.depth, n)
				if got := a.Status().DurableLSN; got != base+uint64(tc.depth) {
					t.Fatalf("with %d groups unacked, durable LSN %d, want %d (held)", tc.depth, got, base+uint64(tc.depth))
				}
				release()
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
	a, base, _, holding := heldAckPair(t, Options{PeerAckTimeout: time.Minute, MaxUnackedGroups: 1})
	errs := commitOneByOne(t, a, base, 2, 1)
	waitHeld(t, a, holding, 1, 2)
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

// heldAckPair opens a pair with o, promotes a, commits one batch in sync,
// and then holds every ack of b until release is called (once at most;
// the test's cleanup calls it too, before the stores close). It returns a,
// the LSN of that batch, release, and a channel that receives the number
// of unacked groups each time a's committer starts to hold its pipeline
// (values that find the channel full are dropped).
func heldAckPair(t *testing.T, o Options) (a *Store, base uint64, release func(), holding <-chan int) {
	t.Helper()
	p := newPair(t, o)
	var gate atomic.Bool
	held := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	hc := make(chan int, 16)
	a = p.open("a", func(o *Options) {
		o.testHolding = func(unacked int) {
			select {
			case hc <- unacked:
			default:
			}
		}
	})
	b := p.open("b", func(o *Options) {
		o.testBeforeAck = func(uint64) {
			if gate.Load() {
				<-held
			}
		}
	})
	t.Cleanup(func() { release(); b.Close(); a.Close() })
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "in sync", inSync(a))
	base = commitKV(t, a, "before", "x")
	gate.Store(true)
	return a, base, release, hc
}

// waitHeld waits until a's committer reports that it holds with unacked
// groups waiting for the peer and a has queued commits in flight in all.
// Both are events, so a working hold passes at once and a broken one (the
// committer never holds) fails here.
func waitHeld(t *testing.T, a *Store, holding <-chan int, unacked, queued int) {
	t.Helper()
	waitFor(t, fmt.Sprint("the committer holding with ", unacked, " groups unacked"), func() bool {
		for {
			select {
			case got := <-holding:
				if got == unacked {
					return true
				}
			default:
				return false
			}
		}
	})
	waitFor(t, fmt.Sprint(queued, " commits in flight"), func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.inflight == queued
	})
}

// commitOneByOne starts n commits on a, one after the other, and waits for
// each of the first durable ones to be locally durable (LSN base+i+1)
// before starting the next. Each commit's result arrives on the channel.
func commitOneByOne(t *testing.T, a *Store, base uint64, n, durable int) <-chan error {
	t.Helper()
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			bt := a.NewBatch()
			bt.Set([]byte(fmt.Sprint("held", i)), []byte("v"))
			_, err := a.Commit(context.Background(), bt)
			errs <- err
		}(i)
		if i < durable {
			waitFor(t, fmt.Sprint("commit ", i, " locally durable"), func() bool { return a.Status().DurableLSN == base+uint64(i)+1 })
		}
	}
	return errs
}
