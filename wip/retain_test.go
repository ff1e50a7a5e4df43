package wip

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
)

// The retained log stays within RetainBytes after every commit, and is
// pruned in chunks: one range deletion per eighth of the window, not one
// per group commit (which collapsed the commit rate; see retain).
func TestRetainPrunesBySizeInChunks(t *testing.T) {
	const limit = 64 << 10
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	dir := t.TempDir()
	s := openT(t, dir, Options{Mode: Async, RetainBytes: limit, Clock: clk})
	if err := s.Promote(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	value := strings.Repeat("v", 1000)
	const commits = 400
	prunes := 0
	first := uint64(1)
	for i := 1; i <= commits; i++ {
		commitKV(t, s, fmt.Sprintf("k%04d", i), value)
		st := s.Status()
		if st.RetainedBytes > limit {
			t.Fatalf("after commit %d the log holds %d bytes, over RetainBytes %d", i, st.RetainedBytes, limit)
		}
		if st.RetainedLast != uint64(i) {
			t.Fatalf("after commit %d the log ends at LSN %d", i, st.RetainedLast)
		}
		if st.RetainedFirst != first {
			if st.RetainedFirst < first {
				t.Fatalf("after commit %d the window start moved back from %d to %d", i, first, st.RetainedFirst)
			}
			prunes++
			first = st.RetainedFirst
		}
	}
	// About 1 KiB per entry, 64 entries per window, 8 per chunk: ~42
	// prunes for 400 commits; pruning every group would make ~340.
	if prunes == 0 || prunes > commits/5 {
		t.Fatalf("%d prunes for %d commits; want 1..%d", prunes, commits, commits/5)
	}
	if _, err := s.readLog(first-1, 1<<20); err == nil {
		t.Fatalf("LSN %d, below the window, is still in the log", first-1)
	}
	es, err := s.readLog(first, 1<<30)
	if err != nil || len(es) != commits-int(first)+1 || es[len(es)-1].lsn != commits {
		t.Fatalf("readLog(%d) = %d entries, %v; want LSN %d..%d", first, len(es), err, first, commits)
	}
	// The window and the pruned edge survive a restart.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{Mode: Async, RetainBytes: limit, Clock: clk})
	defer s.Close()
	if st := s.Status(); st.RetainedFirst != first || st.RetainedLast != commits {
		t.Fatalf("after reopen the window is %d..%d, want %d..%d", st.RetainedFirst, st.RetainedLast, first, commits)
	}
	if c, ok := s.logCsum(first - 1); !ok || c == 0 {
		t.Fatalf("checksum at the pruned edge %d: %x, %v", first-1, c, ok)
	}
}

// Entries older than RetainAge are pruned by the next commit, back to 7/8
// of the age, and younger ones are kept.
func TestRetainPrunesByAge(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	s := openT(t, t.TempDir(), Options{Mode: Async, RetainAge: time.Hour, Clock: clk})
	defer s.Close()
	if err := s.Promote(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		commitKV(t, s, fmt.Sprintf("old%02d", i), "v")
	}
	clk.Advance(50 * time.Minute)
	for i := 1; i <= 10; i++ {
		commitKV(t, s, fmt.Sprintf("mid%02d", i), "v")
	}
	if st := s.Status(); st.RetainedFirst != 1 {
		t.Fatalf("nothing is an hour old yet, but the window starts at %d", st.RetainedFirst)
	}
	clk.Advance(15 * time.Minute) // the first ten are 65 min old, the next ten 15 min
	commitKV(t, s, "new", "v")
	if st := s.Status(); st.RetainedFirst != 11 || st.RetainedLast != 21 {
		t.Fatalf("window %d..%d after the old entries aged out, want 11..21", st.RetainedFirst, st.RetainedLast)
	}
}
