package wip

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/tandem-ha/tandem/internal/clock"
)

// hangingDisk blocks every write-side operation (writes, syncs, creates,
// renames...) of a store while frozen, as a hung disk or path does: the
// calls do not fail, they do not return. Reads go on. thaw lets the held
// ones proceed.
type hangingDisk struct {
	mu     sync.Mutex
	frozen chan struct{} // nil: not frozen; closed by thaw
	held   atomic.Int32
}

func (h *hangingDisk) fs() vfs.FS {
	return errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
			return nil
		}
		h.mu.Lock()
		gate := h.frozen
		h.mu.Unlock()
		if gate != nil {
			h.held.Add(1)
			<-gate
			h.held.Add(-1)
		}
		return nil
	}))
}

func (h *hangingDisk) freeze() {
	h.mu.Lock()
	if h.frozen == nil {
		h.frozen = make(chan struct{})
	}
	h.mu.Unlock()
}

func (h *hangingDisk) thaw() {
	h.mu.Lock()
	if h.frozen != nil {
		close(h.frozen)
		h.frozen = nil
	}
	h.mu.Unlock()
}

// recv waits (waitFor's bound) for a value from ch.
func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	var v T
	waitFor(t, what, func() bool {
		select {
		case v = <-ch:
			return true
		default:
			return false
		}
	})
	return v
}

// A primary whose disk hangs fails after StallTimeout: the callers of the
// group whose write is stuck learn that its outcome is unknown (it went to
// the peer first), the commits queued behind it and every later one get
// the stall, Status and EventFailed (once) name the write, CommittedLSN
// stays the last durable LSN, and Demote is not held by the stuck write.
// The disk back, the write returns without acknowledging anything, Close
// completes, and every acknowledged commit is on both nodes.
func TestPrimaryFailsWhenItsDiskStalls(t *testing.T) {
	var hd hangingDisk
	var ev eventsSeen
	p := newPair(t, Options{PeerAckTimeout: time.Minute})
	a := p.open("a", func(o *Options) {
		o.FS = hd.fs()
		o.Events = ev.add
		o.StallTimeout = 300 * time.Millisecond
	})
	defer a.Close()
	defer hd.thaw() // before Close: Close waits for the stuck write
	b := p.open("b", nil)
	defer b.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peer in sync", inSync(a))
	acked := commitKeys(t, a, 20)

	hd.freeze()
	const writers = 8
	errs := make(chan error, writers)
	first := make(chan struct{})
	for i := 0; i < writers; i++ {
		go func() {
			if i > 0 {
				<-first // the first commit's group is the one that sticks
			}
			bt := a.NewBatch()
			bt.Set([]byte(fmt.Sprintf("late%d", i)), []byte("x"))
			_, err := a.Commit(context.Background(), bt)
			errs <- err
		}()
		if i == 0 {
			waitFor(t, "the first late commit's write stuck", func() bool { return hd.held.Load() > 0 })
			close(first)
		}
	}
	unknown := 0
	for i := 0; i < writers; i++ {
		err := recv(t, "the late commits answered", errs)
		if !errors.Is(err, ErrFailed) || !errors.Is(err, ErrStalled) {
			t.Errorf("late commit: %v, want ErrFailed and ErrStalled", err)
		}
		if errors.Is(err, ErrOutcomeUnknown) {
			unknown++
		}
	}
	if unknown < 1 {
		t.Errorf("%d late commits answered ErrOutcomeUnknown, want the stuck group's (at least 1)", unknown)
	}
	st := a.Status()
	for _, want := range []string{"the commit of LSN 21..", "has not completed in", "the disk has stalled"} {
		if !strings.Contains(st.Failed, want) {
			t.Errorf("Status.Failed = %q, want %q in it", st.Failed, want)
		}
	}
	if !st.FailedStall {
		t.Error("Status.FailedStall false for a store failed on a stall")
	}
	if st.CommittedLSN != 20 || st.DurableLSN != 20 {
		t.Errorf("committed %d, durable %d; want 20, 20", st.CommittedLSN, st.DurableLSN)
	}
	if got := ev.of(EventFailed); len(got) != 1 || !errors.Is(got[0].Err, ErrStalled) {
		t.Errorf("EventFailed: %+v, want one, ErrStalled", got)
	}
	if _, err := a.Commit(context.Background(), a.NewBatch()); !errors.Is(err, ErrStalled) {
		t.Errorf("a commit after the stall: %v, want ErrStalled", err)
	}
	// The pair hands over: Demote must not wait for the stuck write (the
	// bound only ends a test that would otherwise hang).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Demote(ctx); err != nil {
		t.Fatalf("demote of the stalled primary: %v", err)
	}
	for _, k := range acked {
		mustGet(t, b, k, k)
	}
	if hd.held.Load() == 0 {
		t.Fatal("nothing held by the frozen disk at the end: the stall was not a stall")
	}

	// The disk comes back: the stuck write returns and acknowledges
	// nothing; the store stays failed until it is reopened.
	hd.thaw()
	waitFor(t, "the stuck writes returned", func() bool { return hd.held.Load() == 0 })
	if st := a.Status(); st.Failed == "" || st.CommittedLSN != 20 {
		t.Errorf("after the disk came back: Failed %q, committed %d; want failed, 20", st.Failed, st.CommittedLSN)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	a = reopened(t, p, "a", acked)
	defer a.Close()
}

// A secondary whose disk hangs fails too: it says which apply stalled,
// and it refuses promotion even when forced.
func TestSecondaryFailsWhenItsDiskStalls(t *testing.T) {
	var hd hangingDisk
	p := newPair(t, Options{PeerAckTimeout: 200 * time.Millisecond})
	a := p.open("a", nil)
	defer a.Close()
	b := p.open("b", func(o *Options) {
		o.FS = hd.fs()
		o.StallTimeout = 300 * time.Millisecond
	})
	defer b.Close()
	defer hd.thaw()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peer in sync", inSync(a))
	commitKV(t, a, "before", "x")
	hd.freeze()
	lsn := commitKV(t, a, "during", "x") // acknowledged alone, after peer-ack-timeout
	waitFor(t, "b failed", func() bool { return b.Status().Failed != "" })
	st := b.Status()
	for _, want := range []string{"the apply of LSN", "the disk has stalled"} {
		if !strings.Contains(st.Failed, want) {
			t.Errorf("b: Failed = %q, want %q in it", st.Failed, want)
		}
	}
	if st.DurableLSN >= lsn {
		t.Errorf("b: durable %d, want below %d", st.DurableLSN, lsn)
	}
	for _, opts := range [][]PromoteOption{{PeerGone()}, {Force()}} {
		if err := b.Promote(context.Background(), 2, opts...); !errors.Is(err, ErrNotPromotable) || !strings.Contains(err.Error(), "stalled") {
			t.Errorf("promoting the stalled secondary: %v, want ErrNotPromotable naming the stall", err)
		}
	}
}

// A failed primary whose peer is away does not try to go on alone (it
// cannot persist that the peer is Outdated): after PeerAckTimeout the
// commits waiting for the peer are answered, outcome unknown, and the
// supervisor does not spin on a store that cannot write.
func TestFailedPrimaryDoesNotGoAlone(t *testing.T) {
	var full atomic.Bool
	p := newPair(t, Options{PeerAckTimeout: 200 * time.Millisecond})
	a := p.open("a", func(o *Options) { o.FS = errorfs.Wrap(vfs.Default, walFull(&full)) })
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	b := p.open("b", nil)
	waitFor(t, "peer in sync", inSync(a))
	commitKV(t, a, "before", "x")
	// The peer stops acking; a commit waits for it, durable locally, and
	// the store then fails (a later group's WAL write).
	b.kill()
	done := make(chan error, 2)
	commit := func(k string) {
		bt := a.NewBatch()
		bt.Set([]byte(k), []byte("x"))
		_, err := a.Commit(context.Background(), bt)
		done <- err
	}
	go commit("waits")
	waitFor(t, "a commit waiting for the peer", func() bool { return a.Status().LagBatches > 0 })
	full.Store(true)
	go commit("fails")
	for i := 0; i < 2; i++ {
		if err := recv(t, "both commits answered", done); !errors.Is(err, ErrFailed) {
			t.Errorf("commit: %v, want ErrFailed", err)
		}
	}
	st := a.Status()
	if st.PeerOutdated || st.Counters.Degradations != 0 {
		t.Errorf("a failed store went on alone: peer outdated %v, degradations %d", st.PeerOutdated, st.Counters.Degradations)
	}
}

// A corrupt secondary whose disk hangs as it marks itself Inconsistent
// (the resync's first write) fails after StallTimeout like any other
// stuck write: the mark does not hold the store's state, so the stall
// watch fails it, Status answers, and Promote refuses it, naming the
// write.
func TestCorruptSecondaryStallsMarkingItself(t *testing.T) {
	var hd hangingDisk
	p := newPair(t, Options{RetainBytes: 64 << 20})
	a, b := p.open("a", nil), p.open("b", nil)
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peer in sync", inSync(a))
	fillSync(t, a, b, 3000)
	if err := b.db.Flush(); err != nil {
		t.Fatal(err)
	}
	b.kill()
	var ev eventsSeen
	b = p.open("b", func(o *Options) {
		o.FS = hd.fs()
		o.Events = ev.add
		o.StallTimeout = 300 * time.Millisecond
	})
	defer b.Close()
	defer hd.thaw() // before Close: Close waits for the stuck write
	flipByte(t, p.dirB, 0.5)
	hd.freeze()
	if err := scanErr(b); !pebble.IsCorruptionError(err) {
		t.Fatalf("reading the corrupt store: %v, want a corruption error", err)
	}
	waitFor(t, "the mark's write stuck", func() bool { return hd.held.Load() > 0 })
	waitFor(t, "b failed", func() bool { return len(ev.of(EventFailed)) > 0 })
	st := b.Status()
	for _, want := range []string{string(keyInconsistent), "the disk has stalled"} {
		if !strings.Contains(st.Failed, want) {
			t.Errorf("b: Failed = %q, want %q in it", st.Failed, want)
		}
	}
	if err := b.Promote(context.Background(), 2, Force()); !errors.Is(err, ErrNotPromotable) || !strings.Contains(err.Error(), "stalled") {
		t.Errorf("promoting the stalled secondary: %v, want ErrNotPromotable naming the stall", err)
	}
}

// A local write that has taken half of StallTimeout shows in Status
// (SlowWrite, SlowWriteSince, Counters.SlowWrites) while it is under way,
// and clears when it completes; one that goes on to StallTimeout fails the
// store. Time the process did not run (the stall loop a poll or more
// late: a paused VM) is not counted. The clock is manual: the thresholds
// are exact.
func TestSlowWriteShowsBeforeTheStall(t *testing.T) {
	var hd hangingDisk
	clk := clock.NewManual(time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC))
	s := openT(t, t.TempDir(), Options{Mode: Async, Clock: clk, FS: hd.fs(), StallTimeout: 20 * time.Second}) // the loop polls every 1 s
	defer s.Close()
	defer hd.thaw() // before Close: Close waits for the stuck write
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	commitKV(t, s, "before", "x")
	commit := func(k string) <-chan error {
		done := make(chan error, 1)
		go func() {
			bt := s.NewBatch()
			bt.Set([]byte(k), []byte("x"))
			_, err := s.Commit(context.Background(), bt)
			done <- err
		}()
		return done
	}
	step := func(d time.Duration) { t.Helper(); stepStallLoop(t, s, clk, d) }
	stuck := func() {
		t.Helper()
		waitFor(t, "the commit's write stuck", func() bool { return hd.held.Load() > 0 })
	}

	hd.freeze()
	began := clk.Now()
	done := commit("slow")
	stuck()
	for i := 0; i < 9; i++ {
		step(time.Second)
	}
	if st := s.Status(); st.SlowWrite != "" || st.Counters.SlowWrites != 0 {
		t.Fatalf("under half of stall-timeout: SlowWrite %q, SlowWrites %d; want none", st.SlowWrite, st.Counters.SlowWrites)
	}
	step(time.Second)
	st := s.Status()
	if want := "the commit of LSN 2..2, under way 10"; !strings.HasPrefix(st.SlowWrite, want) || !strings.HasSuffix(st.SlowWrite, "of the 20s stall-timeout") {
		t.Errorf("SlowWrite = %q, want %q.. of the 20s stall-timeout", st.SlowWrite, want)
	}
	if !st.SlowWriteSince.Equal(began) || st.Counters.SlowWrites != 1 {
		t.Errorf("SlowWriteSince %v, SlowWrites %d; want %v and 1", st.SlowWriteSince, st.Counters.SlowWrites, began)
	}
	hd.thaw()
	if err := recv(t, "the slow commit", done); err != nil {
		t.Fatalf("the slow commit: %v", err)
	}
	waitFor(t, "the slow write cleared", func() bool { return s.Status().SlowWrite == "" })
	if st := s.Status(); st.Failed != "" || st.Counters.SlowWrites != 1 {
		t.Fatalf("after the slow write: Failed %q, SlowWrites %d; want none and 1", st.Failed, st.Counters.SlowWrites)
	}

	// The process stops for 25 s in the middle of a write (the loop's
	// next turn comes 25 s after its last, 24 s late): the write has
	// taken 1 s of the disk's time, not 25.
	hd.freeze()
	done = commit("frozen")
	stuck()
	step(25 * time.Second)
	if st := s.Status(); st.Failed != "" || st.SlowWrite != "" {
		t.Fatalf("after a freeze of 25 s: Failed %q, SlowWrite %q; want neither", st.Failed, st.SlowWrite)
	}
	for i := 0; i < 9; i++ {
		step(time.Second)
	}
	if st := s.Status(); !strings.Contains(st.SlowWrite, "the commit of LSN 3..3, under way 10") || !strings.Contains(st.SlowWrite, "not counting 24") || st.Failed != "" {
		t.Fatalf("10 s of the disk's time after the freeze: SlowWrite %q, Failed %q; want the commit of LSN 3..3 not counting 24 s", st.SlowWrite, st.Failed)
	}
	for i := 0; i < 9; i++ {
		step(time.Second)
	}
	if st := s.Status(); st.Failed != "" {
		t.Fatalf("19 s of the disk's time: Failed %q", st.Failed)
	}
	step(time.Second)
	st = s.Status()
	if st.Counters.SlowWrites != 2 || !strings.Contains(st.Failed, "the commit of LSN 3..3 has not completed in 20") || !strings.Contains(st.Failed, "not counting 24") {
		t.Errorf("after the stall: SlowWrites %d, Failed %q; want 2, the commit of LSN 3..3 not completed in 20 s not counting 24 s", st.Counters.SlowWrites, st.Failed)
	}
	if err := recv(t, "the stalled commit", done); !errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("the stalled commit: %v, want ErrOutcomeUnknown", err)
	}
}

// stepStallLoop moves clk by d (at least the loop's poll) and waits for
// s's stall loop's turn at that time. The loop counts a turn only once its
// next timer is armed (stallChecks), so the clock never moves between a
// turn and its re-arm: the turn comes at exactly the time the test set.
func stepStallLoop(t *testing.T, s *Store, clk *clock.Manual, d time.Duration) {
	t.Helper()
	waitFor(t, "the stall loop armed", func() bool { return s.stallChecks.Load() > 0 })
	n := s.stallChecks.Load()
	clk.Jump(d)
	waitFor(t, "the stall loop's turn", func() bool { return s.stallChecks.Load() > n })
}

// An idle store probes its disk (probeEvery: half of StallTimeout): a
// write and sync in place of the probe file, counted in
// Counters.DiskProbes; a busy one does not. A disk that hangs under an
// idle store fails it, naming the probe, as it would the next commit;
// once the disk answers again, a probe of the failed store completes and
// Status.StallOver says so, until the disk hangs again.
func TestIdleStoreProbesItsDisk(t *testing.T) {
	var hd hangingDisk
	clk := clock.NewManual(time.Date(2026, 12, 7, 7, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	s := openT(t, dir, Options{Mode: Async, Clock: clk, FS: hd.fs(), StallTimeout: 20 * time.Second}) // probes every 10 s
	defer s.Close()
	defer hd.thaw() // before Close: Close waits for the stuck write
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	commitKV(t, s, "before", "x")
	// until moves the clock a second at a time until cond holds.
	until := func(what string, cond func(Status) bool) Status {
		t.Helper()
		var st Status
		waitFor(t, what, func() bool {
			if st = s.Status(); cond(st) {
				return true
			}
			stepStallLoop(t, s, clk, time.Second)
			return false
		})
		return st
	}
	st := until("a probe of the idle store", func(st Status) bool { return st.Counters.DiskProbes > 0 })
	b, err := os.ReadFile(filepath.Join(dir, probeFile))
	if err != nil || len(b) != 8 || binary.BigEndian.Uint64(b) != st.Counters.DiskProbes {
		t.Fatalf("probe file: %x, %v; want the probe count %d in 8 bytes", b, err, st.Counters.DiskProbes)
	}
	probes := st.Counters.DiskProbes
	for i := 0; i < 30; i++ {
		commitKV(t, s, fmt.Sprint("busy", i), "x")
		stepStallLoop(t, s, clk, time.Second)
	}
	if st := s.Status(); st.Counters.DiskProbes != probes {
		t.Errorf("a store committing every second probed its disk: %d probes, want %d", st.Counters.DiskProbes, probes)
	}

	hd.freeze()
	st = until("the idle store failed", func(st Status) bool { return st.Failed != "" })
	for _, want := range []string{"the disk probe of " + filepath.Join(dir, probeFile), "the disk has stalled"} {
		if !strings.Contains(st.Failed, want) {
			t.Errorf("Failed = %q, want %q in it", st.Failed, want)
		}
	}
	if hd.held.Load() == 0 {
		t.Error("no write held by the frozen disk: the failure was not the probe's stall")
	}
	if st.StallOver {
		t.Error("StallOver while the disk still hangs")
	}
	// The disk back: the stuck probe returns, the next one completes, and
	// the store says that reopening it recovers it. It stays failed.
	hd.thaw()
	st = until("the stall over", func(st Status) bool { return st.StallOver })
	if st.Failed == "" {
		t.Error("the store no longer failed once the disk answered: it must stay failed until reopened")
	}
	// The disk hangs again before the store is reopened: the probe under
	// way for half of StallTimeout clears StallOver, and the probe that
	// returns late keeps it clear; probes that complete set it again.
	hd.freeze()
	until("StallOver cleared by a probe that hangs", func(st Status) bool { return !st.StallOver })
	if hd.held.Load() == 0 {
		t.Error("no write held by the frozen disk: StallOver cleared without a hanging probe")
	}
	hd.thaw()
	waitFor(t, "the hanging probe returned", func() bool { return hd.held.Load() == 0 })
	if st := s.Status(); st.StallOver {
		t.Error("StallOver set by a probe that took half of StallTimeout")
	}
	st = until("the stall over again", func(st Status) bool { return st.StallOver })
	if !strings.Contains(st.Failed, "the disk has stalled") {
		t.Errorf("Failed = %q after the second hang, want the first stall's", st.Failed)
	}
	// The process is frozen (a paused VM) while a probe waits on the
	// disk: that time is not the disk's, and StallOver stays.
	hd.freeze()
	for hd.held.Load() == 0 {
		stepStallLoop(t, s, clk, time.Second)
	}
	stepStallLoop(t, s, clk, time.Minute) // the stall loop a minute late
	hd.thaw()
	waitFor(t, "the frozen probe ended", func() bool { _, open := s.stall.activity(); return open == 0 }) // its outcome recorded
	if st := s.Status(); !st.StallOver {
		t.Error("StallOver cleared by a probe that waited while the process was frozen")
	}
}

// A secondary that restarts holding a group the primary sent but is
// still writing (its group goes to the peer before its own fsync) is
// streamed to from the next LSN: the group is in the primary's lineage,
// in flight, not a divergence. Its checksum is checked against the
// primary's tail. Nothing is quarantined, no snapshot is sent, and the
// commit is acknowledged once the primary's write completes.
func TestSecondaryAheadOfAnInFlightWriteIsStreamed(t *testing.T) {
	var hd hangingDisk
	p := newPair(t, Options{PeerAckTimeout: time.Minute})
	a := p.open("a", func(o *Options) { o.FS = hd.fs() })
	defer a.Close()
	defer hd.thaw() // before Close: Close waits for the stuck write
	b := p.open("b", nil)
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "peer in sync", inSync(a))
	acked := commitKeys(t, a, 20)
	hd.freeze()
	done := make(chan error, 1)
	go func() {
		bt := a.NewBatch()
		bt.Set([]byte("in-flight"), []byte("x"))
		_, err := a.Commit(context.Background(), bt)
		done <- err
	}()
	waitFor(t, "b holds the group a is still writing", func() bool { return b.Status().DurableLSN == 21 })
	if st := a.Status(); st.DurableLSN != 20 {
		t.Fatalf("a durable at %d, want 20 (its write held)", st.DurableLSN)
	}
	b.kill()
	b = p.open("b", nil)
	defer b.Close()
	waitFor(t, "b connected again", func() bool { return a.Status().Counters.Sessions >= 2 })
	hd.thaw()
	if err := recv(t, "the in-flight commit", done); err != nil {
		t.Fatalf("the in-flight commit: %v", err)
	}
	waitFor(t, "in sync again", inSync(a))
	sa, sb := a.Status(), b.Status()
	if sa.Counters.Divergences != 0 || sb.Counters.Divergences != 0 || sa.Counters.Snapshots != 0 || sb.Counters.Snapshots != 0 || sb.Inconsistent {
		t.Errorf("divergences a %d b %d, snapshots a %d b %d, b inconsistent %v: want none (b held a group of a's lineage)",
			sa.Counters.Divergences, sb.Counters.Divergences, sa.Counters.Snapshots, sb.Counters.Snapshots, sb.Inconsistent)
	}
	for _, k := range append(acked, "in-flight") {
		want := k
		if k == "in-flight" {
			want = "x"
		}
		mustGet(t, b, k, want)
	}
}
