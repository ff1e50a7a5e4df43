package wip

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
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
}

func (w localWrite) String() string {
	if w.kind == writeMeta {
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
	mu   sync.Mutex
	next uint64
	open map[uint64]localWrite
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
	w.mu.Unlock()
}

// oldest returns the write under way that began first.
func (w *stallWatch) oldest() (id uint64, lw localWrite, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, x := range w.open {
		if !ok || x.since.Before(lw.since) || x.since.Equal(lw.since) && i < id {
			id, lw, ok = i, x, true
		}
	}
	return id, lw, ok
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
func (s *Store) stallLoop() {
	defer s.wg.Done()
	poll := min(max(s.o.StallTimeout/8, 10*time.Millisecond), time.Second)
	var warned uint64
	clock.Loop(s.ctx(), s.clk, poll, func(now time.Time) time.Duration {
		warned = s.checkStall(now, warned)
		return poll
	})
}

// checkStall fails the store when the oldest local write under way has
// taken StallTimeout, warning once at half of it (warned: the write last
// warned about, returned updated). Once the store has failed, commits that
// reach the queue are answered here: the committer may be stuck in the
// write that stalled.
func (s *Store) checkStall(now time.Time, warned uint64) uint64 {
	id, lw, ok := s.stall.oldest()
	if ok {
		age := now.Sub(lw.since)
		switch {
		case age >= s.o.StallTimeout:
			s.failStalled(lw, age)
		case age >= s.o.StallTimeout/2 && id != warned:
			warned = id
			s.log.Warn("a local write is slow: the store fails if it takes stall-timeout",
				zap.Stringer("write", lw), zap.Duration("under_way", age), zap.Duration("stall_timeout", s.o.StallTimeout))
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

// failStalled fails the store on a write that has stalled. The callers of
// the committer's group under way stop waiting (ErrOutcomeUnknown: the
// group went to the peer before its local write), so that a Demote and
// the runtime's pause are not held by a disk that may never come back; a
// secondary's session ends, so the primary does not wait for its acks.
// The stuck goroutine itself stays in the write until it returns, and
// Close waits for it (only the process's exit ends a write the kernel
// never completes).
func (s *Store) failStalled(lw localWrite, age time.Duration) {
	s.mu.Lock()
	if s.failed != nil && s.writing == nil {
		s.mu.Unlock()
		return
	}
	if s.failed == nil {
		s.failLocked(fmt.Errorf("%w: %s has not completed in %v: the disk has stalled (%w)",
			ErrFailed, lw, age.Round(time.Millisecond), ErrStalled))
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
