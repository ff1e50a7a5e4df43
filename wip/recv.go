package wip

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
)

// receiveSnapshot replaces the local data with the primary's snapshot. The
// store is durably Inconsistent from the first byte until the last, so an
// interrupted snapshot is simply started again at the next session.
func (s *Store) receiveSnapshot(br *bufio.Reader) error {
	f, _, err := readFrame(br, nil)
	if err == nil && f.typ != frameSnapBegin {
		err = fmt.Errorf("%w: expected snapshot begin, got type %d", ErrFrameType, f.typ)
	}
	var l lineage
	var total uint64
	if err == nil {
		r := &reader{b: f.body}
		l = r.lineage()
		total = r.u64("snap.total")
		err = r.done("snap_begin")
	}
	if err != nil {
		s.reject("frame", fmt.Errorf("snapshot: %w", err))
		return err
	}
	// Wipe everything but the node-local flags, durably, before the first pair.
	pb := s.db.NewBatch()
	_ = pb.Set(keyInconsistent, nil, nil)
	_ = pb.DeleteRange(userPrefix, userPrefixEnd, nil)
	_ = pb.DeleteRange(logPrefix, logPrefixEnd, nil)
	_ = pb.DeleteRange(keyHistPrefix, prefixEnd(keyHistPrefix), nil)
	_ = pb.Delete(keyMarker, nil)
	_ = pb.Delete(keyPruned, nil)
	err = s.syncCommitMeta("snapshot start", pb)
	_ = pb.Close()
	if err != nil {
		return &snapshotIOError{fmt.Errorf("wip: snapshot: clearing the store: %w", err)}
	}
	// The range deletions hide the old log and user keys; excising their
	// spans also takes the files that held them out of the LSM at once, so
	// no compaction reads them again (a corrupt store's bad block among
	// them, corrupt.go). It is tidying: on error the deletions stand.
	for _, sp := range []pebble.KeyRange{{Start: logPrefix, End: logPrefixEnd}, {Start: userPrefix, End: userPrefixEnd}} {
		if err := s.db.Excise(s.ctx(), sp); err != nil {
			s.log.Warn("snapshot: excising the old data failed; its range deletion stands", zap.ByteString("from", sp.Start), zap.Error(err))
		}
	}
	s.retMu.Lock()
	s.retained, s.retBytes, s.peerHolds, s.heldN, s.heldBytes = nil, 0, 0, 0, 0
	s.retMu.Unlock()
	s.mu.Lock()
	s.inconsistent = true
	s.snapDone, s.snapTotal = 0, int64(total)
	s.lsn, s.durable, s.csum, s.history = 0, 0, 0, nil
	s.mu.Unlock()
	s.emit(Event{Kind: EventSnapshotStarted, Detail: fmt.Sprintf("snapshot of LSN %d, about %d bytes", l.lsn, total)})
	s.log.Info("snapshot started", zap.Uint64("lsn", l.lsn), zap.Uint64("bytes", total))
	si, err := s.newSnapIngest()
	if err != nil {
		return &snapshotIOError{fmt.Errorf("wip: snapshot: %w", err)}
	}
	defer si.abort()
	var pairs uint64
	var chunks int
	for {
		f, _, err := readFrame(br, nil)
		if err != nil {
			s.reject("frame", fmt.Errorf("snapshot: %w", err))
			return err
		}
		switch f.typ {
		case frameSnapChunk:
			var werr error
			n, err := decodeSnapChunk(f.body, func(k, v []byte) {
				if werr == nil {
					werr = si.add(k, v)
				}
			})
			if err == nil {
				err = werr
			}
			switch {
			case errors.Is(err, ErrFrameMalformed): // the peer's frame or key order
				s.reject("frame", fmt.Errorf("snapshot chunk: %w", err))
				return err
			case err != nil: // the receiver's own I/O
				return &snapshotIOError{fmt.Errorf("wip: snapshot: writing tables: %w", err)}
			}
			pairs += uint64(n)
			chunks++
			if s.o.testSnapChunk != nil {
				if err := s.o.testSnapChunk(chunks); err != nil {
					return err
				}
			}
			s.mu.Lock()
			s.snapDone += int64(len(f.body))
			s.counters.SnapshotBytesIn += uint64(len(f.body))
			s.mu.Unlock()
		case frameSnapEnd:
			if len(f.body) != 8 || binary.BigEndian.Uint64(f.body) != pairs {
				err := fmt.Errorf("%w: snapshot end: %d pairs received, frame says %x", ErrFrameMalformed, pairs, f.body)
				s.reject("frame", err)
				return err
			}
			if err := si.ingest(); err != nil {
				return &snapshotIOError{fmt.Errorf("wip: snapshot: %w", err)}
			}
			return s.finishSnapshot(l, pairs)
		case frameReject:
			return fmt.Errorf("%w: %s", ErrRejected, rejectText(f.body))
		default:
			err := fmt.Errorf("%w: type %d inside a snapshot", ErrFrameType, f.typ)
			s.reject("frame", err)
			return err
		}
	}
}

// snapshotIOError is a snapshot that failed on the receiver's own store
// (clearing it, writing or ingesting the tables, the final mark): the
// session ran, but nothing came of it, so the secondary backs off before
// it asks again (Status.LastError says why).
type snapshotIOError struct{ err error }

func (e *snapshotIOError) Error() string { return e.err.Error() }
func (e *snapshotIOError) Unwrap() error { return e.err }

// snapTmpDir, inside the store's directory, holds a snapshot's sstables
// until they are ingested.
const snapTmpDir = "snapshot.tmp"

// snapTableBytes cuts the snapshot's sstables (a variable for tests).
var snapTableBytes uint64 = 64 << 20

// snapIngest writes the snapshot's pairs, which arrive in key order, into
// sstables for the bottom level and ingests them in one IngestAndExcise of
// the user key span: each byte is written once, with no WAL, memtable or
// compaction, as CockroachDB applies its Raft snapshots.
type snapIngest struct {
	s     *Store
	fs    vfs.FS
	dir   string
	wo    sstable.WriterOptions
	w     *sstable.Writer
	paths []string
	last  []byte // the previous key: the stream must ascend
	key   []byte // reused: the writer copies what it keeps
}

func (s *Store) newSnapIngest() (*snapIngest, error) {
	fs := s.po.FS
	dir := fs.PathJoin(s.dir, snapTmpDir)
	if err := fs.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	wo := s.po.MakeWriterOptions(len(s.po.Levels)-1, s.db.TableFormat())
	return &snapIngest{s: s, fs: fs, dir: dir, wo: wo}, nil
}

func (si *snapIngest) add(k, v []byte) error {
	si.key = append(append(si.key[:0], userPrefix...), k...)
	if si.last != nil && bytes.Compare(si.key, si.last) <= 0 {
		return fmt.Errorf("%w: snapshot key %q does not follow %q", ErrFrameMalformed, si.key, si.last)
	}
	if si.w == nil {
		path := si.fs.PathJoin(si.dir, fmt.Sprintf("%06d.sst", len(si.paths)))
		f, err := si.fs.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return err
		}
		si.paths = append(si.paths, path)
		si.w = sstable.NewWriter(newSnapWritable(f), si.wo)
	}
	if err := si.w.Set(si.key, v); err != nil {
		return err
	}
	si.last = append(si.last[:0], si.key...)
	if si.w.Raw().EstimatedSize() >= snapTableBytes {
		return si.finishTable()
	}
	return nil
}

// snapWritable is objstorageprovider.NewFileWritable with a 1 MiB buffer
// instead of 4 KiB: a snapshot table is written in 256 times fewer
// system calls (measured: writes took 40 % of the receiver's CPU).
type snapWritable struct {
	f  vfs.File
	bw *bufio.Writer
}

func newSnapWritable(f vfs.File) *snapWritable {
	return &snapWritable{f: f, bw: bufio.NewWriterSize(f, 1<<20)}
}

func (w *snapWritable) Write(p []byte) error {
	_, err := w.bw.Write(p)
	return err
}

func (w *snapWritable) Finish() error {
	err := w.bw.Flush()
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (w *snapWritable) Abort() { _ = w.f.Close() }

// finishTable closes (and syncs) the table being written.
func (si *snapIngest) finishTable() error {
	if si.w == nil {
		return nil
	}
	err := si.w.Close()
	si.w = nil
	return err
}

// ingest makes the snapshot's pairs the store's user keys, atomically:
// whatever the span still held is excised.
func (si *snapIngest) ingest() error {
	if err := si.finishTable(); err != nil {
		return err
	}
	if len(si.paths) > 0 {
		if _, err := si.s.db.IngestAndExcise(context.Background(), si.paths, nil, nil,
			pebble.KeyRange{Start: userPrefix, End: userPrefixEnd}); err != nil {
			return fmt.Errorf("ingesting %d sstables: %w", len(si.paths), err)
		}
	}
	return nil
}

// abort drops the tables, whether unfinished or already ingested (pebble
// holds its own links to those) and their directory.
func (si *snapIngest) abort() {
	if si.w != nil {
		_ = si.w.Close()
		si.w = nil
	}
	_ = si.fs.RemoveAll(si.dir)
}

func (s *Store) finishSnapshot(l lineage, pairs uint64) error {
	pb := s.db.NewBatch()
	defer pb.Close()
	var m [24]byte
	binary.BigEndian.PutUint64(m[:], l.epoch)
	binary.BigEndian.PutUint64(m[8:], l.lsn)
	binary.BigEndian.PutUint64(m[16:], l.csum)
	_ = pb.Set(keyMarker, m[:], nil)
	_ = pb.Set(keyPruned, m[:], nil) // lineage comparison at the new window's edge
	for _, h := range l.history {
		var e8, f8 [8]byte
		binary.BigEndian.PutUint64(e8[:], h.epoch)
		binary.BigEndian.PutUint64(f8[:], h.first)
		_ = pb.Set(append(append([]byte(nil), keyHistPrefix...), e8[:]...), f8[:], nil)
	}
	_ = pb.Delete(keyInconsistent, nil)
	if err := s.syncCommitMeta("snapshot marker", pb); err != nil {
		return &snapshotIOError{fmt.Errorf("wip: snapshot: finishing: %w", err)}
	}
	s.mu.Lock()
	s.lsn, s.durable, s.csum = l.lsn, l.lsn, l.csum
	s.history = append([]histEntry(nil), l.history...)
	if l.epoch > s.epoch {
		s.epoch = l.epoch
	}
	for _, h := range l.history {
		s.epoch = max(s.epoch, h.epoch)
	}
	s.inconsistent = false
	s.peerState = PeerCatchingUp
	s.counters.Snapshots++
	s.mu.Unlock()
	s.log.Info("snapshot complete", zap.Uint64("lsn", l.lsn), zap.Uint64("pairs", pairs))
	s.emit(Event{Kind: EventSnapshotDone, Detail: fmt.Sprintf("snapshot of LSN %d complete, %d pairs", l.lsn, pairs)})
	s.verifyRepair()
	return nil
}

// apply is the secondary's stream: a reader goroutine decodes frames, this
// goroutine applies everything available as one pebble.Sync batch (group
// commit on the receiving side too) and acks the last LSN cumulatively.
func (s *Store) apply(ss *session, br *bufio.Reader, ver byte) error {
	type item struct {
		f   frame
		err error
	}
	ch := make(chan item, 256)
	go func() {
		for {
			f, _, err := readFrame(br, nil)
			select {
			case ch <- item{f, err}:
			case <-ss.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// The acker waits for each batch's WAL sync in order, then publishes
	// the new LSN and acks it, while this goroutine already applies the next
	// batch: pebble merges the syncs, and the receiver never makes a group
	// wait for the previous group's fsync.
	type pending struct {
		pb         *pebble.Batch
		first, lsn uint64
		csum       uint64
		epoch      uint64
		hist       []histEntry
		n          int
		applied    time.Time // when it went to pebble (Latencies.LocalSync)
		write      uint64    // its entry in the stall watch, ended after the sync
		inSync     bool
		inSyncAt   uint64
	}
	pch := make(chan pending, 64)
	ackDone := make(chan struct{})
	go func() {
		defer close(ackDone)
		bw := bufio.NewWriterSize(ss.conn, 4<<10)
		var inSyncAt uint64
		var haveInSync bool
		failed := false
		var toAck, acked uint64
		// While the stream is idle, the last ack is sent again every
		// quarter of DeadSessionAfter: an ack the primary's TCP does not
		// acknowledge is how this side finds a cut link (TCP_USER_TIMEOUT,
		// see dialer) in time to move to another one. Acks are cumulative,
		// so a repeated one changes nothing on the primary, of any version.
		reack := s.clk.NewTicker(max(s.o.DeadSessionAfter/4, 10*time.Millisecond))
		defer reack.Stop()
		wrote := false
		muted := false // a test stopped this node's acks (testOutput)
		mayAck := func() bool {
			if !muted && !s.output() {
				muted = true
				ss.close(errOutputStopped)
			}
			return !muted
		}
		for {
			var p pending
			select {
			case q, ok := <-pch:
				if !ok {
					return
				}
				p = q
			case <-reack.C():
				if acked > 0 && !wrote && !failed && mayAck() {
					if writeFrame(bw, ver, frameAck, putU64(nil, acked)) != nil || bw.Flush() != nil {
						ss.close(errors.New("wip: writing ack"))
					}
				}
				wrote = false
				continue
			}
			if failed {
				if p.pb != nil {
					// Pebble's log writer still holds a batch applied with
					// ApplyNoSyncWait until its sync: wait before Close.
					_ = syncWait(p.pb)
					_ = p.pb.Close()
					s.stall.end(p.write)
				}
				continue
			}
			if p.inSync {
				inSyncAt, haveInSync = p.inSyncAt, true
			} else {
				err := syncWait(p.pb)
				_ = p.pb.Close()
				s.stall.end(p.write)
				if err != nil {
					failed = true
					s.mu.Lock()
					s.failLocked(fmt.Errorf("%w: applying LSN %d..%d: %v", ErrFailed, p.first, p.lsn, err))
					s.mu.Unlock()
					ss.close(err)
					continue
				}
				now := s.clk.Now()
				s.mu.Lock()
				s.lat.observe(now, localSyncHist, now.Sub(p.applied))
				s.lsn, s.durable, s.csum, s.epoch = p.lsn, p.lsn, p.csum, max(s.epoch, p.epoch)
				s.history = append(s.history, p.hist...)
				if p.lsn > s.peerLSN {
					s.peerLSN = p.lsn
				}
				s.counters.EntriesApplied += uint64(p.n)
				s.cond.Broadcast()
				s.mu.Unlock()
				toAck = p.lsn
			}
			// While more is queued, one later cumulative ack covers this.
			if toAck > acked && len(pch) == 0 && !muted {
				if s.o.testBeforeAck != nil {
					s.o.testBeforeAck(toAck)
				}
				if mayAck() {
					if writeFrame(bw, ver, frameAck, putU64(nil, toAck)) != nil || bw.Flush() != nil {
						ss.close(errors.New("wip: writing ack"))
					}
					acked, wrote = toAck, true
				}
			}
			if haveInSync {
				s.mu.Lock()
				durable := s.durable
				wasOutdated := s.outdated
				if durable >= inSyncAt {
					s.peerState = PeerInSync
				}
				s.mu.Unlock()
				if durable >= inSyncAt {
					haveInSync = false
					if wasOutdated {
						if err := s.setFlag(keyOutdated, false); err != nil {
							ss.close(err)
							continue
						}
						s.mu.Lock()
						s.outdated = false
						s.mu.Unlock()
						s.log.Info("caught up; no longer outdated", zap.Uint64("lsn", durable))
					}
				}
			}
		}
	}()
	defer func() {
		close(pch)
		<-ackDone
	}()
	s.mu.Lock()
	lsn, csum, epoch := s.lsn, s.csum, s.epoch
	hist := append([]histEntry(nil), s.history...)
	s.mu.Unlock()
	for {
		var items []item
		select {
		case it := <-ch:
			items = append(items, it)
		case <-ss.done:
			return ss.err
		}
		size := len(items[0].f.body)
	more:
		// Up to 8 MiB per pebble batch: bigger batches cost more in copying
		// (pebble grows the batch buffer) than they save in syncs.
		for len(items) < 256 && size < 8<<20 {
			select {
			case it := <-ch:
				items = append(items, it)
				size += len(it.f.body)
			default:
				break more
			}
		}
		s.mu.Lock()
		role := s.role
		s.mu.Unlock()
		if role != Secondary {
			return ErrNotPrimary
		}
		var es []entry
		var newHist []histEntry
		var inSyncNotice uint64
		var haveNotice bool
		var ferr error
	loop:
		for _, it := range items {
			if it.err != nil {
				ferr = it.err
				if !ss.closed() && isFrameErr(it.err) {
					s.reject("frame", fmt.Errorf("from primary: %w", it.err))
				}
				break
			}
			switch it.f.typ {
			case frameData:
				got, primaryDurable, err := decodeData(it.f.body, ver)
				if err == nil && got[0].lsn != lsn+1 {
					err = fmt.Errorf("%w: data starts at LSN %d, expected %d", ErrFrameMalformed, got[0].lsn, lsn+1)
				}
				for _, e := range got {
					if err != nil {
						break
					}
					last := epochAt(hist, e.lsn)
					if len(newHist) > 0 {
						last = newHist[len(newHist)-1].epoch
					}
					switch {
					case e.epoch < last:
						err = fmt.Errorf("%w: entry %d has epoch %d below the current %d", ErrFrameMalformed, e.lsn, e.epoch, last)
					case roll(csum, e.epoch, e.lsn, e.ops) != e.csum:
						err = fmt.Errorf("%w: rolling checksum breaks at LSN %d", ErrFrameChecksum, e.lsn)
					}
					if err != nil {
						break
					}
					if e.epoch > last {
						newHist = append(newHist, histEntry{e.epoch, e.lsn})
					}
					csum, lsn = e.csum, e.lsn
					epoch = max(epoch, e.epoch)
				}
				if err != nil {
					s.reject("frame", fmt.Errorf("data from primary: %w", err))
					ferr = err
					break loop
				}
				es = append(es, got...)
				// Log records the primary holds durably are needed by no
				// one once this node holds them too (see retain).
				s.notePeerHolds(primaryDurable)
			case frameInSync:
				if len(it.f.body) != 8 {
					ferr = fmt.Errorf("%w: in-sync body has %d bytes", ErrFrameMalformed, len(it.f.body))
					s.reject("frame", ferr)
					break loop
				}
				inSyncNotice, haveNotice = binary.BigEndian.Uint64(it.f.body), true
			case frameReject:
				ferr = fmt.Errorf("%w: %s", ErrRejected, rejectText(it.f.body))
				break loop
			default:
				ferr = fmt.Errorf("%w: type %d in the stream", ErrFrameType, it.f.typ)
				s.reject("frame", ferr)
				break loop
			}
		}
		// Entries that checked out before a bad frame are applied; the bad
		// frame and everything after it are not.
		if len(es) > 0 {
			pb := s.db.NewBatchWithSize(2*size + 4096)
			err := s.writeEntries(pb, es)
			for _, h := range newHist {
				var e8, f8 [8]byte
				binary.BigEndian.PutUint64(e8[:], h.epoch)
				binary.BigEndian.PutUint64(f8[:], h.first)
				_ = pb.Set(append(append([]byte(nil), keyHistPrefix...), e8[:]...), f8[:], nil)
			}
			applied := s.clk.Now()
			write := s.stall.begin(localWrite{kind: writeApply, first: es[0].lsn, last: lsn, since: applied})
			if err == nil {
				err = applyNoSyncWait(s.db, pb)
			}
			if err != nil {
				s.stall.end(write)
				_ = pb.Close()
				s.mu.Lock()
				s.failLocked(fmt.Errorf("%w: applying LSN %d..%d: %v", ErrFailed, es[0].lsn, lsn, err))
				s.mu.Unlock()
				return err
			}
			hist = append(hist, newHist...)
			pch <- pending{pb: pb, applied: applied, write: write, first: es[0].lsn, lsn: lsn, csum: csum, epoch: epoch, hist: newHist, n: len(es)}
		}
		if haveNotice {
			pch <- pending{inSync: true, inSyncAt: inSyncNotice}
		}
		if ferr != nil {
			return ferr
		}
	}
}
