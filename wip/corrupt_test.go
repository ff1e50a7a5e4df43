package wip

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/diskrot"
)

// eventsSeen collects a store's events for a test.
type eventsSeen struct {
	mu sync.Mutex
	ev []Event
}

func (e *eventsSeen) add(ev Event) { e.mu.Lock(); e.ev = append(e.ev, ev); e.mu.Unlock() }

func (e *eventsSeen) of(k EventKind) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.ev {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

// corruptLargestTable flushes s, closes it (so that no block of the store
// is cached) and flips the byte at frac of its largest sstable's size. Its
// keys are in order l/ (log records), m/ (a few), u/ (user keys): with the
// log window pruned early, the middle is a data block of user keys; with
// the window kept, a quarter in is one of log records. It returns the file.
func corruptLargestTable(t *testing.T, s *Store, dir string, frac float64) string {
	t.Helper()
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return flipByte(t, dir, frac)
}

// flipByte flips the byte at frac of the largest sstable in dir.
func flipByte(t *testing.T, dir string, frac float64) string {
	t.Helper()
	path, err := diskrot.FlipLargestTable(dir, frac)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// syncedThenBKilled returns a pair whose primary a holds 3000 1 KiB
// values that b has too, in tables (flushed), and b killed: the test
// reopens b with its options and corrupts its files.
func syncedThenBKilled(t *testing.T) (*pairT, *Store) {
	t.Helper()
	p := newPair(t, Options{})
	a, b := p.synced()
	fillSync(t, a, b, 3000)
	if err := b.db.Flush(); err != nil {
		t.Fatal(err)
	}
	b.kill()
	return p, a
}

// verifyErr runs Verify, which reads every block as a compaction would.
func verifyErr(s *Store) error {
	_, err := s.Verify()
	return err
}

// scanErr reads every user key of s and returns the first error.
func scanErr(s *Store) error {
	return s.Scan(nil, func(k, v []byte) error { return nil })
}

// fillSync commits n 1 KiB values k00000.. on a and waits until b holds them.
func fillSync(t *testing.T, a, b *Store, n int) {
	t.Helper()
	fillAlone(t, a, n, 1<<10)
	last := a.Status().DurableLSN
	waitFor(t, "peer holds the fill", func() bool { return b.Status().DurableLSN >= last })
}

// TestCorruptSecondaryResyncsBySnapshot: a block of the secondary's store
// fails its checksum. The read that meets it fails with pebble's
// corruption error (the process goes on: pebble's default would end it);
// the store reports the file, marks itself Inconsistent and resyncs by
// snapshot; a full read of the result is clean and the corruption clears.
// Blocks corrupted under the running store: one of user keys, met by a
// scan; one of log records (the secondary keeps its window, as with a
// version 2 primary; a cache too small to keep what its opening read),
// met by Verify as a compaction would meet it; and one of user keys that
// nothing reads, found by Verify (the daemon's scrub of the passive). The
// snapshot must take both spans' files out of the LSM.
func TestCorruptSecondaryResyncsBySnapshot(t *testing.T) {
	for _, c := range []struct {
		name string
		frac float64
		mod  func(*Options)
		meet func(*Store) error
	}{
		{"user keys", 0.5, nil, scanErr},
		{"log records", 0.25, func(o *Options) {
			o.testMaxVersion = 2
			o.PebbleOptions = defaultPebbleOptions()
			o.PebbleOptions.CacheSize = 1 // every read goes to the file
		}, verifyErr},
		{"user keys, never read", 0.5, nil, verifyErr},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPair(t, Options{RetainBytes: 64 << 20})
			a, b := p.open("a", nil), p.open("b", c.mod)
			defer a.Close()
			if err := a.Promote(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "peer in sync", inSync(a))
			const n = 3000
			fillSync(t, a, b, n)
			if err := b.db.Flush(); err != nil {
				t.Fatal(err)
			}
			b.kill()
			var ev eventsSeen
			b = p.open("b", func(o *Options) {
				if c.mod != nil {
					c.mod(o)
				}
				o.Events = ev.add
			})
			defer b.Close()
			// Bit rot under a running store: its opening read the log
			// window (load), not the user keys.
			file := flipByte(t, p.dirB, c.frac)
			err := c.meet(b)
			if !pebble.IsCorruptionError(err) {
				t.Fatalf("reading the corrupt store: %v, want a corruption error", err)
			}
			if !strings.Contains(err.Error(), filepath.Base(file)) || strings.Contains(err.Error(), "carrier") {
				t.Fatalf("the read's error %q does not name %s plainly", err, file)
			}
			waitFor(t, "the corruption reported", func() bool { return len(ev.of(EventCorrupt)) > 0 })
			if d := ev.of(EventCorrupt)[0].Detail; !strings.Contains(d, filepath.Base(file)) {
				t.Fatalf("corrupt event %q does not name %s", d, file)
			}
			waitFor(t, "resynced and repaired", func() bool { return len(ev.of(EventCorruptRepaired)) > 0 })
			waitFor(t, "in sync again", inSync(a))
			st := b.Status()
			if st.Corruption != "" || st.Inconsistent || st.Counters.Snapshots != 1 || st.Counters.Corruptions == 0 {
				t.Fatalf("b after the repair: corruption %q inconsistent %v snapshots %d reports %d",
					st.Corruption, st.Inconsistent, st.Counters.Snapshots, st.Counters.Corruptions)
			}
			if pts, err := b.Verify(); err != nil || pts < n {
				t.Fatalf("verify after the repair: %d points, %v; want at least %d and no error", pts, err, n)
			}
			checkFill(t, b, n, 1<<10)
			commitKV(t, a, "after", "x")
			waitFor(t, "streaming after the repair", func() bool { return b.Status().DurableLSN == a.Status().DurableLSN })
			mustGet(t, b, "after", "x")
		})
	}
}

// TestCorruptSecondaryIsNotPromotable: the corruption is known while the
// primary is away. Promotion is refused, naming the file, even with the
// primary judged gone; Force overrides, as for any I5 refusal.
func TestCorruptSecondaryIsNotPromotable(t *testing.T) {
	p := newPair(t, Options{})
	a, b := p.synced()
	fillSync(t, a, b, 3000)
	a.kill()
	file := corruptLargestTable(t, b, p.dirB, 0.5)
	b = p.open("b", nil)
	defer b.Close()
	if err := scanErr(b); !pebble.IsCorruptionError(err) {
		t.Fatalf("scan: %v, want a corruption error", err)
	}
	waitFor(t, "marked inconsistent", func() bool { return b.Status().Inconsistent })
	st := b.Status()
	if !strings.Contains(st.Corruption, filepath.Base(file)) || st.CorruptionRepair != "resync" {
		t.Fatalf("Status.Corruption %q does not name %s, or repair %q is not resync", st.Corruption, file, st.CorruptionRepair)
	}
	err := b.Promote(context.Background(), 2, PeerGone())
	if !errors.Is(err, ErrNotPromotable) || !strings.Contains(err.Error(), "corrupt: ") || !strings.Contains(err.Error(), filepath.Base(file)) {
		t.Fatalf("promote of a corrupt store: %v", err)
	}
	if err := b.Promote(context.Background(), 2, PeerGone(), Force()); err != nil {
		t.Fatalf("forced promotion: %v", err)
	}
	if st := b.Status(); st.Role != Primary || st.Corruption == "" {
		t.Fatalf("after the forced promotion: role %v, corruption %q (it stays reported)", st.Role, st.Corruption)
	}
}

// TestCorruptPrimaryHandsOverThenResyncs: the primary's store is corrupt.
// It stays primary (its commits do not read the bad file, and its data may
// be the only copy) and reports it; once the role is handed to the in-sync
// peer and it is demoted, it resyncs from the new primary by snapshot.
func TestCorruptPrimaryHandsOverThenResyncs(t *testing.T) {
	p := newPair(t, Options{})
	a, b := p.synced()
	defer b.Close()
	const n = 3000
	fillSync(t, a, b, n)
	file := corruptLargestTable(t, a, p.dirA, 0.5)
	var ev eventsSeen
	a = p.open("a", func(o *Options) { o.Events = ev.add })
	defer a.Close()
	if err := a.Promote(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b in sync with a", inSync(a))
	if err := scanErr(a); !pebble.IsCorruptionError(err) {
		t.Fatalf("scan: %v, want a corruption error", err)
	}
	waitFor(t, "the corruption reported", func() bool { return len(ev.of(EventCorrupt)) > 0 })
	st := a.Status()
	if st.Role != Primary || st.Inconsistent || !strings.Contains(st.Corruption, filepath.Base(file)) {
		t.Fatalf("corrupt primary: role %v inconsistent %v corruption %q", st.Role, st.Inconsistent, st.Corruption)
	}
	commitKV(t, a, "while-corrupt", "y") // commits go on, replicated
	mustGet(t, b, "while-corrupt", "y")

	// The handover, as the pair does a switchover.
	if err := a.Demote(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Promote(context.Background(), 3, PeerGone(), PeerFollows()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a repaired", func() bool { return len(ev.of(EventCorruptRepaired)) > 0 })
	waitFor(t, "a in sync with b", inSync(b))
	if st := a.Status(); st.Corruption != "" || st.Inconsistent {
		t.Fatalf("a after the repair: corruption %q inconsistent %v", st.Corruption, st.Inconsistent)
	}
	checkFill(t, a, n, 1<<10)
	mustGet(t, a, "while-corrupt", "y")
	for i := 0; i < 5; i++ {
		commitKV(t, b, fmt.Sprint("on-b-", i), "z")
	}
	mustGet(t, a, "on-b-4", "z")
}

// TestCorruptRepairThatFailsIsNotRetried: the read-back after the
// snapshot still finds corruption (scripted: pebble's read-back is real,
// its verdict replaced). The store stays not promotable, says so in its
// status and its events, and does not ask for another snapshot, even
// when pebble reports again.
func TestCorruptRepairThatFailsIsNotRetried(t *testing.T) {
	p, a := syncedThenBKilled(t)
	defer a.Close()
	var ev eventsSeen
	b := p.open("b", func(o *Options) {
		o.Events = ev.add
		o.testVerify = func(error) error { return errors.New("block 7/1841: crc32c checksum mismatch (scripted)") }
	})
	defer b.Close()
	flipByte(t, p.dirB, 0.5)
	if err := scanErr(b); !pebble.IsCorruptionError(err) {
		t.Fatalf("scan: %v, want a corruption error", err)
	}
	waitFor(t, "the failed repair reported", func() bool { return len(ev.of(EventCorrupt)) >= 2 })
	waitFor(t, "in sync after the snapshot", inSync(a))
	b.corr.report(pebble.DataCorruptionInfo{Path: "again", Details: errors.New("a second report")})
	for i := 0; i < 20; i++ {
		commitKV(t, a, fmt.Sprint("later-", i), "v")
	}
	waitFor(t, "b streams", func() bool { return b.Status().DurableLSN == a.Status().DurableLSN })
	st := b.Status()
	if st.Counters.Snapshots != 1 || st.Inconsistent || st.Corruption == "" || !strings.HasPrefix(st.CorruptionRepair, "failed: ") ||
		!strings.Contains(st.CorruptionRepair, "(block 7/1841") {
		t.Fatalf("after a failed repair: snapshots %d inconsistent %v corruption %q repair %q",
			st.Counters.Snapshots, st.Inconsistent, st.Corruption, st.CorruptionRepair)
	}
	if len(ev.of(EventCorruptRepaired)) != 0 {
		t.Fatal("reported repaired")
	}
	a.kill()
	err := b.Promote(context.Background(), 2, PeerGone())
	if !errors.Is(err, ErrNotPromotable) || !strings.Contains(err.Error(), "did not clear it") || !strings.Contains(err.Error(), "move the store away") {
		t.Fatalf("promote after a failed repair: %v", err)
	}
}

// TestCorruptReportAboutReplacedDataIsDropped: a compaction that was
// reading the corrupt file when the snapshot's excise cancelled it reports
// the bad block after the repair (seen in the lab, 12 ms after it). The
// report names a file the store no longer holds: a full read-back finds
// nothing, and the report is dropped (no event, no second resync). The
// same stale name while a live table is corrupt is confirmed by that read
// and acted on.
func TestCorruptReportAboutReplacedDataIsDropped(t *testing.T) {
	p, a := syncedThenBKilled(t)
	defer a.Close()
	var ev eventsSeen
	b := p.open("b", func(o *Options) { o.Events = ev.add })
	defer b.Close()
	file := flipByte(t, p.dirB, 0.5)
	if err := scanErr(b); !pebble.IsCorruptionError(err) {
		t.Fatalf("scan: %v, want a corruption error", err)
	}
	waitFor(t, "resynced and repaired", func() bool { return len(ev.of(EventCorruptRepaired)) > 0 })
	waitFor(t, "in sync again", inSync(a))
	if b.liveTable(file) {
		t.Fatalf("%s is still a live table after the snapshot", file)
	}
	late := pebble.DataCorruptionInfo{Path: file, Details: errors.New("block 142538/7098: crc32c checksum mismatch (a cancelled compaction)")}
	// The report stands only until its read-back ends, which may be
	// before Status is read: its count says it was taken.
	reports := b.Status().Counters.Corruptions
	b.corr.report(late)
	if n := b.Status().Counters.Corruptions; n <= reports {
		t.Fatalf("the report was not recorded: %d reports, as before it", n)
	}
	waitFor(t, "the stale report dropped", func() bool { return b.Status().Corruption == "" })
	commitKV(t, a, "after", "x")
	waitFor(t, "b streams", func() bool { return b.Status().DurableLSN == a.Status().DurableLSN })
	st := b.Status()
	if n := len(ev.of(EventCorrupt)); n != 1 || st.Inconsistent || st.Counters.Snapshots != 1 {
		t.Fatalf("after a stale report: %d corrupt events (want 1), inconsistent %v, snapshots %d (want 1)", n, st.Inconsistent, st.Counters.Snapshots)
	}
	mustGet(t, b, "after", "x")

	// Now a live table is corrupt too, met by nothing yet: the same stale
	// name is confirmed by the read-back and acted on.
	if err := b.db.Flush(); err != nil {
		t.Fatal(err)
	}
	b.kill()
	ev = eventsSeen{}
	b = p.open("b", func(o *Options) { o.Events = ev.add })
	defer b.Close()
	live := flipByte(t, p.dirB, 0.5)
	b.corr.report(late)
	waitFor(t, "the confirmed corruption reported", func() bool { return len(ev.of(EventCorrupt)) > 0 })
	if d := ev.of(EventCorrupt)[0].Detail; !strings.Contains(d, filepath.Base(live)) {
		t.Errorf("confirmed corruption %q does not name the live file %s", d, live)
	}
	waitFor(t, "resynced and repaired", func() bool { return len(ev.of(EventCorruptRepaired)) > 0 })
	if st := b.Status(); st.Counters.Snapshots != 1 || st.Corruption != "" {
		t.Fatalf("after the confirmed report: snapshots %d (want 1 since the reopen), corruption %q", st.Counters.Snapshots, st.Corruption)
	}
}

// TestCorruptAtOpenSetsTheStoreAside: pebble cannot open a secondary's
// store for corruption (a byte of a table's trailing blocks, which opening
// the store reads). With SetAsideCorrupt, Open renames the store aside
// with every file, moves the quarantine files back, and opens a new store,
// Inconsistent and not promotable, which says what was met and where the
// old store went. When the primary returns, the new store resyncs by
// snapshot and a full read clears the corruption. A second corruption at
// open, with the first set-aside store still there, fails Open, naming
// both, and moves nothing.
func TestCorruptAtOpenSetsTheStoreAside(t *testing.T) {
	p := newPair(t, Options{RetainBytes: 64 << 20, SetAsideCorrupt: true})
	a, b := p.synced()
	const n = 3000
	fillSync(t, a, b, n)
	if err := b.db.Flush(); err != nil {
		t.Fatal(err)
	}
	a.kill()
	b.kill()
	qfile := filepath.Join(p.dirB, "quarantine", "q-1-lsn5-9.jsonl")
	if err := os.MkdirAll(filepath.Dir(qfile), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(qfile, []byte("{}\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	files, err := diskrot.FlipTrailers(p.dirB)
	if err != nil {
		t.Fatal(err)
	}
	o := p.base
	o.SetAsideCorrupt = false
	o.Logger = zap.NewNop()
	if s, err := Open(p.dirB, o); err == nil || !pebble.IsCorruptionError(err) {
		if s != nil {
			_ = s.Close()
		}
		t.Fatalf("opening the corrupt store without SetAsideCorrupt: %v, want a corruption error", err)
	}

	var ev eventsSeen
	b = p.open("b", func(o *Options) { o.Events = ev.add })
	sa := ev.of(EventSetAside)
	if len(sa) != 1 || !strings.HasPrefix(sa[0].File, p.dirB+".corrupt-") || !strings.Contains(sa[0].Detail, ".sst") {
		t.Fatalf("set-aside events %+v: want one naming a table and a directory beside %s", sa, p.dirB)
	}
	aside := sa[0].File
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(aside, filepath.Base(f))); err != nil {
			t.Fatalf("the set-aside store lacks a corrupt table: %v", err)
		}
	}
	if _, err := os.Stat(qfile); err != nil {
		t.Fatalf("the quarantine file did not come back: %v", err)
	}
	st := b.Status()
	if !st.Inconsistent || st.DurableLSN != 0 || !strings.Contains(st.Corruption, "met at open") ||
		!strings.Contains(st.Corruption, aside) || st.CorruptionRepair != "resync" {
		t.Fatalf("the new store: inconsistent %v LSN %d corruption %q repair %q", st.Inconsistent, st.DurableLSN, st.Corruption, st.CorruptionRepair)
	}
	if err := b.Promote(context.Background(), 2, PeerGone()); !errors.Is(err, ErrNotPromotable) {
		t.Fatalf("promote of the new store: %v, want ErrNotPromotable", err)
	}
	waitFor(t, "the corruption reported", func() bool { return len(ev.of(EventCorrupt)) > 0 })

	a = p.open("a", nil)
	defer a.Close()
	if err := a.Promote(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "repaired", func() bool { return len(ev.of(EventCorruptRepaired)) > 0 })
	waitFor(t, "in sync", inSync(a))
	if st := b.Status(); st.Corruption != "" || st.Inconsistent {
		t.Fatalf("after the repair: corruption %q inconsistent %v", st.Corruption, st.Inconsistent)
	}
	checkFill(t, b, n, 1<<10)
	if _, err := os.Stat(aside); err != nil {
		t.Fatalf("the set-aside store is gone after the repair: %v", err)
	}

	// Again, with the first set-aside store still there.
	commitKV(t, a, "after", "x")
	waitFor(t, "streamed", func() bool { return b.Status().DurableLSN == a.Status().DurableLSN })
	if err := b.db.Flush(); err != nil {
		t.Fatal(err)
	}
	b.kill()
	if _, err := diskrot.FlipTrailers(p.dirB); err != nil {
		t.Fatal(err)
	}
	o.SetAsideCorrupt = true
	s, err := Open(p.dirB, o)
	if err == nil {
		_ = s.Close()
		t.Fatal("a second corruption at open set the store aside again")
	}
	if !pebble.IsCorruptionError(err) || !strings.Contains(err.Error(), aside) {
		t.Fatalf("the second corruption at open: %v, want a corruption error naming %s", err, aside)
	}
	if m, _ := filepath.Glob(p.dirB + ".corrupt-*"); len(m) != 1 {
		t.Fatalf("set-aside stores after the refusal: %v, want only %s", m, aside)
	}
	if m, _ := filepath.Glob(filepath.Join(p.dirB, "MANIFEST-*")); len(m) == 0 {
		t.Fatalf("the refused store was moved: no MANIFEST left in %s", p.dirB)
	}
}

// TestEmptyStoreOfAPairNodeIsInconsistent: with EmptyIsInconsistent (the
// daemon's, on a node whose pair state holds an epoch: its store was
// moved away) a new store is Inconsistent from the start and across a
// restart, and not promotable, where one created without it is an empty
// consistent store. An empty store created without it (a first Open cut
// short before the mark) is marked at the next Open with it; a store that
// holds a pair's history is not.
func TestEmptyStoreOfAPairNodeIsInconsistent(t *testing.T) {
	o := Options{Mode: Async, EmptyIsInconsistent: true}
	dir := t.TempDir()
	s := openT(t, dir, o)
	if !s.Status().Inconsistent {
		t.Fatal("a new store with EmptyIsInconsistent is consistent")
	}
	if err := s.Promote(context.Background(), 1, PeerGone()); !errors.Is(err, ErrNotPromotable) {
		t.Fatalf("promote: %v, want ErrNotPromotable", err)
	}
	_ = s.Close()
	s = openT(t, dir, Options{Mode: Async})
	if !s.Status().Inconsistent {
		t.Fatal("the Inconsistent mark did not persist")
	}
	_ = s.Close()

	dir = t.TempDir()
	s = openT(t, dir, Options{Mode: Async})
	if s.Status().Inconsistent {
		t.Fatal("a new store without EmptyIsInconsistent is inconsistent")
	}
	_ = s.Close()
	s = openT(t, dir, o)
	if !s.Status().Inconsistent {
		t.Fatal("an empty store opened again with EmptyIsInconsistent is consistent")
	}
	_ = s.Close()

	dir = t.TempDir()
	s = openT(t, dir, Options{Mode: Async})
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	_ = s.Close() // promoted, nothing committed: the history says epoch 1
	s = openT(t, dir, o)
	defer s.Close()
	if s.Status().Inconsistent {
		t.Fatal("EmptyIsInconsistent marked a store that holds a pair's history")
	}
}

// TestScrubReadsEveryKeyAndFindsABadBlock: Scrub, the primary's throttled
// read-back, reads every live key once across its chunks (as many as one
// iterator over the whole store sees), and on a store with a rotten block
// of user keys it fails naming the file plainly, reports the corruption,
// and the store stays primary.
func TestScrubReadsEveryKeyAndFindsABadBlock(t *testing.T) {
	dir := t.TempDir()
	o := Options{Mode: Async}
	s := openT(t, dir, o)
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	const n = 3000 // 3 MB of values: several scrubChunks
	fillAlone(t, s, n, 1<<10)
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	var all int64
	for v := it.First(); v; v = it.Next() {
		all++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	keys, err := s.Scrub(context.Background(), 0)
	if err != nil || keys != all || keys < n {
		t.Fatalf("scrub of a clean store: %d keys, %v; want %d (at least %d) and no error", keys, err, all, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Scrub(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("scrub with an ended context: %v", err)
	}

	// The primary keeps its log window: l/ records make the first half of
	// the table, user keys the second.
	file := corruptLargestTable(t, s, dir, 0.8)
	var ev eventsSeen
	o.Events = ev.add
	s = openT(t, dir, o)
	defer s.Close()
	if err := s.Promote(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	_, err = s.Scrub(context.Background(), 0)
	if !pebble.IsCorruptionError(err) || !strings.Contains(err.Error(), filepath.Base(file)) || strings.Contains(err.Error(), "carrier") {
		t.Fatalf("scrub of a corrupt store: %v, want a corruption error naming %s plainly", err, file)
	}
	waitFor(t, "the corruption reported", func() bool { return len(ev.of(EventCorrupt)) > 0 })
	if st := s.Status(); st.Role != Primary || !strings.Contains(st.Corruption, filepath.Base(file)) {
		t.Fatalf("after the scrub: role %v, corruption %q", st.Role, st.Corruption)
	}
}

func TestScrubPause(t *testing.T) {
	for _, c := range []struct {
		n, rate int64
		took    time.Duration
		want    time.Duration
	}{
		{1 << 20, 0, 0, 0},                       // no limit
		{1 << 20, 16 << 20, 0, time.Second / 16}, // a sixteenth of the second's budget
		{1 << 20, 16 << 20, 50 * time.Millisecond, 12500 * time.Microsecond}, // less what the read took
		{1 << 20, 16 << 20, time.Second, 0},                                  // a slow read: no pause
	} {
		if got := scrubPause(c.n, c.rate, c.took); got != c.want {
			t.Errorf("scrubPause(%d, %d, %v) = %v, want %v", c.n, c.rate, c.took, got, c.want)
		}
	}
}
