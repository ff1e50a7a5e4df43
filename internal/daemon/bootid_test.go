package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBootIDGrowsWhenTheClockStepsBack: the heartbeat boot id follows the
// wall clock but always exceeds the last run's, so a node whose clock went
// back across a restart is not refused by its peer as a replay; a corrupt
// file is reported and replaced.
func TestBootIDGrowsWhenTheClockStepsBack(t *testing.T) {
	dir := t.TempDir()
	at := func(ns int64) time.Time { return time.Unix(0, ns) }
	var last uint64
	for i, tc := range []struct {
		now  int64
		want uint64
	}{
		{5000, 5000}, // first run: the clock
		{3000, 5001}, // clock stepped back: one more than the last run
		{3000, 5002},
		{9000, 9000}, // clock ahead again
	} {
		id, warning, err := nextBootID(dir, at(tc.now))
		if err != nil || warning != "" {
			t.Fatalf("run %d: %v %q", i, err, warning)
		}
		if id != tc.want || id <= last {
			t.Fatalf("run %d (clock %d): boot id %d, want %d (last %d)", i, tc.now, id, tc.want, last)
		}
		last = id
	}
	if err := os.WriteFile(filepath.Join(dir, bootIDFile), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	id, warning, err := nextBootID(dir, at(7000))
	if err != nil || id != 7000 || !strings.Contains(warning, "corrupt") || !strings.Contains(warning, bootIDFile) {
		t.Fatalf("corrupt file: id %d, warning %q, err %v; want the clock and a warning naming the file", id, warning, err)
	}
	if id, _, _ := nextBootID(dir, at(1)); id != 7001 {
		t.Fatalf("after the corrupt file was replaced: boot id %d, want 7001", id)
	}
	// A boot id the heartbeat raised during the run (past the one the
	// peer last accepted) is where the next run starts above.
	if err := persistBootID(dir, 9_000_000); err != nil {
		t.Fatal(err)
	}
	if id, _, _ := nextBootID(dir, at(8000)); id != 9_000_001 {
		t.Fatalf("after a raise to 9000000: boot id %d, want 9000001", id)
	}
	// A data directory that cannot hold the file fails the start, naming it.
	if _, _, err := nextBootID(filepath.Join(dir, "missing"), at(1)); err == nil || !strings.Contains(err.Error(), bootIDFile) {
		t.Fatalf("unwritable directory: %v", err)
	}
}
