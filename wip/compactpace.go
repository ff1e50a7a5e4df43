package wip

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/tandem-ha/tandem/internal/clock"
)

// Pebble picks a failed compaction again at once. The file system's
// pacing (bgbackoff.go) reaches the compactions that fail writing their
// output, but not those that fail reading their inputs (a disk that
// returns EIO, a corrupt block): they fail before they create a file.
// Pebble keeps a failed compaction's input spans out of the next picks
// for 30 s (5 min for corruption), except in L0, so one that reads a bad
// L0 table is picked again and again: 117 % of one core (of this
// machine kind's two vCPUs) and 6,200 failures a second
// (BenchmarkCompactionReadFailures, docs/benchmarks.md).
//
// compactionPacer is the store's pebble CompactionScheduler. It grants
// compactions as pebble's default one does (ConcurrencyLimitScheduler:
// up to GetAllowedWithoutPermission at once, asked again every 100 ms and
// whenever a compaction ends or pebble says the limit may have risen),
// and after a failed compaction it grants none for a while: 50 ms after
// the first failure, doubling to at most 1 s while they go on failing,
// on the store's clock; a compaction that succeeds ends the run (one
// cancelled by an ingest's excise is neither). Flushes and pebble's
// delete-only and download compactions do not go through a scheduler and
// are not held (flushes are paced by the file system). Its one goroutine
// (granter) runs from Register to Unregister, which pebble calls at Open
// and Close. The interface is pebble's Options.Experimental one (v2.1.7):
// a pebble upgrade must re-read its contract (compaction_scheduler.go).
type compactionPacer struct {
	clk  clock.Clock // the backoff's
	tick clock.Clock // the 100 ms sampling, as pebble's own: real time

	db       pebble.DBForCompaction
	poke     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	mu           sync.Mutex
	registered   bool           // the granter runs (until done)
	granting     sync.WaitGroup // grants under way (Unregister waits)
	running      int            // compactions granted and not Done
	unregistered bool
	fails        int       // failed compactions in a row
	notBefore    time.Time // no grant before this (zero: none held)

	held     atomic.Int64 // grants refused for a hold (tests)
	failures atomic.Int64 // compactions failed (tests, benchmarks)
}

var _ pebble.CompactionScheduler = (*compactionPacer)(nil)
var _ pebble.CompactionGrantHandle = (*compactionPacer)(nil)

// compactionSample is how often the granter asks pebble whether a
// compaction waits and may run (pebble's own scheduler: 100 ms).
const compactionSample = 100 * time.Millisecond

func newCompactionPacer(clk clock.Clock) *compactionPacer {
	return &compactionPacer{
		clk: clk, tick: clock.Real(),
		poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// listener adds the pacer's handlers to el (after any already there).
func (p *compactionPacer) listener(el *pebble.EventListener) {
	prev := el.CompactionEnd
	el.CompactionEnd = func(i pebble.CompactionInfo) {
		if prev != nil {
			prev(i)
		}
		p.ended(i.Err)
	}
}

// ended records a compaction's outcome (pebble calls CompactionEnd with
// its mutex held: nothing here calls into pebble).
func (p *compactionPacer) ended(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err == nil:
		p.fails, p.notBefore = 0, time.Time{}
	case errors.Is(err, pebble.ErrCancelledCompaction):
		// An ingest's excise cancelled it: pebble runs it again, nothing failed.
	default:
		p.failures.Add(1)
		p.fails++
		p.notBefore = p.clk.Now().Add(backoffAfter(p.fails))
	}
}

// holdingLocked reports whether grants are held after a failure (and
// counts it). p.mu is held.
func (p *compactionPacer) holdingLocked() bool {
	if pacePebbleRetries && !p.notBefore.IsZero() && p.clk.Now().Before(p.notBefore) {
		p.held.Add(1)
		return true
	}
	return false
}

func (p *compactionPacer) Register(_ int, db pebble.DBForCompaction) {
	p.db = db
	p.mu.Lock()
	p.registered = true
	p.mu.Unlock()
	go p.granter()
}

// Unregister stops the granting and waits for it: no call into pebble is
// under way or will be (a Done that grants is waited for too). Pebble
// calls it at Close; openDB too when pebble.Open fails (pebble may have
// registered by then). Once is enough.
func (p *compactionPacer) Unregister() {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		p.unregistered = true // no grant starts after this
		started := p.registered
		p.mu.Unlock()
		close(p.stop)
		if started {
			<-p.done
		}
		p.granting.Wait()
	})
}

// TrySchedule is pebble asking to start a compaction now (with its mutex
// held).
func (p *compactionPacer) TrySchedule() (bool, pebble.CompactionGrantHandle) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unregistered || p.holdingLocked() || p.running >= p.db.GetAllowedWithoutPermission() {
		return false, nil // pebble keeps it waiting: the granter starts it later
	}
	p.running++
	return true, p
}

func (p *compactionPacer) UpdateGetAllowedWithoutPermission() { p.wake() }

// The grant handle: only Done matters here.
func (p *compactionPacer) Started()                                          {}
func (p *compactionPacer) MeasureCPU(pebble.CompactionGoroutineKind)         {}
func (p *compactionPacer) CumulativeStats(pebble.CompactionGrantHandleStats) {}

// Done: a compaction ended; the next waiting one starts at once, in the
// goroutine that ends (as pebble's own scheduler does; pebble calls Done
// without its mutex).
func (p *compactionPacer) Done() {
	p.mu.Lock()
	p.running--
	p.mu.Unlock()
	p.grant()
}

func (p *compactionPacer) wake() {
	select {
	case p.poke <- struct{}{}:
	default:
	}
}

// granter starts the compactions pebble keeps waiting, every
// compactionSample and whenever woken, until Unregister.
func (p *compactionPacer) granter() {
	defer close(p.done)
	t := p.tick.NewTicker(compactionSample)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C():
		case <-p.poke:
		}
		p.grant()
	}
}

// grant starts waiting compactions while the limit allows and none is
// held, unless Unregister has begun (which waits for a grant under way).
// A slot is taken before pebble is asked (without p.mu: pebble takes its
// own mutex) and given back if it has none to run.
func (p *compactionPacer) grant() {
	p.mu.Lock()
	if p.unregistered {
		p.mu.Unlock()
		return
	}
	p.granting.Add(1)
	p.mu.Unlock()
	defer p.granting.Done()
	for {
		p.mu.Lock()
		if p.holdingLocked() || p.running >= p.db.GetAllowedWithoutPermission() {
			p.mu.Unlock()
			return
		}
		p.running++
		p.mu.Unlock()
		if waiting, _ := p.db.GetWaitingCompaction(); !waiting || !p.db.Schedule(p) {
			p.mu.Lock()
			p.running--
			p.mu.Unlock()
			return
		}
	}
}
