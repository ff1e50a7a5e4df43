package wip

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// probeFile is the disk probe's file in the store's directory. Pebble
// ignores names it did not write.
const probeFile = "tandem-disk-probe"

// writeProbe is the stall watch's kind for a disk probe (localWrite.name:
// the file).
const writeProbe = "the disk probe of"

// probeEvery is how often an idle store probes its disk: half of
// StallTimeout, within 1 s..10 s. A disk that hangs under an idle store is
// then found within probeEvery + StallTimeout (30 s by default).
func probeEvery(stallTimeout time.Duration) time.Duration {
	return min(max(stallTimeout/2, time.Second), 10*time.Second)
}

// probeLoop probes the disk under the store while the store writes nothing
// of its own: every probeEvery in which no local write ended and none is
// under way, it writes 8 bytes in place into probeFile and syncs them,
// under the stall watch. An idle store (a passive with no commits to
// apply, an active with no jobs) otherwise does no I/O, so a disk that
// hangs under it (a lost storage path) would go unseen until the next
// commit needed it: the passive would be judged able to take over until
// its promotion hung, the active would keep a role it cannot serve. With
// the probe, the store fails as on any stalled write (ErrStalled), and the
// pair acts on it (wip-failed; the passive's heartbeat says no-follow, an
// active hands over to an in-sync passive) before a failover depends on it.
// A busy store is probed by its own writes. Errors of the probe (not
// stalls) are logged, not a failure: pebble's own writes judge a disk that
// answers. A store failed on a stall goes on probing once no write is
// under way: Status.StallOver (the disk answers again; reopening the
// store recovers it) holds while its probes complete in less than half of
// StallTimeout (stallProbed), so that a disk that hangs or fails again
// before the store is reopened clears it. Its owner is the store; it ends
// with Close.
func (s *Store) probeLoop() {
	defer s.wg.Done()
	every := probeEvery(s.o.StallTimeout)
	path := s.po.FS.PathJoin(s.dir, probeFile)
	var f vfs.File
	defer func() {
		if f != nil {
			_ = f.Close()
		}
	}()
	seen, _ := s.stall.activity()
	var lastErr error
	clock.Loop(s.ctx(), s.clk, every, func(time.Time) time.Duration {
		if n, open := s.stall.activity(); n != seen || open > 0 {
			seen = n // the store wrote (or is writing) by itself
			return every
		}
		s.mu.Lock()
		failed := s.failed != nil
		stalled := errors.Is(s.failed, ErrStalled)
		s.mu.Unlock()
		if failed && !stalled {
			return every
		}
		// The probe stays a write under way (Status) until its outcome is
		// recorded: no status shows StallOver from before a slow probe.
		id := s.stall.begin(localWrite{kind: writeProbe, name: path, since: s.clk.Now()})
		err := s.probe(&f, path)
		if stalled {
			s.stallProbed(err, s.stall.age(id, s.clk.Now())) // as the watch counts it: not while the process was frozen
		}
		s.stall.end(id)
		seen, _ = s.stall.activity()
		switch {
		case err != nil && (lastErr == nil || err.Error() != lastErr.Error()):
			s.log.Warn("the disk probe of the WIP store failed", zap.Error(err))
		case err == nil && lastErr != nil:
			s.log.Info("the disk probe of the WIP store works again")
		}
		lastErr = err
		return every
	})
}

// stallProbed records a probe of a store failed on a stall: the disk
// answers again (StallOver) while its probes complete, each in less than
// half of StallTimeout; one that fails or is slow says it does not (a disk
// that flaps), and so does one still under way at that age (Status).
func (s *Store) stallProbed(err error, took time.Duration) {
	answers := err == nil && took < s.o.StallTimeout/2
	s.mu.Lock()
	was := s.stallOver
	s.stallOver = answers
	s.mu.Unlock()
	switch {
	case answers && !was:
		s.log.Warn("the disk under the failed WIP store answers again (a probe write completed): reopening the store (restarting tandemd) recovers it")
	case !answers && was:
		s.log.Warn("the disk under the failed WIP store is slow or fails again (a probe write)", zap.Duration("took", took), zap.Error(err))
	}
}

// probe writes and syncs the probe file (path) once, opening it on first
// use. The caller has it under the stall watch.
func (s *Store) probe(f *vfs.File, path string) error {
	s.mu.Lock()
	s.counters.DiskProbes++
	n := s.counters.DiskProbes
	s.mu.Unlock()
	if *f == nil {
		nf, err := s.po.FS.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return err
		}
		*f = nf
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	if _, err := (*f).WriteAt(b[:], 0); err != nil {
		return errors.Join(err, s.reopenProbe(f))
	}
	if err := (*f).SyncData(); err != nil {
		return errors.Join(err, s.reopenProbe(f))
	}
	return nil
}

// reopenProbe closes the probe file after an error, so that the next probe
// opens it again.
func (s *Store) reopenProbe(f *vfs.File) error {
	err := (*f).Close()
	*f = nil
	return err
}
