package wip

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	cerrors "github.com/cockroachdb/errors"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// badSectors is a disk with bad sectors under some of the store's
// tables: a read(2) that covers one fails with EIO, as the kernel reports
// it (an *fs.PathError of op "read"); the rest of the file, and every
// other file, reads normally. Files written later (a snapshot's tables)
// are on good sectors.
type badSectors struct {
	mu  sync.Mutex
	bad map[string]int64 // path: the offset of its bad sector; -1: the whole file
}

type sectorFS struct {
	vfs.FS
	d *badSectors
}

func (f sectorFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.Open(name, opts...)
	if err != nil {
		return nil, err
	}
	return sectorFile{File: file, name: name, d: f.d}, nil
}

type sectorFile struct {
	vfs.File
	name string
	d    *badSectors
}

func (f sectorFile) ReadAt(p []byte, off int64) (int, error) {
	f.d.mu.Lock()
	at, ok := f.d.bad[f.name]
	f.d.mu.Unlock()
	if ok && (at < 0 || off <= at && at < off+int64(len(p))) {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EIO}
	}
	return f.File.ReadAt(p, off)
}

func (d *badSectors) fs() vfs.FS { return sectorFS{FS: vfs.Default, d: d} }

// fail puts a bad sector under each table of the store s in dir, at frac
// of its size (frac < 0: the whole file fails), and returns the largest
// table's name.
func (d *badSectors) fail(t *testing.T, s *Store, dir string, frac float64) string {
	t.Helper()
	levels, err := s.db.SSTables()
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bad == nil {
		d.bad = map[string]int64{}
	}
	var largest string
	var size uint64
	for _, level := range levels {
		for _, tb := range level {
			name := tb.BackingSSTNum.String() + ".sst"
			path := filepath.Join(dir, name)
			d.bad[path] = -1
			if frac >= 0 {
				d.bad[path] = int64(float64(tb.Size) * frac)
			}
			if tb.Size > size {
				largest, size = name, tb.Size
			}
		}
	}
	if largest == "" {
		t.Fatal("the store has no table")
	}
	return largest
}

// unreadable reports an I/O error of a read of a table, wrapped as pebble
// and the store wrap it, and nothing else: not another file's, not a
// write's, not a full disk, not pebble's checksum failure (reported by
// pebble itself).
func TestUnreadableIsAReadErrorOfATable(t *testing.T) {
	read := func(path string, errno syscall.Errno) error {
		return &fs.PathError{Op: "read", Path: path, Err: errno}
	}
	for _, c := range []struct {
		name string
		err  error
		want string // Status.Corruption; "" for none
	}{
		{"EIO reading a table", read("/d/000007.sst", syscall.EIO), "/d/000007.sst: unreadable: input/output error"},
		{"wrapped by pebble", cerrors.Wrapf(fmt.Errorf("block: %w", read("/d/000007.sst", syscall.EIO)), "compaction"), "/d/000007.sst: unreadable: input/output error"},
		{"EBADMSG (a file system's checksum)", read("/d/000008.sst", syscall.EBADMSG), "/d/000008.sst: unreadable: bad message"},
		{"EILSEQ (dm-integrity)", read("/d/000009.sst", syscall.EILSEQ), "/d/000009.sst: unreadable: invalid or incomplete multibyte or wide character"},
		{"the WAL", read("/d/000010.log", syscall.EIO), ""},
		{"a write", &fs.PathError{Op: "write", Path: "/d/000011.sst", Err: syscall.EIO}, ""},
		{"a full disk", read("/d/000012.sst", syscall.ENOSPC), ""},
		{"no file", fmt.Errorf("read: %w", syscall.EIO), ""},
		{"nil", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newCorruptWatch()
			w.unreadable(c.err)
			desc, _, reports := w.state()
			if desc != c.want || (reports == 1) != (c.want != "") {
				t.Fatalf("unreadable(%v): corruption %q, %d reports; want %q", c.err, desc, reports, c.want)
			}
		})
	}
}

// TestUnreadableSecondaryResyncsBySnapshot: the disk under the
// secondary's tables fails reads with EIO. The read that meets it returns
// the error; the store reports the file as corruption (unreadable),
// marks itself Inconsistent and resyncs by snapshot, which takes the
// files out of the store; the new tables read back clean, and the report
// clears. Met by a scan (the runtime's reads) and by Verify (the
// passive's read-back).
func TestUnreadableSecondaryResyncsBySnapshot(t *testing.T) {
	for _, c := range []struct {
		name string
		meet func(*Store) error
	}{{"scan", scanErr}, {"verify", verifyErr}} {
		t.Run(c.name, func(t *testing.T) {
			p, a := syncedThenBKilled(t)
			defer a.Close()
			var disk badSectors
			var ev eventsSeen
			b := p.open("b", func(o *Options) { o.FS, o.Events = disk.fs(), ev.add })
			defer b.Close()
			file := disk.fail(t, b, p.dirB, 0.5) // under the running store: its opening read the log window
			err := c.meet(b)
			if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), file) {
				t.Fatalf("reading the store: %v, want EIO naming %s", err, file)
			}
			waitFor(t, "the unreadable table reported", func() bool { return len(ev.of(EventCorrupt)) > 0 })
			if d := ev.of(EventCorrupt)[0].Detail; !strings.Contains(d, file+": unreadable: input/output error") {
				t.Fatalf("corrupt event %q, want %s unreadable", d, file)
			}
			waitFor(t, "resynced and repaired", func() bool { return len(ev.of(EventCorruptRepaired)) > 0 })
			waitFor(t, "in sync again", inSync(a))
			st := b.Status()
			if st.Corruption != "" || st.Inconsistent || st.Counters.Snapshots != 1 {
				t.Fatalf("b after the repair: corruption %q inconsistent %v snapshots %d", st.Corruption, st.Inconsistent, st.Counters.Snapshots)
			}
			checkFill(t, b, 3000, 1<<10)
		})
	}
}

// TestUnreadablePrimaryReportsAndServesNoPartialSnapshot: the disk under
// the primary's tables fails reads. A scan that meets it returns the error
// and the store reports the file (the daemon hands the role over), and a
// peer that needs a snapshot gets none: the snapshot fails at the first
// table it cannot read, and the peer, told why, stays Inconsistent.
func TestUnreadablePrimaryReportsAndServesNoPartialSnapshot(t *testing.T) {
	p := newPair(t, Options{Mode: Async, RetainBytes: 16 << 10})
	var disk badSectors
	a := p.open("a", func(o *Options) { o.FS = disk.fs() })
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	fillAlone(t, a, n, 1000)
	if err := a.db.Flush(); err != nil {
		t.Fatal(err)
	}
	file := disk.fail(t, a, p.dirA, 0.5)
	if err := scanErr(a); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a scan on the failing disk: %v, want EIO", err)
	}
	waitFor(t, "the unreadable table reported", func() bool { return a.Status().Corruption != "" })
	if st := a.Status(); st.Role != Primary || !strings.Contains(st.Corruption, file+": unreadable") {
		t.Fatalf("a: role %v, corruption %q; want primary, %s unreadable", st.Role, st.Corruption, file)
	}
	b := p.open("b", nil)
	defer b.Close()
	waitFor(t, "a snapshot refused, or one taken", func() bool {
		return strings.Contains(b.Status().LastError, "does not try again") || b.Status().DurableLSN > 0
	})
	st := b.Status()
	if !st.Inconsistent || st.DurableLSN != 0 || !strings.Contains(st.LastError, "cannot send a complete snapshot") || !strings.Contains(st.LastError, "input/output error") {
		t.Fatalf("b: inconsistent %v, durable LSN %d, last error %q; want inconsistent at 0, told that a cannot read its store", st.Inconsistent, st.DurableLSN, st.LastError)
	}
}

// TestUnreadableTableWholeIsSetAsideAtOpen: the disk cannot read any of
// the secondary's table file, so the snapshot's excise cannot cut it out
// and its ingest fails reading it: the store cannot repair itself in
// place. It stays Inconsistent and not promotable, says why in
// Status.LastError (and backs off between attempts). Reopened with
// SetAsideCorrupt (the daemon's, at a restart), Open meets the table,
// sets the store aside as for corruption, and the new store resyncs.
func TestUnreadableTableWholeIsSetAsideAtOpen(t *testing.T) {
	p, a := syncedThenBKilled(t)
	defer a.Close()
	var disk badSectors
	var ev eventsSeen
	b := p.open("b", func(o *Options) { o.FS, o.Events = disk.fs(), ev.add })
	file := disk.fail(t, b, p.dirB, -1)
	if err := scanErr(b); !errors.Is(err, syscall.EIO) {
		t.Fatalf("scan: %v, want EIO", err)
	}
	waitFor(t, "a snapshot failing on the unreadable table", func() bool {
		e := b.Status().LastError
		return strings.Contains(e, "wip: snapshot") && strings.Contains(e, file) && strings.Contains(e, "input/output error")
	})
	if st := b.Status(); !st.Inconsistent || !strings.Contains(st.Corruption, file+": unreadable") {
		t.Fatalf("b: inconsistent %v, corruption %q; want inconsistent, %s unreadable", st.Inconsistent, st.Corruption, file)
	}
	if err := b.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	b = p.open("b", func(o *Options) { o.FS, o.Events, o.SetAsideCorrupt = disk.fs(), ev.add, true })
	defer b.Close()
	sa := ev.of(EventSetAside)
	if len(sa) != 1 || !strings.Contains(sa[0].Detail, file) || !strings.Contains(sa[0].Detail, "input/output error") {
		t.Fatalf("set-aside events %+v: want one naming %s and the EIO", sa, file)
	}
	waitFor(t, "the new store repaired", func() bool { return len(ev.of(EventCorruptRepaired)) > 0 })
	waitFor(t, "in sync", inSync(a))
	if st := b.Status(); st.Corruption != "" || st.Inconsistent {
		t.Fatalf("after the repair: corruption %q inconsistent %v", st.Corruption, st.Inconsistent)
	}
	checkFill(t, b, 3000, 1<<10)
}
