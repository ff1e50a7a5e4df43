package wip

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
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
