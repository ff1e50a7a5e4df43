package wip

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tandem-ha/tandem/internal/clock"
)

// Pebble retries a failed flush at once, without a pause (the TODO in its
// DB.flush; cockroachdb/pebble#6139, open for v2.1.7): on a full file
// system whose WAL still has room, every attempt fails in microseconds,
// and a store with stalled commits used 122-129 % of this machine kind's
// 2 vCPUs reporting 19,000-26,000 errors a second
// (BenchmarkFlushRetriesOnAFullDisk, docs/benchmarks.md), CPU the
// heartbeats and the runtime of an appliance need. Failed compactions
// are picked again the same way.
//
// bgBackoffFS paces them from below: it wraps the store's file system,
// and once a file written by a flush or a compaction (pebble's write
// categories for them) has failed (its create, a write, a sync or its
// close), the next such file waits before it is created: 50 ms after the
// first failure, doubling to at most 1 s while they go on failing. A
// file that syncs ends the run. Nothing else waits: the WAL, the
// manifest, the store's own files and reads are untouched, so commits
// fail or stall exactly as before; a flush that was going to succeed
// (space freed) is at most 1 s later. Pebble does not hold its mutex
// while it creates a flush's files, so the wait holds up nothing but the
// retry. Store.Close ends any wait at once (pebble's Close waits for the
// flush under way).
type bgBackoffFS struct {
	vfs.FS
	b *bgBackoff
}

const (
	bgBackoffMin = 50 * time.Millisecond
	bgBackoffMax = time.Second
)

type bgBackoff struct {
	clk      clock.Clock
	stop     chan struct{}
	stopOnce sync.Once

	mu    sync.Mutex
	fails int // consecutive failed background files

	waiting atomic.Int32 // creates waiting now (tests)
}

func newBGBackoff(clk clock.Clock) *bgBackoff {
	return &bgBackoff{clk: clk, stop: make(chan struct{})}
}

// withBGBackoff wraps fs (see bgBackoffFS).
func withBGBackoff(fs vfs.FS, b *bgBackoff) vfs.FS { return bgBackoffFS{FS: fs, b: b} }

func (fs bgBackoffFS) Unwrap() vfs.FS { return fs.FS }

// background reports whether c is the write category of a flush's or a
// compaction's files (pebble's getDiskWriteCategoryForCompaction).
func background(c vfs.DiskWriteCategory) bool {
	switch c {
	case "pebble-memtable-flush", "pebble-compaction", "pebble-blob-file-rewrite":
		return true
	}
	return false
}

// pacePebbleRetries turns the pacing off for a benchmark's comparison.
var pacePebbleRetries = true

func (fs bgBackoffFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if !background(c) || !pacePebbleRetries {
		return fs.FS.Create(name, c)
	}
	fs.b.wait()
	f, err := fs.FS.Create(name, c)
	if err != nil {
		fs.b.failed()
		return nil, err
	}
	return &bgFile{File: f, b: fs.b}, nil
}

// delay is the wait before the next background file: 0 while none has
// failed.
func (b *bgBackoff) delay() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return backoffAfter(b.fails)
}

// backoffAfter is the wait after fails failures in a row: 0 for none,
// then bgBackoffMin doubling to bgBackoffMax (the file system's pacing
// and compactionPacer's holds alike).
func backoffAfter(fails int) time.Duration {
	if fails == 0 {
		return 0
	}
	return min(bgBackoffMin<<min(fails-1, 10), bgBackoffMax)
}

// wait waits delay, or until the store closes.
func (b *bgBackoff) wait() {
	d := b.delay()
	if d == 0 {
		return
	}
	t := b.clk.NewTimer(d)
	defer t.Stop()
	b.waiting.Add(1) // once the timer is armed: a test that sees it may move its clock
	defer b.waiting.Add(-1)
	select {
	case <-t.C():
	case <-b.stop:
	}
}

func (b *bgBackoff) failed() {
	b.mu.Lock()
	b.fails++
	b.mu.Unlock()
}

func (b *bgBackoff) succeeded() {
	b.mu.Lock()
	b.fails = 0
	b.mu.Unlock()
}

// close ends every wait, now and later.
func (b *bgBackoff) close() { b.stopOnce.Do(func() { close(b.stop) }) }

// bgFile is a flush's or a compaction's file: its first failure starts
// or extends a run (one per file, however many of its calls fail), its
// sync ends it.
type bgFile struct {
	vfs.File
	b      *bgBackoff
	failed atomic.Bool
}

func (f *bgFile) note(err error) error {
	if err != nil && f.failed.CompareAndSwap(false, true) {
		f.b.failed()
	}
	return err
}

func (f *bgFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	return n, f.note(err)
}

func (f *bgFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	return n, f.note(err)
}

func (f *bgFile) Preallocate(offset, length int64) error {
	return f.note(f.File.Preallocate(offset, length))
}

// synced notes a sync's outcome: one that succeeded ends the run.
func (f *bgFile) synced(err error) error {
	if err == nil {
		f.b.succeeded()
	}
	return f.note(err)
}

func (f *bgFile) Sync() error     { return f.synced(f.File.Sync()) }
func (f *bgFile) SyncData() error { return f.synced(f.File.SyncData()) }

func (f *bgFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	return full, f.note(err)
}

func (f *bgFile) Close() error { return f.note(f.File.Close()) }
