package wip

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
	lines := logs.FilterMessageSnippet("cannot write its files").Len()
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
	if logs.FilterMessageSnippet("pebble writes its files again").Len() != 1 {
		t.Errorf("no line says pebble writes again")
	}
	if err := commit(-1); err != nil {
		t.Fatal(err)
	}
}
