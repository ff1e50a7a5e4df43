package wip

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"
)

// ErrStalled says a local write did not complete within
// Options.StallTimeout: the disk has stalled (a hung device or path, a
// file system that blocks). It fails the store, wrapped with ErrFailed.
var ErrStalled = errors.New("wip: local write stalled")

// ErrOutcomeUnknown says the caller stopped waiting for a commit that may
// yet become durable, here or on the peer: its context ended, or the store
// failed on a stalled disk while the commit's write was under way (the
// group had been sent to the peer). Whoever resumes the work reads the
// store to learn whether the commit is there; it is all or nothing.
var ErrOutcomeUnknown = errors.New("wip: commit outcome unknown")

// Kinds of local write (stallWatch).
const (
	writeCommit = "the commit of LSN"  // a primary's group: WAL write and fsync
	writeApply  = "the apply of LSN"   // a batch a secondary applies, and its fsync
	writeMeta   = "the store's record" // a flag or marker the store persists
)

// localWrite is one local write under way.
type localWrite struct {
	kind        string
	first, last uint64 // LSNs (commit, apply); 0 otherwise
	name        string // meta: which record
	since       time.Time
	// frozen is the time the process did not run while the write was
	// under way (a paused VM, a stopped process), as the stall loop saw
	// it: not the disk's, so not counted against StallTimeout.
	frozen time.Duration
}

// age is how long the write has been under way at now, frozen time not
// counted.
func (w localWrite) age(now time.Time) time.Duration { return max(now.Sub(w.since)-w.frozen, 0) }

// took says how long the write has taken at now, for an operator.
func (w localWrite) took(now time.Time) string {
	s := w.age(now).Round(time.Millisecond).String()
	if w.frozen > 0 {
		s += fmt.Sprintf(" (not counting %v while the process was frozen)", w.frozen.Round(time.Millisecond))
	}
	return s
}

func (w localWrite) String() string {
	if w.kind == writeMeta || w.kind == writeProbe {
		return w.kind + " " + w.name
	}
	return fmt.Sprintf("%s %d..%d", w.kind, w.first, w.last)
}

// stallWatch keeps the local writes under way, so that one that does not
// come back is seen (Store.checkStall). A pebble write blocks the caller's
// goroutine in the kernel or in pebble's commit pipeline, and nothing but
// the clock can tell it from a slow one. At most a few writes are under way
// at a time (the committer's or the applier's, and a flag).
type stallWatch struct {
	mu    sync.Mutex
	next  uint64 // writes begun
	ended uint64
	open  map[uint64]localWrite
}

func newStallWatch() *stallWatch { return &stallWatch{open: map[uint64]localWrite{}} }

func (w *stallWatch) begin(lw localWrite) uint64 {
	w.mu.Lock()
	w.next++
	id := w.next
	w.open[id] = lw
	w.mu.Unlock()
	return id
}

func (w *stallWatch) end(id uint64) {
	w.mu.Lock()
	delete(w.open, id)
	w.ended++
	w.mu.Unlock()
}

// activity returns a count that changes whenever a write begins or ends,
// and how many are under way.
func (w *stallWatch) activity() (uint64, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.next + w.ended, len(w.open)
}

// age is how long write id (begun, not yet ended) has been under way at
// now, frozen time not counted (0 if it is not under way).
func (w *stallWatch) age(id uint64, now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	lw, ok := w.open[id]
	if !ok {
		return 0
	}
	return lw.age(now)
}

// oldest returns the write under way that began first, frozen time not
// counted.
func (w *stallWatch) oldest() (id uint64, lw localWrite, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, x := range w.open {
		xs, ls := x.since.Add(x.frozen), lw.since.Add(lw.frozen)
		if !ok || xs.Before(ls) || xs.Equal(ls) && i < id {
			id, lw, ok = i, x, true
		}
	}
	return id, lw, ok
}

// discount takes d of frozen time off every write under way at now (no
// more than it has been under way).
func (w *stallWatch) discount(now time.Time, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, x := range w.open {
		x.frozen += min(d, x.age(now))
		w.open[i] = x
	}
}

// syncCommitMeta commits pb (one of the store's own records, named by
// name) with pebble.Sync under the stall watch.
func (s *Store) syncCommitMeta(name string, pb *pebble.Batch) error {
	id := s.stall.begin(localWrite{kind: writeMeta, name: name, since: s.clk.Now()})
	defer s.stall.end(id)
	return syncCommit(pb)
}

// stallLoop checks the local writes under way every StallTimeout/8
// (10 ms..1 s) until Close: the store goroutine that owns the stall watch.
//
// The loop does no I/O, so a hung disk does not hold it up; when it runs
// more than a poll late, the process itself did not run (a paused or
// migrated VM, a stopped process, a host starved for seconds). That time
// is not the disk's: it is taken off the writes under way (discount), or
// a VM paused for longer than StallTimeout in the middle of an fsync would
// come back to a failed store, which only a restart recovers, when its
// disk is fine.
func (s *Store) stallLoop() {
	defer s.wg.Done()
	poll := min(max(s.o.StallTimeout/8, 10*time.Millisecond), time.Second)
	var warned uint64
	// The loop's own timer rather than clock.Loop's: the turn is counted
	// (stallChecks) only once the next one is armed, so that a test that
	// moves a manual clock after a turn never finds the timer armed from
	// the moved time, a poll late.
	done := s.ctx().Done()
	t := s.clk.NewTimer(poll)
	defer t.Stop()
	last := s.clk.Now()
	s.stallChecks.Add(1)
	for {
		select {
		case <-done:
			return
		case <-t.C():
		}
		now := s.clk.Now()
		if frozen := now.Sub(last) - poll; frozen > poll {
			s.stall.discount(now, frozen)
			s.log.Warn("the store's stall watch ran late: the process did not run; the time is not counted against the writes under way",
				zap.Duration("late", frozen))
		}
		warned = s.checkStall(now, warned)
		t.Reset(poll)
		last = s.clk.Now()
		s.stallChecks.Add(1)
	}
}

// checkStall fails the store when the oldest local write under way has
// taken StallTimeout, warning once at half of it and counting it in
// Counters.SlowWrites (warned: the write last warned about, returned
// updated). Once the store has failed, commits that reach the queue are
// answered here: the committer may be stuck in the write that stalled.
func (s *Store) checkStall(now time.Time, warned uint64) uint64 {
	id, lw, ok := s.stall.oldest()
	if ok {
		age := lw.age(now)
		if age >= s.o.StallTimeout/2 && id != warned {
			warned = id
			s.log.Warn("a local write is slow: the store fails if it takes stall-timeout",
				zap.Stringer("write", lw), zap.Duration("under_way", age), zap.Duration("frozen", lw.frozen), zap.Duration("stall_timeout", s.o.StallTimeout))
			s.mu.Lock()
			s.counters.SlowWrites++
			s.mu.Unlock()
		}
		if age >= s.o.StallTimeout {
			s.failStalled(lw, lw.took(now))
		}
	}
	s.mu.Lock()
	failed := s.failed
	s.mu.Unlock()
	if failed != nil {
		s.drainQueue(failed)
	}
	return warned
}

// slowWrite describes the oldest local write under way if it has taken
// half of StallTimeout by now (Status.SlowWrite), with its start.
func (s *Store) slowWrite(now time.Time) (string, time.Time) {
	_, lw, ok := s.stall.oldest()
	if !ok || lw.age(now) < s.o.StallTimeout/2 {
		return "", time.Time{}
	}
	return fmt.Sprintf("%s, under way %s of the %v stall-timeout", lw, lw.took(now), s.o.StallTimeout), lw.since
}

// failStalled fails the store on a write that has stalled. The callers of
// the committer's group under way stop waiting (ErrOutcomeUnknown: the
// group went to the peer before its local write), so that a Demote and
// the runtime's pause are not held by a disk that may never come back; a
// secondary's session ends, so the primary does not wait for its acks.
// The stuck goroutine itself stays in the write until it returns, and
// Close waits for it (only the process's exit ends a write the kernel
// never completes).
func (s *Store) failStalled(lw localWrite, took string) {
	s.mu.Lock()
	if s.failed != nil && s.writing == nil {
		s.mu.Unlock()
		return
	}
	if s.failed == nil {
		s.failLocked(fmt.Errorf("%w: %s has not completed in %s: the disk has stalled (%w)",
			ErrFailed, lw, took, ErrStalled))
	}
	if g := s.writing; g != nil && !g.answered {
		g.answered = true
		err := fmt.Errorf("%w: %w", ErrOutcomeUnknown, s.failed)
		for _, r := range g.reqs {
			r.done <- err
		}
		s.inflight -= len(g.reqs)
	}
	var sess *session
	if s.role == Secondary {
		sess = s.sess
	}
	failed := s.failed
	s.cond.Broadcast()
	s.mu.Unlock()
	if sess != nil {
		sess.close(failed)
	}
}
