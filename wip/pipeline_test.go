package wip

import (
	"context"
	"fmt"
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
				time.Sleep(300 * time.Millisecond)
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
