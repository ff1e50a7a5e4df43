package wip

import (
	"errors"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// writeWatch follows pebble's own writes (flushes, compactions) and its
// write stalls, for Status and the log.
//
// A file system that fills up while the WAL still has preallocated room
// fails the flushes first: pebble reports each failed attempt as a
// background error and tries again at once, so on a full disk it reported
// thousands a second (measured: 502,898 in five minutes, each a log line
// with a stack trace). Meanwhile commits go on into the WAL until the
// memtables are full, and then stall (pebble.Commit blocks) until a flush
// succeeds. So the watch logs the first error of a run and then at most
// one line a minute counting the others, and keeps the last error and the
// stall for Status (BackgroundError, StalledSince): the daemon's alarm.
//
// The watch also says which of pebble's jobs fail in the run (flushes,
// compactions, or neither: pebble's other background work, reading a
// table's properties) and whether the last error is a full file system:
// the operator's remedy differs (free space, or replace a disk that fails
// reads or writes). Pebble reports a failed flush or compaction (FlushEnd,
// CompactionEnd with Err) before the background error itself, so the
// first line of a run names it. A run ends when every job that failed in
// it has succeeded again: a flush ends failing flushes, a compaction
// failing compactions (pebble picks a failed one again within 30 s; the
// store holds it at most 1 s: compactpace.go), either ends failing reads.
// A flush alone does not end a run of failed compactions: compactions
// that fail on reads (a bad sector under a table) leave flushes working
// while level 0 grows.
type writeWatch struct {
	log *zap.Logger
	clk clock.Clock

	mu           sync.Mutex
	err          error     // the last background error of the current run; nil when none
	since        time.Time // the run's first error
	count        uint64    // errors in the run
	total        uint64    // errors since the store opened, all runs
	jobs         failedJobs
	logged       time.Time // the last line logged
	unlogged     uint64    // errors since that line
	stalledSince time.Time // zero when commits are not stalled
	stallReason  string
}

// bgLogEvery bounds the log of a run of background errors.
const bgLogEvery = time.Minute

// failedJobs is the set of pebble's jobs that failed in a run.
type failedJobs uint8

const (
	failedFlush failedJobs = 1 << iota
	failedCompaction
	failedRead // pebble's other background work (a table's properties)
)

// String names the jobs for Status and the log: "flushes",
// "compactions", "flushes and compactions", or "" for neither (pebble's
// other background work: reading a table's properties).
func (j failedJobs) String() string {
	switch j &^ failedRead {
	case failedFlush:
		return "flushes"
	case failedCompaction:
		return "compactions"
	case failedFlush | failedCompaction:
		return "flushes and compactions"
	}
	return ""
}

// consequence is what the failures of j do to the commits.
func (j failedJobs) consequence() string {
	switch {
	case j&failedFlush != 0:
		return "commits stall once the memtables are full"
	case j&failedCompaction != 0:
		return "commits stall if level 0 grows to its limit"
	}
	return "commits go on"
}

// noSpace reports whether err is a full file system (or quota).
func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

func newWriteWatch(log *zap.Logger, clk clock.Clock) *writeWatch {
	return &writeWatch{log: log, clk: clk}
}

// listener adds the watch's handlers to el.
func (w *writeWatch) listener(el *pebble.EventListener) {
	el.BackgroundError = w.backgroundError
	el.FlushEnd = func(i pebble.FlushInfo) {
		if i.Err == nil {
			w.succeeded(failedFlush)
		} else {
			w.failed(failedFlush)
		}
	}
	el.CompactionEnd = func(i pebble.CompactionInfo) {
		switch {
		case i.Err == nil:
			w.succeeded(failedCompaction)
		case !errors.Is(i.Err, pebble.ErrCancelledCompaction): // not an error: pebble does not report it
			w.failed(failedCompaction)
		}
	}
	el.WriteStallBegin = func(i pebble.WriteStallBeginInfo) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.stalledSince.IsZero() {
			w.stalledSince, w.stallReason = w.clk.Now(), i.Reason
		}
	}
	el.WriteStallEnd = func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.stalledSince.IsZero() && w.err != nil {
			w.log.Info("commits no longer stalled", zap.Duration("stalled", w.clk.Since(w.stalledSince)))
		}
		w.stalledSince, w.stallReason = time.Time{}, ""
	}
}

func (w *writeWatch) backgroundError(err error) {
	now := w.clk.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.jobs&^failedRead == 0 {
		w.jobs |= failedRead // no flush or compaction failed just before
	}
	if w.err == nil {
		w.since, w.count, w.unlogged = now, 0, 0
		w.log.Error(w.summary()+"; they are retried, and "+w.jobs.consequence(), zap.Error(err), zap.Bool("no_space", noSpace(err)))
		w.logged = now
	} else {
		w.unlogged++
		if now.Sub(w.logged) >= bgLogEvery {
			w.log.Error(w.summary()+" still", zap.Error(err), zap.Bool("no_space", noSpace(err)), zap.Uint64("errors_since_last_line", w.unlogged), zap.Duration("for", now.Sub(w.since)))
			w.logged, w.unlogged = now, 0
		}
	}
	w.err = err
	w.count++
	w.total++
}

// summary names what fails in the run. w.mu is held.
func (w *writeWatch) summary() string {
	if j := w.jobs.String(); j != "" {
		return "pebble's " + j + " fail"
	}
	return "pebble's background reads fail"
}

// failed records that one of pebble's jobs failed; its background error
// follows.
func (w *writeWatch) failed(j failedJobs) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.jobs |= j
}

// succeeded records that one of pebble's jobs succeeded: the jobs of
// that kind no longer fail, nor do its background reads, and the run ends
// when no job fails any more.
func (w *writeWatch) succeeded(j failedJobs) {
	w.mu.Lock()
	defer w.mu.Unlock()
	was := w.summary()
	w.jobs &^= j | failedRead
	if w.err != nil && w.jobs == 0 {
		first := "a flush"
		if j == failedCompaction {
			first = "a compaction"
		}
		w.log.Info("pebble writes its files again", zap.String("first", first), zap.String("last_failing", was), zap.Uint64("errors", w.count), zap.Duration("for", w.clk.Since(w.since)))
		w.err = nil
	}
}

// watchState is the watch's part of Status.
type watchState struct {
	err          string // the run's last error; "" when none
	since        time.Time
	count, total uint64
	jobs         string // failedJobs.String of the run
	noSpace      bool   // the last error is a full file system
	stalledSince time.Time
	stallReason  string
}

// state returns the current run of background errors (err "" when none)
// and when commits began to stall (zero when they do not) and why.
func (w *writeWatch) state() watchState {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := watchState{total: w.total, stalledSince: w.stalledSince, stallReason: w.stallReason}
	if w.err != nil {
		st.err, st.since, st.count, st.jobs, st.noSpace = w.err.Error(), w.since, w.count, w.jobs.String(), noSpace(w.err)
	}
	return st
}
