package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/wip"
)

// failingVerify stands for a store whose read-back fails.
type failingVerify struct{}

func (failingVerify) Verify() (int64, error) {
	return 12, errors.New("wip: verify: pebble: file 000009: block 91341/1841: crc32c checksum mismatch")
}

func (failingVerify) Scrub(context.Context, int64) (int64, error) {
	return 7, errors.New("wip: scrub: pebble: file 000011: block 4096/1841: crc32c checksum mismatch")
}

// The read-back runs first verifyFirstAfter after the start, then every
// verify-every: on a consistent passive, every block (Verify); on the
// active, every live key at activeScrubRate (Scrub); a node that is
// neither is asked again within a minute. Each run is in the event log.
func TestVerifySchedule(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC))
	st, err := wip.Open(t.TempDir(), wip.Options{Mode: wip.Async, Clock: clock.NewManual(clk.Now()), Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := st.Promote(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		b := st.NewBatch()
		b.Set([]byte(fmt.Sprint("k", i)), []byte("v"))
		if _, err := st.Commit(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Demote(ctx); err != nil {
		t.Fatal(err)
	}
	var passive, active atomic.Bool
	ev := newEventLog(100)
	vj := &verifyJob{every: 24 * time.Hour, store: st, clk: clk, log: zap.NewNop(), ev: ev, passive: passive.Load, active: active.Load}
	done := make(chan struct{})
	go func() { defer close(done); vj.run(ctx) }()
	defer func() { cancel(); <-done }()
	step := func(d time.Duration) { t.Helper(); loopTurn(t, ctx, clk, d) }
	runs := func() (n int, last string) {
		for _, e := range ev.last(100) {
			if strings.Contains(e.Text, "store read") {
				n, last = n+1, e.Text
			}
		}
		return n, last
	}
	step(9 * time.Minute)
	if n, _ := runs(); n != 0 {
		t.Fatalf("%d runs before verifyFirstAfter", n)
	}
	step(time.Minute) // 10 min: the first turn, but neither passive nor active
	if n, _ := runs(); n != 0 {
		t.Fatalf("%d runs while neither passive nor active", n)
	}
	passive.Store(true)
	step(time.Minute) // asked again within a minute
	n, last := runs()
	if n != 1 || !strings.Contains(last, "store read back (scheduled): ") || !strings.Contains(last, "no corruption") {
		t.Fatalf("after the first passive turn: %d runs, last %q", n, last)
	}
	var keys int
	if _, err := fmt.Sscanf(last, "store read back (scheduled): %d keys", &keys); err != nil || keys < 100 {
		t.Fatalf("the run did not count the 100 keys committed: %q", last)
	}
	step(23 * time.Hour)
	if n, _ := runs(); n != 1 {
		t.Fatalf("%d runs within verify-every", n)
	}
	vj.store = failingVerify{} // the loop reads it on its own goroutine only after the next Advance
	step(time.Hour)
	n, last = runs()
	if n != 2 || !strings.Contains(last, "store read-back (scheduled) failed (") || !strings.Contains(last, "checksum mismatch") {
		t.Fatalf("a failing read-back: %d runs, last %q", n, last)
	}

	// The same node, active: the throttled scrub of its live keys.
	vj.store = st
	if err := st.Promote(ctx, 2); err != nil {
		t.Fatal(err)
	}
	passive.Store(false)
	active.Store(true)
	step(24 * time.Hour)
	n, last = runs()
	if n != 3 || !strings.Contains(last, "store read back (scheduled, active): ") || !strings.Contains(last, "no corruption") {
		t.Fatalf("after the first active turn: %d runs, last %q", n, last)
	}
	if _, err := fmt.Sscanf(last, "store read back (scheduled, active): %d keys", &keys); err != nil || keys < 100 {
		t.Fatalf("the scrub did not count the 100 keys committed: %q", last)
	}
	vj.store = failingVerify{}
	step(24 * time.Hour)
	n, last = runs()
	if n != 4 || !strings.Contains(last, "store read-back (scheduled, active) failed (") || !strings.Contains(last, "000011") {
		t.Fatalf("a failing scrub: %d runs, last %q", n, last)
	}
}
