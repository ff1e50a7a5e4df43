package wip

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/tandem-ha/tandem/internal/clock"
)

// fullDiskStore opens a primary whose flushes fail with ENOSPC while full
// is set (the WAL still has room): every operation on an sstable for
// which fails says true. It has 1 MiB memtables, and starts a writer that
// commits 4 KiB values until the store closes; it returns once commits
// stall.
func fullDiskStore(tb testing.TB, clk clock.Clock, full *atomic.Bool, fails func(errorfs.OpKind) bool) *Store {
	tb.Helper()
	s, err := Open(tb.TempDir(), Options{Mode: Async, Clock: clk, FS: sstFailingFS(full, fails), PebbleOptions: smallMemtables(), StallTimeout: 10 * time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Promote(context.Background(), 1); err != nil {
		tb.Fatal(err)
	}
	full.Store(true)
	go func() { // ends with an error once the store closes
		val := make([]byte, 4096)
		for i := 0; ; i++ {
			b := s.NewBatch()
			b.Set([]byte(fmt.Sprintf("k%08d", i)), val)
			if _, err := s.Commit(context.Background(), b); err != nil {
				return
			}
		}
	}()
	waitFor(tb, "commits stalled on the failing flush", func() bool { return !s.Status().StalledSince.IsZero() })
	return s
}

// sstFailingFS fails with ENOSPC, while full is set, every operation on
// an sstable for whose kind fails says true: a full file system whose WAL
// still has room.
func sstFailingFS(full *atomic.Bool, fails func(errorfs.OpKind) bool) vfs.FS {
	return errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if full.Load() && fails(op.Kind) && strings.HasSuffix(op.Path, ".sst") {
			return fmt.Errorf("write %s: %w", op.Path, syscall.ENOSPC)
		}
		return nil
	}))
}

// anyWrite: every write-side operation (creates, writes, syncs...).
func anyWrite(k errorfs.OpKind) bool { return k.ReadOrWrite() == errorfs.OpIsWrite }

// smallMemtables are the store's pebble options with 1 MiB memtables, at
// most two: commits stall after about 2 MiB while flushes fail.
func smallMemtables() *pebble.Options {
	po := defaultPebbleOptions()
	po.MemTableSize, po.MemTableStopWritesThreshold = 1<<20, 2
	return po
}

// Pebble retries a failed flush at once; the store's file system paces
// the retries: after the k-th failure in a row, the next flush's file
// waits 50 ms << (k-1), at most 1 s, on the store's clock, and nothing
// fails meanwhile. A flush that succeeds (space freed) ends the run, and
// Close ends a wait at once.
// The file's create fails, or its writes and syncs do (one failure of
// the run per file however many of its calls fail).
func TestFlushRetriesArePaced(t *testing.T) {
	for name, fails := range map[string]func(errorfs.OpKind) bool{
		"create": func(k errorfs.OpKind) bool { return k == errorfs.OpCreate },
		"write": func(k errorfs.OpKind) bool {
			return k == errorfs.OpFileWrite || k == errorfs.OpFileWriteAt || k == errorfs.OpFileSync || k == errorfs.OpFileSyncData || k == errorfs.OpFileSyncTo
		},
	} {
		t.Run(name, func(t *testing.T) { testFlushRetriesArePaced(t, fails) })
	}
}

func testFlushRetriesArePaced(t *testing.T, fails func(errorfs.OpKind) bool) {
	clk := clock.NewManual(time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC))
	var full atomic.Bool
	s := fullDiskStore(t, clk, &full, fails)
	waiting := func() bool { return s.bg.waiting.Load() == 1 }
	waitFor(t, "the first retry waiting", waiting)
	errs := s.Status().BackgroundErrors
	if errs == 0 {
		t.Fatal("a retry waits with no failure reported")
	}
	for k, want := range []time.Duration{50, 100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		if d := s.bg.delay(); d != want {
			t.Fatalf("retry %d: delay %v, want %v", k+1, d, want)
		}
		clk.Advance(want - time.Millisecond)
		if got := s.Status().BackgroundErrors; got != errs || !waiting() {
			t.Fatalf("retry %d: %d errors (waiting %v) before its delay, want %d and waiting", k+1, got, waiting(), errs)
		}
		clk.Advance(time.Millisecond)
		errs++
		waitFor(t, fmt.Sprintf("retry %d failed and the next waiting", k+1), func() bool {
			return s.Status().BackgroundErrors == errs && waiting()
		})
	}
	// Space freed: the next retry flushes, the stall ends, the run is over.
	full.Store(false)
	clk.Advance(time.Second)
	waitFor(t, "the stall over", func() bool {
		st := s.Status()
		return st.StalledSince.IsZero() && st.BackgroundError == ""
	})
	if d := s.bg.delay(); d != 0 {
		t.Errorf("delay %v after a flush succeeded, want 0", d)
	}
	// Full again: a wait under way does not hold Close.
	full.Store(true)
	waitFor(t, "a retry waiting again", waiting)
	closed := make(chan error, 1)
	go func() { full.Store(false); closed <- s.Close() }()
	if err := recv(t, "Close with a retry waiting", closed); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkFlushRetriesOnAFullDisk measures what a store whose flushes
// fail (a full file system, the WAL with room) costs while its commits
// stall: the process's CPU and pebble's errors per second, with the
// pacing and without it (pebble alone). One iteration is a 3 s window.
//
//	go test -run '^$' -bench FlushRetriesOnAFullDisk -benchtime 1x ./wip/
func BenchmarkFlushRetriesOnAFullDisk(b *testing.B) {
	benchPaced(b, 3*time.Second, "errors/s", func(b *testing.B) (*Store, func()) {
		var full atomic.Bool
		s := fullDiskStore(b, clock.Real(), &full, anyWrite)
		return s, func() { full.Store(false); s.Close() }
	}, func(s *Store) uint64 { return s.Status().Counters.BackgroundErrors })
}

// benchPaced compares a failing store with pebble alone (paced=false)
// and with the store's pacing: open makes the store and its teardown,
// count says how many failures it has had. Each iteration measures
// window of the process's CPU and the failures in it, reported per
// second as unit.
func benchPaced(b *testing.B, window time.Duration, unit string, open func(*testing.B) (*Store, func()), count func(*Store) uint64) {
	for _, paced := range []bool{false, true} {
		b.Run(fmt.Sprintf("paced=%v", paced), func(b *testing.B) {
			pacePebbleRetries = paced
			defer func() { pacePebbleRetries = true }()
			s, done := open(b)
			defer done()
			b.ResetTimer()
			var cpu time.Duration
			var n uint64
			for range b.N {
				c0, n0 := processCPU(), count(s)
				clock.Sleep(context.Background(), clock.Real(), window)
				cpu += processCPU() - c0
				n += count(s) - n0
			}
			secs := float64(b.N) * window.Seconds()
			b.ReportMetric(100*cpu.Seconds()/secs, "cpu_%")
			b.ReportMetric(float64(n)/secs, unit)
		})
	}
}

// processCPU is the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
