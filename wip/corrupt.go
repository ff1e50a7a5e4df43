package wip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// corruptWatch holds what pebble reported of on-disk corruption (a block
// or file whose checksum does not match). Pebble calls report
// synchronously on its read paths, some of which run under Store.mu (the
// lineage checksum reads the log), so the watch has its own lock and
// report never blocks: the supervisor acts on it.
type corruptWatch struct {
	mu sync.Mutex
	// desc is the first corruption not yet repaired ("" when none):
	// the file, its key bounds and pebble's error; path is the file.
	desc     string
	path     string
	reports  uint64 // every report since Open
	notified bool   // the event and the log line for desc went out
	resync   bool   // the store marked itself Inconsistent for desc
	failed   string // a snapshot did not repair desc: the full read's error
	// checked is the report (desc) that needs no confirmation, or has
	// had it; confirming: a read-back for a report is running.
	checked    string
	confirming bool
	kick       chan struct{}
}

func newCorruptWatch() *corruptWatch { return &corruptWatch{kick: make(chan struct{}, 1)} }

func (w *corruptWatch) report(info pebble.DataCorruptionInfo) {
	w.add(describeCorruption(info), info.Path)
}

// add records a report: desc says what is wrong with the file at path.
func (w *corruptWatch) add(desc, path string) {
	w.mu.Lock()
	w.reports++
	if w.desc == "" {
		w.desc, w.path = desc, path
	}
	w.mu.Unlock()
	w.poke()
}

// unreadable reports err to the watch if it is the disk failing to read
// one of the store's tables: an error of a read(2) of a *.sst file that
// the device or the file system returns for data it cannot give back
// (EIO; EBADMSG or EILSEQ from a file system or dm-integrity that checks
// its own checksums). Pebble reports only its own checksum failures as
// corruption; a block the disk cannot read is as lost, and is repaired
// the same way (a secondary resyncs by snapshot, whose excise takes the
// file out of the store; a primary is handed over), so it is reported as
// "<file>: unreadable: <error>". A read error with no file (a custom
// vfs.FS) or of another file (the WAL, the MANIFEST: not read after Open)
// is left to whoever met it.
func (w *corruptWatch) unreadable(err error) {
	if pe := unreadableTable(err); pe != nil {
		w.add(fmt.Sprintf("%s: unreadable: %v", pe.Path, pe.Err), pe.Path)
	}
}

// unreadableTable returns the failed read if err is the disk failing to
// read a table (see corruptWatch.unreadable), and nil otherwise.
func unreadableTable(err error) *fs.PathError {
	var pe *fs.PathError
	if err == nil || pebble.ExtractDataCorruptionInfo(err) != nil ||
		!errors.As(err, &pe) || pe.Op != "read" || !strings.HasSuffix(pe.Path, ".sst") {
		return nil
	}
	if !errors.Is(pe.Err, syscall.EIO) && !errors.Is(pe.Err, syscall.EBADMSG) && !errors.Is(pe.Err, syscall.EILSEQ) {
		return nil
	}
	return pe
}

// poke wakes the supervisor to act on the watch (checkCorruption): on a
// report, and when the role changes (a demoted corrupt primary resyncs).
func (w *corruptWatch) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func describeCorruption(info pebble.DataCorruptionInfo) string {
	bounds := ""
	if info.Bounds.Start != nil {
		bounds = fmt.Sprintf(" (keys %q..%q)", info.Bounds.Start, info.Bounds.End.Key)
	}
	return fmt.Sprintf("%s%s: %v", info.Path, bounds, info.Details)
}

// state returns the corruption ("" when none), what is being done about
// it (Status.CorruptionRepair) and the number of reports.
func (w *corruptWatch) state() (desc, repair string, reports uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.desc == "":
	case w.failed != "":
		repair = "failed: a snapshot from the primary did not clear it (" + w.failed + ")"
	case w.resync:
		repair = "resync"
	}
	return w.desc, repair, w.reports
}

// promoteRefusal is the reason Promote gives for a corrupt store ("" when
// it is not corrupt).
func (w *corruptWatch) promoteRefusal() string {
	desc, repair, _ := w.state()
	if desc == "" {
		return ""
	}
	if strings.HasPrefix(repair, "failed") {
		return "corrupt: " + desc + "; repair " + repair + ": move the store away and restart (docs/configuration.md)"
	}
	return "corrupt: " + desc
}

// checkCorruption runs on the supervisor when the watch is poked. It reports a new corruption
// once (log and EventCorrupt), and makes a corrupt secondary resync: it
// marks itself Inconsistent, durably, and drops its session, so that its
// next handshake asks the primary for a snapshot. The snapshot replaces
// every replicated key (receiveSnapshot excises their spans), then
// finishSnapshot reads the whole store back (verifyRepair). A primary
// stays primary: its data may be the pair's only copy, and its commits do
// not read old files; the daemon hands the role over to an in-sync peer.
func (s *Store) checkCorruption() {
	w := s.corr
	w.mu.Lock()
	desc, path, unchecked := w.desc, w.path, w.desc != "" && !w.notified && w.checked != w.desc
	w.mu.Unlock()
	if unchecked && s.confirmReport(desc, path) {
		return // the read-back pokes the watch when it is done
	}
	w.mu.Lock()
	desc, notify := w.desc, w.desc != "" && !w.notified
	w.notified = w.notified || notify
	resync := desc != "" && !w.resync && w.failed == ""
	w.mu.Unlock()
	if desc == "" {
		return
	}
	if notify {
		s.log.Error("on-disk corruption in the WIP store; it is not promotable until a snapshot replaces its data",
			zap.String("corruption", desc))
		s.emit(Event{Kind: EventCorrupt, Detail: desc})
	}
	if !resync {
		return
	}
	// Under markMu: a Force promotion cannot slip in between the role
	// check and the mark, and leave a primary marked Inconsistent on disk.
	// Not under mu across the write: on a disk that hangs here, Status and
	// the stall watch (which fails the store) must go on.
	s.markMu.Lock()
	defer s.markMu.Unlock()
	s.mu.Lock()
	if s.role != Secondary || s.closed {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	err := s.setFlag(keyInconsistent, true)
	s.mu.Lock()
	if err == nil {
		// Both under mu (corr.mu nests inside it, as in Status): no
		// status shows the store Inconsistent without its repair.
		s.inconsistent = true
		w.mu.Lock()
		w.resync = true
		w.mu.Unlock()
	}
	sess, failed := s.sess, s.failed
	s.mu.Unlock()
	if failed != nil {
		// The mark stalled (or a write beside it failed): the store is
		// not promotable, and resyncs once it is reopened.
		return
	}
	if err != nil {
		// The next report or the next role change tries again.
		s.log.Error("corrupt store: marking it inconsistent failed", zap.Error(err))
		return
	}
	s.log.Warn("corrupt store: resyncing from the primary by snapshot", zap.String("corruption", desc))
	if sess != nil {
		sess.close(errors.New("wip: the store is corrupt; resyncing by snapshot"))
	}
	s.Redial()
}

// confirmReport decides whether a new corruption report (desc, about the
// file at path) needs confirming before the store acts on it, and if so
// starts the confirmation and reports true. A snapshot's excise takes the
// corrupt file out of the LSM and cancels the compactions that read it,
// but one already reading it may still meet the bad block and report it,
// after the repair's read-back found the store clean (seen in the lab: 12
// ms after it). Acting on it would mark a repaired store Inconsistent
// again, as the active fails.
//
// A report about a table that is still live and whole is taken as it is.
// One about a file that is gone, or that only backs virtual tables (the
// excise left the keys outside its spans), is confirmed by a full
// read-back of the store, on its own goroutine: it takes seconds on a
// large store, and the supervisor that calls this also times the peer's
// acks. A clean read drops the report; a read that meets corruption
// replaces it with what it met. Either way the watch is poked again.
func (s *Store) confirmReport(desc, path string) bool {
	w := s.corr
	if !strings.HasSuffix(path, ".sst") || s.liveTable(path) {
		w.mu.Lock()
		if w.desc == desc {
			w.checked = desc
		}
		w.mu.Unlock()
		return false
	}
	w.mu.Lock()
	running := w.confirming
	w.confirming = true
	w.mu.Unlock()
	if running {
		return true
	}
	s.wg.Add(1) // the supervisor, a member, is running: Close is not past its Wait
	go func() {
		defer s.wg.Done()
		err := s.db.CheckLevels(nil)
		w.mu.Lock()
		w.confirming = false
		dropped := false
		if w.desc == desc && !w.notified {
			if err == nil {
				w.desc, w.path, dropped = "", "", true
			} else if info := pebble.ExtractDataCorruptionInfo(err); info != nil {
				// Confirmed, but elsewhere: say what the read met.
				w.desc, w.path = describeCorruption(*info), info.Path
			}
			w.checked = w.desc
		}
		w.mu.Unlock()
		if dropped {
			s.log.Info("corruption report dropped: it names a file the store no longer holds whole, and a full read-back found no corruption",
				zap.String("report", desc))
		}
		w.poke()
	}()
	return true
}

// liveTable reports whether path is the file of a live, whole (not
// virtual) table of the store. When the LSM cannot be listed it says yes:
// the report is then taken as it is.
func (s *Store) liveTable(path string) bool {
	levels, err := s.db.SSTables()
	if err != nil {
		return true
	}
	name := filepath.Base(path)
	for _, level := range levels {
		for _, t := range level {
			if !t.Virtual && t.BackingSSTNum.String()+".sst" == name {
				return true
			}
		}
	}
	return false
}

// Verify reads every key of every level of the store, checking each
// block's checksum (pebble's CheckLevels), and returns the number of
// point keys read. Pebble reads a block only when something needs it, so
// a bad block can lie unseen until a failover needs its data; the daemon
// runs Verify on the passive now and then to find it first. Corruption
// found is reported like any other (Status.Corruption; a secondary then
// resyncs) and returned.
func (s *Store) Verify() (points int64, err error) {
	var st pebble.CheckLevelsStats
	if err := s.db.CheckLevels(&st); err != nil {
		return st.NumPoints, fmt.Errorf("wip: verify: %w", s.readErr(err))
	}
	return st.NumPoints, nil
}

// Scrub reads every live key and value of the store, in key order, at
// about rate bytes of keys and values per second (0: as fast as it can):
// the primary's read-back, where Verify would compete with the commits at
// full speed. Pebble checks each block's checksum as it loads it, so a bad
// block among those that hold live data is found and reported
// (Status.Corruption, EventCorrupt) as by any read, and returned. It reads
// in chunks of scrubChunk bytes, each through its own iterator, so that a
// slow scrub keeps no file from compaction's deletion for longer than a
// chunk. It returns the number of keys read; ctx ends it early.
func (s *Store) Scrub(ctx context.Context, rate int64) (keys int64, err error) {
	var from []byte
	for {
		start := s.clk.Now()
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: from})
		if err != nil {
			return keys, fmt.Errorf("wip: scrub: %w", s.readErr(err))
		}
		var n int64
		more := false
		for valid := it.First(); valid; valid = it.Next() {
			keys++
			n += int64(len(it.Key()) + len(it.Value()))
			if n >= scrubChunk {
				from, more = append(bytes.Clone(it.Key()), 0), true // the next key
				break
			}
		}
		if err := it.Close(); err != nil {
			return keys, fmt.Errorf("wip: scrub: %w", s.readErr(err))
		}
		if !more {
			return keys, nil
		}
		if err := clock.Sleep(ctx, s.clk, scrubPause(n, rate, s.clk.Since(start))); err != nil {
			return keys, err
		}
		if err := ctx.Err(); err != nil {
			return keys, err
		}
	}
}

// scrubChunk is how many bytes of keys and values one iterator of Scrub
// reads.
const scrubChunk = 1 << 20

// scrubPause is how long Scrub waits after reading n bytes in took to hold
// rate bytes per second (0: no limit).
func scrubPause(n, rate int64, took time.Duration) time.Duration {
	if rate <= 0 {
		return 0
	}
	return max(time.Duration(float64(n)/float64(rate)*float64(time.Second))-took, 0)
}

// corruptionError is pebble's corruption error, said as Status.Corruption
// says it (the file, its key bounds, the error) instead of with pebble's
// "<corruption detail carrier>"; errors.Is and pebble.IsCorruptionError
// still see pebble's.
type corruptionError struct {
	desc string
	err  error
}

func (e *corruptionError) Error() string { return e.desc }
func (e *corruptionError) Unwrap() error { return e.err }

// readErr is what a read the store serves (Get, Scan, Verify, Scrub, a
// snapshot or the log sent to the peer) returns for pebble's error: a
// table the disk cannot read is reported (corruptWatch.unreadable), and
// pebble's corruption error is said plainly (plainCorruption).
func (s *Store) readErr(err error) error {
	s.corr.unreadable(err)
	return plainCorruption(err)
}

// plainCorruption returns err as a corruptionError if it is pebble's data
// corruption error, and err itself otherwise, so that what reaches an
// operator names the file plainly.
func plainCorruption(err error) error {
	if info := pebble.ExtractDataCorruptionInfo(err); info != nil {
		return &corruptionError{desc: describeCorruption(*info), err: err}
	}
	return err
}

// verifyRepair runs after a snapshot completed on a store that reported
// corruption: pebble reads every key of every level back (CheckLevels
// verifies each block's checksum). A clean read clears the corruption; a
// failed one keeps it, and the store does not try again by itself.
func (s *Store) verifyRepair() {
	w := s.corr
	w.mu.Lock()
	desc := w.desc
	w.mu.Unlock()
	if desc == "" {
		return
	}
	err := s.db.CheckLevels(nil)
	if s.o.testVerify != nil {
		err = s.o.testVerify(err)
	}
	w.mu.Lock()
	if err == nil {
		w.desc, w.path, w.notified, w.resync, w.failed, w.checked = "", "", false, false, "", ""
	} else {
		w.failed = err.Error()
	}
	w.mu.Unlock()
	if err != nil {
		s.log.Error("corrupt store: still corrupt after the snapshot; not promotable", zap.String("corruption", desc), zap.Error(err))
		s.emit(Event{Kind: EventCorrupt, Detail: fmt.Sprintf("%s; still corrupt after a snapshot: %v", desc, err)})
		return
	}
	s.log.Info("corrupt store repaired: the snapshot replaced its data and a full read found no corruption", zap.String("was", desc))
	s.emit(Event{Kind: EventCorruptRepaired, Detail: "the snapshot replaced the data of " + desc})
}
