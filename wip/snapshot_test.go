package wip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
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

// TestSnapshotCrashAndIOErrors puts the receiving side of a snapshot on a
// crashable in-memory file system that fails the i-th write to the
// snapshot's sstables, and cuts the power in the middle of the snapshot
// (CrashClone keeping unsynced data at random) and at the moment it reports
// completion (only synced data kept). A store reopened after a mid-snapshot cut is Inconsistent and
// not promotable; one cut at completion holds every pair, because the
// tables are synced before they are ingested; both resync when the peer is
// back, and no sstable of the snapshot is left behind.
func TestSnapshotCrashAndIOErrors(t *testing.T) {
	defer func(c int, b uint64) { snapChunkBytes, snapTableBytes = c, b }(snapChunkBytes, snapTableBytes)
	snapChunkBytes, snapTableBytes = 16<<10, 4<<10 // ~13 chunks; the values compress: ~50 tables
	p := newPair(t, Options{Mode: Async, RetainBytes: 32 << 10})
	a := p.open("a", nil)
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	const n, size = 200, 1 << 10
	fillAlone(t, a, n, size)
	injected := 0
	for trial := 0; trial < 8; trial++ {
		t.Run(fmt.Sprint(trial), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(trial), 7))
			mem := vfs.NewCrashableMem()
			failAt := int32(trial * 31) // a snapshot makes ~250 write operations
			var writes, hits atomic.Int32
			efs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
				if op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.Contains(op.Path, snapTmpDir) && strings.HasSuffix(op.Path, ".sst") && writes.Add(1)-1 == failAt {
					hits.Add(1)
					return errorfs.ErrInjected
				}
				return nil
			}))
			cutAt := 1 + rng.IntN(12)
			var mu sync.Mutex
			var midCut, doneCut *vfs.MemFS
			b := p.open("b", func(o *Options) {
				o.FS = efs
				o.testSnapChunk = func(c int) error {
					mu.Lock()
					defer mu.Unlock()
					if c == cutAt && midCut == nil {
						midCut = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rand.New(rand.NewPCG(uint64(trial), 1))})
					}
					return nil
				}
				o.Events = func(e Event) {
					if e.Kind == EventSnapshotDone {
						mu.Lock()
						doneCut = mem.CrashClone(vfs.CrashCloneCfg{}) // only what was synced
						mu.Unlock()
					}
				}
			})
			waitFor(t, "b resynced", func() bool { st := b.Status(); return st.DurableLSN == n && !st.Inconsistent })
			checkFill(t, b, n, size)
			b.Close()
			injected += int(hits.Load())
			mu.Lock()
			defer mu.Unlock()
			if midCut == nil || doneCut == nil {
				t.Fatalf("cuts not taken: mid %v, done %v", midCut != nil, doneCut != nil)
			}
			// Cut mid-snapshot: Inconsistent, unpromotable, then resyncs.
			s := p.open("b", func(o *Options) { o.FS = midCut; o.PeerAddr = "" })
			if st := s.Status(); !st.Inconsistent {
				t.Fatalf("cut after chunk %d: not Inconsistent: %+v", cutAt, st)
			}
			if err := s.Promote(context.Background(), 9); !errors.Is(err, ErrNotPromotable) {
				t.Fatalf("promote after a cut snapshot: %v", err)
			}
			s.Close()
			s = p.open("b", func(o *Options) { o.FS = midCut })
			waitFor(t, "resync after the cut", func() bool { st := s.Status(); return st.DurableLSN == n && !st.Inconsistent })
			checkFill(t, s, n, size)
			s.Close()
			// Cut as completion is reported: everything is there.
			s = p.open("b", func(o *Options) { o.FS = doneCut; o.PeerAddr = "" })
			if st := s.Status(); st.Inconsistent || st.DurableLSN != n {
				t.Fatalf("cut at completion: %+v", st)
			}
			checkFill(t, s, n, size)
			s.Close()
			for _, fs := range []vfs.FS{mem, midCut, doneCut} {
				if _, err := fs.Stat(fs.PathJoin(p.dirB, snapTmpDir)); !oserror.IsNotExist(err) {
					t.Fatalf("%s left behind: %v", snapTmpDir, err)
				}
			}
		})
	}
	t.Logf("%d injected write errors in the snapshot's sstables", injected)
	if injected == 0 {
		t.Fatal("no injected error hit the snapshot: the sweep tests nothing")
	}
}

// TestSnapshotKeysOutOfOrderRejected: the receiver writes pairs straight
// into sstables, so a stream whose keys do not ascend is refused, naming
// both keys, and nothing reaches the store.
func TestSnapshotKeysOutOfOrderRejected(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer s.Close()
	si, err := s.newSnapIngest()
	if err != nil {
		t.Fatal(err)
	}
	defer si.abort()
	if err := si.add([]byte("b"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"b", "a"} {
		err := si.add([]byte(k), []byte("2"))
		if !errors.Is(err, ErrFrameMalformed) || !contains(err.Error(), `"u/b"`) {
			t.Fatalf("key %q after %q: %v", k, "b", err)
		}
	}
	if _, ok, _ := s.Get([]byte("b")); ok {
		t.Fatal("a refused snapshot reached the store")
	}
}

// TestSnapshotProgressOnBothSides: while a snapshot runs, the receiver
// shows its progress (SnapshotPercent) and so does the primary that sends
// it (PeerSnapshotPercent, its peer in state snapshot); once the peer is
// in sync the primary shows none. The receiver is held at its fourth
// chunk, and the store (32 MiB of random values, flushed so that its
// estimated size is on disk) is larger than the loopback's socket buffers,
// so the sender is held part way.
func TestSnapshotProgressOnBothSides(t *testing.T) {
	p := newPair(t, Options{Mode: Async, RetainBytes: 64 << 10})
	a := p.primary(nil)
	defer func(old int) { snapChunkBytes = old }(snapChunkBytes)
	snapChunkBytes = 64 << 10
	rng := rand.New(rand.NewPCG(7, 8))
	val := make([]byte, 256<<10)
	for i := 0; i < 128; i++ {
		for j := range val {
			val[j] = byte(rng.Uint32())
		}
		b := a.NewBatch()
		b.Set([]byte(fmt.Sprintf("k%05d", i)), val)
		if _, err := a.Commit(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.db.Flush(); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var once sync.Once
	var held atomic.Bool
	b := p.open("b", func(o *Options) {
		o.testSnapChunk = func(c int) error {
			if c == 4 {
				held.Store(true)
				<-release
			}
			return nil
		}
	})
	defer b.Close()
	defer once.Do(func() { close(release) }) // before Close: a failure must not leave the receiver held
	waitFor(t, "the receiver held at its fourth chunk", held.Load)
	waitFor(t, "the primary's progress", func() bool { return a.Status().PeerSnapshotPercent > 0 })
	if st := a.Status(); st.PeerState != PeerSnapshot || st.PeerSnapshotPercent >= 99.9 || st.SnapshotPercent != 0 {
		t.Fatalf("the sending primary: peer %v, peer snapshot %.1f %%, own snapshot %.1f %%; want part of the peer's snapshot", st.PeerState, st.PeerSnapshotPercent, st.SnapshotPercent)
	}
	if st := b.Status(); !st.Inconsistent || st.SnapshotPercent <= 0 || st.SnapshotPercent >= 5 || st.PeerSnapshotPercent != 0 {
		t.Fatalf("the receiver held after three chunks of 512: inconsistent %v, snapshot %.2f %%, peer snapshot %.1f %%", st.Inconsistent, st.SnapshotPercent, st.PeerSnapshotPercent)
	}
	once.Do(func() { close(release) })
	waitFor(t, "the peer in sync", inSync(a))
	waitFor(t, "b resynced", func() bool { st := b.Status(); return st.DurableLSN == 128 && !st.Inconsistent })
	if st := a.Status(); st.PeerSnapshotPercent != 0 {
		t.Fatalf("in sync, the primary still shows a snapshot at %.1f %%", st.PeerSnapshotPercent)
	}
	for i := 0; i < 128; i++ {
		va, _, _ := a.Get([]byte(fmt.Sprintf("k%05d", i)))
		vb, ok, err := b.Get([]byte(fmt.Sprintf("k%05d", i)))
		if err != nil || !ok || !bytes.Equal(va, vb) {
			t.Fatalf("k%05d on b after the snapshot: ok=%v err=%v", i, ok, err)
		}
	}
}
