package wip

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/tandem-ha/tandem/internal/clock"
)

// fakeCompactDB is pebble's side of a CompactionScheduler: allowed
// compactions at once, waiting ones to start (Schedule starts one).
type fakeCompactDB struct {
	mu      sync.Mutex
	allowed int
	waiting int
	started int
}

func (f *fakeCompactDB) GetAllowedWithoutPermission() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.allowed
}

func (f *fakeCompactDB) GetWaitingCompaction() (bool, pebble.WaitingCompaction) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting > 0, pebble.WaitingCompaction{}
}

func (f *fakeCompactDB) Schedule(pebble.CompactionGrantHandle) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.waiting == 0 {
		return false
	}
	f.waiting--
	f.started++
	return true
}

func (f *fakeCompactDB) set(waiting int) {
	f.mu.Lock()
	f.waiting = waiting
	f.mu.Unlock()
}

func (f *fakeCompactDB) counts() (waiting, started int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting, f.started
}

// The pacer grants compactions up to pebble's limit, starts a waiting one
// when another ends, and on its own every 100 ms; after a failed
// compaction it grants none for 50 ms, doubling to 1 s while they fail,
// on the store's clock; a success or a cancellation does not hold.
// Unregister stops its goroutine (also when it never started).
func TestCompactionPacer(t *testing.T) {
	start := time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)
	clk := clock.NewManual(start)
	p := newCompactionPacer(clk)
	db := &fakeCompactDB{allowed: 2}
	p.Register(2, db)
	defer p.Unregister()

	try := func() bool {
		t.Helper()
		ok, h := p.TrySchedule()
		if ok != (h != nil) {
			t.Fatalf("TrySchedule: %t with handle %v", ok, h)
		}
		return ok
	}
	if !try() || !try() {
		t.Fatal("refused within the limit")
	}
	if try() {
		t.Fatal("granted over the limit")
	}
	// One ends: the waiting one starts at once, in Done.
	db.set(1)
	p.Done()
	if w, s := db.counts(); w != 0 || s != 1 {
		t.Fatalf("after Done: %d waiting, %d started; want 0, 1", w, s)
	}

	// Failures hold the grants: 50 ms, 100 ms, ... 1 s, 1 s.
	p.Done()
	p.Done() // none runs now
	for i, hold := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second} {
		p.ended(errors.New("read 000016.sst: input/output error"))
		clk.Advance(hold - time.Millisecond)
		if try() {
			t.Fatalf("failure %d: granted %v after it, want held %v", i+1, hold-time.Millisecond, hold)
		}
		clk.Advance(time.Millisecond)
		if !try() {
			t.Fatalf("failure %d: refused %v after it", i+1, hold)
		}
		p.Done()
	}
	// The granter, too, waits for the hold to end; then starts what waits.
	p.ended(errors.New("read: input/output error"))
	db.set(1)
	p.Done() // a slot is free, but the hold stands
	if _, s := db.counts(); s != 1 {
		t.Fatalf("started during the hold: %d", s)
	}
	clk.Advance(time.Second)
	waitFor(t, "the granter starting the waiting compaction after the hold", func() bool { _, s := db.counts(); return s == 2 })
	p.Done()

	// A success ends the run; a cancellation holds nothing.
	p.ended(errors.New("read: input/output error"))
	p.ended(nil)
	if !try() {
		t.Fatal("held after a success")
	}
	p.Done()
	p.ended(pebble.ErrCancelledCompaction)
	if !try() {
		t.Fatal("held after a cancellation")
	}
	p.Done()
	p.ended(errors.New("read: input/output error"))
	clk.Advance(50 * time.Millisecond)
	if !try() {
		t.Fatal("the run did not start over at 50 ms after the success")
	}
	p.Done()

	// Unregister: no more grants; twice is harmless; one never
	// registered returns.
	p.Unregister()
	p.Unregister()
	if try() {
		t.Fatal("granted after Unregister")
	}
	db.set(1)
	p.Done()
	if w, _ := db.counts(); w != 1 {
		t.Fatal("started after Unregister")
	}
	newCompactionPacer(clk).Unregister()
}

// readFailingFS fails with EIO, while fail is set, every read of an
// sstable (not its open or stat): a disk with bad sectors under the
// store's tables.
func readFailingFS(fail *atomic.Bool) vfs.FS {
	return errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if fail.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsRead && op.Kind != errorfs.OpOpen && op.Kind != errorfs.OpStat && strings.HasSuffix(op.Path, ".sst") {
			return &fs.PathError{Op: "read", Path: op.Path, Err: syscall.EIO} // as the kernel's
		}
		return nil
	}))
}

// readFailingStore opens a primary with 1 MiB memtables on clk, commits
// 500 values of 4 KiB, makes every sstable read fail and commits 2,500
// more, so that L0 fills and its compactions fail reading.
func readFailingStore(tb testing.TB, clk clock.Clock, fail *atomic.Bool) *Store {
	tb.Helper()
	s, err := Open(tb.TempDir(), Options{Mode: Async, Clock: clk, FS: readFailingFS(fail), PebbleOptions: smallMemtables(), StallTimeout: 10 * time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Promote(context.Background(), 1); err != nil {
		tb.Fatal(err)
	}
	val := make([]byte, 4096)
	for i := range 3000 {
		if i == 500 {
			fail.Store(true)
		}
		b := s.NewBatch()
		b.Set([]byte(fmt.Sprintf("k%08d", i)), val)
		if _, err := s.Commit(context.Background(), b); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// Compactions that fail reading their input tables are held: while the
// store's clock stands still after a failure, the pacer refuses them
// (pebble asks, every 100 ms and at each flush) and none fails again;
// past the hold one runs and fails again, and the next hold is longer.
// The disk back, compactions run again and the store works.
func TestCompactionReadFailuresAreHeld(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC))
	var fail atomic.Bool
	s := readFailingStore(t, clk, &fail)
	defer s.Close()
	errs := func() int64 { return s.pacer.failures.Load() }
	// stands waits until the pacer has refused three more grants and
	// checks that no compaction failed meanwhile.
	stands := func(what string) int64 {
		t.Helper()
		e0 := errs()
		h0 := s.pacer.held.Load()
		waitFor(t, "the pacer refusing grants "+what, func() bool { return s.pacer.held.Load() >= h0+3 })
		if e := errs(); e != e0 {
			t.Fatalf("%s: %d compactions failed while held", what, e-e0)
		}
		return e0
	}
	waitFor(t, "a compaction failing on a read", func() bool { return errs() > 0 })
	e := stands("after the first failures")
	// Status names the failing job and a disk that fails, not a full one.
	if st := s.Status(); !strings.Contains(st.BackgroundErrorJobs, "compactions") || st.BackgroundErrorNoSpace || !strings.Contains(st.BackgroundError, "input/output error") {
		t.Errorf("status: failing %q, no space %v, error %q: want compactions, false, the EIO", st.BackgroundErrorJobs, st.BackgroundErrorNoSpace, st.BackgroundError)
	}
	// A table the disk cannot read is reported as corruption too: its
	// data is lost here whoever met it (the daemon hands over, and a
	// secondary resyncs).
	waitFor(t, "the unreadable table reported", func() bool { return strings.Contains(s.Status().Corruption, ".sst: unreadable: input/output error") })
	// A flush works (it only writes) and does not end the run.
	b := s.NewBatch()
	b.Set([]byte("during"), []byte("the read failures"))
	if _, err := s.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); !strings.Contains(st.BackgroundErrorJobs, "compactions") {
		t.Errorf("after a flush that worked: failing %q, error %q: want compactions still", st.BackgroundErrorJobs, st.BackgroundError)
	}
	for i, hold := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond} {
		s.pacer.mu.Lock()
		left := s.pacer.notBefore.Sub(clk.Now())
		s.pacer.mu.Unlock()
		if left <= 0 || left > time.Second {
			t.Fatalf("step %d: held for %v more", i, left)
		}
		clk.Advance(left)
		waitFor(t, "a compaction failing again past the hold", func() bool { return errs() > e })
		e = stands("after the next failure")
		s.pacer.mu.Lock()
		next := s.pacer.notBefore.Sub(clk.Now())
		s.pacer.mu.Unlock()
		if next < hold {
			t.Errorf("step %d: the next hold is %v, want at least %v", i, next, hold)
		}
	}
	// The disk back: past the hold, compactions succeed and end the run.
	fail.Store(false)
	clk.Advance(time.Second)
	waitFor(t, "a compaction succeeding", func() bool {
		s.pacer.mu.Lock()
		defer s.pacer.mu.Unlock()
		return s.pacer.fails == 0
	})
	waitFor(t, "the run of errors over", func() bool { return s.Status().BackgroundError == "" })
	b = s.NewBatch()
	b.Set([]byte("after"), []byte("the disk came back"))
	if _, err := s.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCompactionReadFailures: compactions failing on every read of
// their input tables (readFailingStore), pebble alone (paced=false: it
// picks them again at once) against the pacer's holds; each round
// measures 2 s of the process's CPU and the compactions that failed.
func BenchmarkCompactionReadFailures(b *testing.B) {
	benchPaced(b, 2*time.Second, "failed/s", func(b *testing.B) (*Store, func()) {
		var fail atomic.Bool
		s := readFailingStore(b, clock.Real(), &fail)
		return s, func() { fail.Store(false); s.Close() }
	}, func(s *Store) uint64 { return uint64(s.pacer.failures.Load()) })
}
