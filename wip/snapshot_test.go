package wip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
)

// fillAlone commits n entries of size bytes on an async primary without a peer.
func fillAlone(t *testing.T, a *Store, n, size int) {
	t.Helper()
	for i := 0; i < n; i++ {
		b := a.NewBatch()
		b.Set([]byte(fmt.Sprintf("k%05d", i)), bytes.Repeat([]byte{byte(i)}, size))
		if _, err := a.Commit(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
}

func checkFill(t *testing.T, s *Store, n, size int) {
	t.Helper()
	for i := 0; i < n; i++ {
		v, ok, err := s.Get([]byte(fmt.Sprintf("k%05d", i)))
		if err != nil || !ok || !bytes.Equal(v, bytes.Repeat([]byte{byte(i)}, size)) {
			t.Fatalf("k%05d after resync: ok=%v err=%v len=%d", i, ok, err, len(v))
		}
	}
}

func TestSnapshotWhenBehindTheRetainedLog(t *testing.T) {
	p := newPair(t, Options{Mode: Async, RetainBytes: 16 << 10})
	a := p.open("a", nil)
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	fillAlone(t, a, 300, 1000)
	if st := a.Status(); st.RetainedFirst <= 1 || st.RetainedBytes > 17<<10 {
		t.Fatalf("retention did not prune: %+v", st)
	}
	b := p.open("b", nil)
	defer b.Close()
	waitFor(t, "b resynced", func() bool { return b.Status().DurableLSN == 300 })
	checkFill(t, b, 300, 1000)
	commitKV(t, a, "after", "x")
	waitFor(t, "streaming after snapshot", func() bool { return b.Status().DurableLSN == 301 })
	st := b.Status()
	if st.Counters.Snapshots != 1 || st.Inconsistent || st.Epoch != 1 {
		t.Fatalf("b after snapshot: %+v", st)
	}
}

// TestI5SnapshotInterruptedRestartsCleanly interrupts the snapshot after
// chunk k (k = 1, 2, 3), restarts the receiver, and checks it is
// Inconsistent and unpromotable until a fresh snapshot completes.
func TestI5SnapshotInterruptedRestartsCleanly(t *testing.T) {
	p := newPair(t, Options{Mode: Async, RetainBytes: 64 << 10})
	a := p.open("a", nil)
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	defer func(old int) { snapChunkBytes = old }(snapChunkBytes)
	snapChunkBytes = 32 << 10
	const n, size = 200, 1 << 10 // about 200 KiB: seven chunks
	fillAlone(t, a, n, size)
	for _, k := range []int{1, 4, 7} {
		t.Run(fmt.Sprint("after-chunk-", k), func(t *testing.T) {
			var cut atomic.Int32
			b := p.open("b", func(o *Options) {
				o.testSnapChunk = func(c int) error {
					if c == k {
						cut.Add(1)
						return errors.New("test: snapshot cut")
					}
					return nil
				}
			})
			waitFor(t, "the cut", func() bool { return cut.Load() > 0 })
			if err := b.Promote(context.Background(), 9); !errors.Is(err, ErrNotPromotable) {
				t.Fatalf("promote mid-snapshot: %v", err)
			}
			b.Close()
			b = p.open("b", func(o *Options) { o.PeerAddr = "" })
			st := b.Status()
			if !st.Inconsistent {
				t.Fatalf("reopened after a cut snapshot: %+v", st)
			}
			if err := b.Promote(context.Background(), 9); !errors.Is(err, ErrNotPromotable) || !contains(err.Error(), "inconsistent") {
				t.Fatalf("promote of an inconsistent store: %v", err)
			}
			b.Close()
			b = p.open("b", nil)
			defer b.Close()
			waitFor(t, "resync", func() bool { st := b.Status(); return st.DurableLSN == n && !st.Inconsistent })
			checkFill(t, b, n, size)
			// Next round starts from an empty secondary again.
			b.Close()
			if err := removeAll(p.dirB); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func removeAll(dir string) error { return osRemoveAll(dir) }

var osRemoveAll = os.RemoveAll
