package pairlab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EUnreadableActiveHandsOver: a sector under the active's largest
// WIP table goes bad (hangfs under its data-dir/wip: reads that cover it
// fail with EIO, as the kernel reports a disk's unreadable sector).
// `tandemctl verify` on the active meets it; the store reports the table
// as corruption ("unreadable"), and the active hands the role over to the
// in-sync passive at once, as for a bad checksum. As the passive it
// resyncs by snapshot, whose excise takes the table out of the store
// (reading its index and footer, which are readable), reads the new
// store back clean and clears wip-corrupt; tandemd never stops. Then the
// new active is killed, and the repaired node takes the role back with
// every acknowledged job.
func TestE2EUnreadableActiveHandsOver(t *testing.T) {
	e, fsys := stallingPair(t, "b", "wip", 0)
	a, b := e.pair.A, e.pair.B
	acked := jobsInTablesOnB(t, e)

	table, size := largestTable(t, fsys.Backing())
	fsys.FailReads(table, size/2)
	// Pages of the table that b's tandemd read before are in the page
	// cache, which would answer for the disk.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0o200); err != nil {
		t.Fatalf("dropping the page cache: %v", err)
	}
	out, err := b.Ctl(e.ctx, "verify")
	if err == nil || !strings.Contains(out, "store read-back failed: ") || !strings.Contains(out, table) || !strings.Contains(out, "input/output error") {
		t.Fatalf("tandemctl verify on the active over a bad sector: %v\n%s", err, out)
	}
	handedOverAndRepaired(t, e, a, b, table+": unreadable: input/output error")
	if b.Proc().Exited() {
		t.Fatal("b's tandemd stopped")
	}
	t.Logf("%d reads failed on the bad sector", fsys.BadReads())
	crashAndCheck(t, e, a, b, acked, 1500)
}

// largestTable returns the name and size of the largest sstable in dir.
func largestTable(t *testing.T, dir string) (string, int64) {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no table in %s: %v", dir, err)
	}
	var name string
	var size int64
	for _, p := range m {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > size {
			name, size = filepath.Base(p), fi.Size()
		}
	}
	return name, size
}
