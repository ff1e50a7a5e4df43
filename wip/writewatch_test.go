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
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandem-ha/tandem/internal/clock"
)

// A full file system whose WAL still has room fails pebble's flushes, not
// the commits: pebble retries (paced: bgbackoff.go), and the commits
// stall once the memtables are full. Status shows the error and the
// stall, the log holds a bounded number of lines however many errors
// pebble reports, and when there is room again the flush succeeds, the
// stall ends, the stalled commit is acknowledged and the error is gone.
func TestFlushFailuresAreBoundedInTheLogAndShown(t *testing.T) {
	var full atomic.Bool
	core, logs := observer.New(zap.InfoLevel)
	s := openT(t, t.TempDir(), Options{Mode: Async, FS: sstFailingFS(&full, anyWrite), PebbleOptions: smallMemtables(), Logger: zap.New(core)})
	defer func() {
		full.Store(false) // let a stalled close finish
		s.Close()
	}()
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	val := make([]byte, 4096)
	commit := func(i int) error {
		b := s.NewBatch()
		b.Set([]byte(fmt.Sprintf("k%06d", i)), val)
		_, err := s.Commit(context.Background(), b)
		return err
	}
	full.Store(true)
	var stuck atomic.Int64
	var freed atomic.Bool
	done := make(chan error, 1)
	go func() {
		// Writes until there is room again: about 2 MiB of memtables in,
		// a commit is held by the stall, and returns once the flush works.
		for i := 0; !freed.Load(); i++ {
			stuck.Store(int64(i))
			if err := commit(i); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	waitFor(t, "commits stalled with pebble's write error shown", func() bool {
		st := s.Status()
		return !st.StalledSince.IsZero() && st.BackgroundErrors >= 5 && strings.Contains(st.BackgroundError, "no space left on device")
	})
	st := s.Status()
	if st.BackgroundErrorJobs != "flushes" || !st.BackgroundErrorNoSpace || st.Counters.BackgroundErrors < st.BackgroundErrors {
		t.Errorf("failing %q, no space %v, %d errors of all runs for %d in this one: want flushes, a full file system, at least as many", st.BackgroundErrorJobs, st.BackgroundErrorNoSpace, st.Counters.BackgroundErrors, st.BackgroundErrors)
	}
	lines := logs.FilterMessageSnippet("pebble's flushes fail").Len()
	t.Logf("%d background errors since %v, %d log lines; stalled since %v (%s)", st.BackgroundErrors, st.BackgroundErrorSince, lines, st.StalledSince, st.StallReason)
	if lines < 1 || lines > 2 {
		t.Errorf("%d log lines for %d background errors in well under %v, want 1 (2 at a minute's edge)", lines, st.BackgroundErrors, bgLogEvery)
	}

	held := stuck.Load()
	clock.Sleep(context.Background(), clock.Real(), 200*time.Millisecond)
	if now := stuck.Load(); now != held {
		t.Fatalf("commits went on (%d -> %d) while stalled", held, now)
	}
	freed.Store(true)
	full.Store(false)                          // the operator frees space
	hung := clock.Real().NewTimer(time.Minute) // ends a hung test only
	defer hung.Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-hung.C():
		t.Fatalf("the commit held by the stall (%d) never returned", stuck.Load())
	}
	waitFor(t, "the error and the stall gone", func() bool {
		st := s.Status()
		return st.BackgroundError == "" && st.StalledSince.IsZero()
	})
	if after := s.Status(); after.BackgroundErrorJobs != "" || after.BackgroundErrorNoSpace || after.Counters.BackgroundErrors < st.Counters.BackgroundErrors {
		t.Errorf("after the run: failing %q, no space %v, %d errors of all runs (%d before): want none, false, the total kept", after.BackgroundErrorJobs, after.BackgroundErrorNoSpace, after.Counters.BackgroundErrors, st.Counters.BackgroundErrors)
	}
	if logs.FilterMessageSnippet("pebble writes its files again").Len() != 1 {
		t.Errorf("no line says pebble writes again")
	}
	if err := commit(-1); err != nil {
		t.Fatal(err)
	}
}

// The watch's runs, scripted in the order pebble reports them (a job's
// end with its error, then the background error): which jobs fail, a
// full file system or not, and which success ends the run.
func TestWriteWatchRuns(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC))
	core, logs := observer.New(zap.InfoLevel)
	w := newWriteWatch(zap.New(core), clk)
	var el pebble.EventListener
	w.listener(&el)
	full := fmt.Errorf("write 000012.sst: %w", syscall.ENOSPC)
	eio := fmt.Errorf("read 000007.sst: %w", syscall.EIO)
	flushFails := func(err error) { el.FlushEnd(pebble.FlushInfo{Err: err}); el.BackgroundError(err) }
	compactionFails := func(err error) { el.CompactionEnd(pebble.CompactionInfo{Err: err}); el.BackgroundError(err) }
	want := func(step, jobs string, noSpace bool, count, total uint64) {
		t.Helper()
		st := w.state()
		if st.jobs != jobs || st.noSpace != noSpace || st.count != count || st.total != total || (st.err == "") != (count == 0) {
			t.Errorf("%s: failing %q, no space %v, %d errors (%d in all), error %q; want %q, %v, %d (%d)", step, st.jobs, st.noSpace, st.count, st.total, st.err, jobs, noSpace, count, total)
		}
	}

	flushFails(full)
	flushFails(full)
	want("flushes fail on a full disk", "flushes", true, 2, 2)
	compactionFails(eio)
	want("a compaction fails reading", "flushes and compactions", false, 3, 3)
	el.FlushEnd(pebble.FlushInfo{})
	want("a flush works", "compactions", false, 3, 3)
	el.CompactionEnd(pebble.CompactionInfo{Err: pebble.ErrCancelledCompaction})
	want("a compaction cancelled", "compactions", false, 3, 3)
	el.CompactionEnd(pebble.CompactionInfo{})
	want("a compaction works", "", false, 0, 3)
	if n := logs.FilterMessage("pebble writes its files again").FilterField(zap.String("last_failing", "pebble's compactions fail")).Len(); n != 1 {
		t.Errorf("%d lines for the run's end, want 1", n)
	}

	el.BackgroundError(eio) // reading a table's properties
	want("a background read fails", "", false, 1, 4)
	if n := logs.FilterMessageSnippet("pebble's background reads fail; they are retried, and commits go on").Len(); n != 1 {
		t.Errorf("%d lines for the read's failure, want 1", n)
	}
	el.FlushEnd(pebble.FlushInfo{})
	want("a flush works after it", "", false, 0, 4)

	compactionFails(eio)
	if n := logs.FilterMessageSnippet("pebble's compactions fail; they are retried, and commits stall if level 0 grows to its limit").Len(); n != 1 {
		t.Errorf("%d lines for the compaction's failure, want 1", n)
	}
	clk.Advance(bgLogEvery)
	compactionFails(eio)
	if n := logs.FilterMessage("pebble's compactions fail still").Len(); n != 1 {
		t.Errorf("%d lines a minute on, want 1", n)
	}
	want("compactions fail, a minute", "compactions", false, 2, 6)
}
