package wip

import (
	"sync"
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
// A flush or compaction that succeeds ends the run.
type writeWatch struct {
	log *zap.Logger
	clk clock.Clock

	mu           sync.Mutex
	err          error     // the last background error of the current run; nil when none
	since        time.Time // the run's first error
	count        uint64    // errors in the run
	logged       time.Time // the last line logged
	unlogged     uint64    // errors since that line
	stalledSince time.Time // zero when commits are not stalled
	stallReason  string
}

// bgLogEvery bounds the log of a run of background errors.
const bgLogEvery = time.Minute

func newWriteWatch(log *zap.Logger, clk clock.Clock) *writeWatch {
	return &writeWatch{log: log, clk: clk}
}

// listener adds the watch's handlers to el.
func (w *writeWatch) listener(el *pebble.EventListener) {
	el.BackgroundError = w.backgroundError
	el.FlushEnd = func(i pebble.FlushInfo) {
		if i.Err == nil {
			w.wrote("a flush")
		}
	}
	el.CompactionEnd = func(i pebble.CompactionInfo) {
		if i.Err == nil {
			w.wrote("a compaction")
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
	if w.err == nil {
		w.since, w.count, w.unlogged = now, 0, 0
		w.log.Error("pebble cannot write its files (a flush or a compaction failed); it retries, and commits stall once the memtables are full", zap.Error(err))
		w.logged = now
	} else {
		w.unlogged++
		if now.Sub(w.logged) >= bgLogEvery {
			w.log.Error("pebble still cannot write its files", zap.Error(err), zap.Uint64("errors_since_last_line", w.unlogged), zap.Duration("for", now.Sub(w.since)))
			w.logged, w.unlogged = now, 0
		}
	}
	w.err = err
	w.count++
}

func (w *writeWatch) wrote(what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		w.log.Info("pebble writes its files again", zap.String("first", what), zap.Uint64("errors", w.count), zap.Duration("for", w.clk.Since(w.since)))
		w.err = nil
	}
}

// state returns the current run of background errors ("" when none) and
// when commits began to stall (zero when they do not) and why.
func (w *writeWatch) state() (bgErr string, since time.Time, count uint64, stalledSince time.Time, stallReason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		bgErr = w.err.Error()
	}
	return bgErr, w.since, w.count, w.stalledSince, w.stallReason
}
