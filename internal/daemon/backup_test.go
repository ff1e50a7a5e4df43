package daemon

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/wip"
)

// TestBackupSchedule drives the backup loop on the manual clock against a
// real store: nothing while passive; on the active one backup per period,
// pruned to keep; a failure raises backup-failed, is retried a minute
// later (not at the loop's next turn, 30 s later) and the success clears
// it. A 2-minute period makes the loop turn every 30 s, inside the retry
// minute.
func TestBackupSchedule(t *testing.T) {
	// The loop's timer is the only one on clk, so WaitForTimers(1) means
	// the loop waits; the store keeps the same time on a clock of its own.
	clk := clock.NewManual(time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC))
	storeClk := clock.NewManual(clk.Now())
	st, err := wip.Open(t.TempDir(), wip.Options{Mode: wip.Async, Clock: storeClk, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := st.Promote(ctx, 1); err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch()
	b.Set([]byte("k"), []byte("v"))
	if _, err := st.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "backups")
	if err := os.WriteFile(dir, nil, 0o600); err != nil { // a file where the directory should be
		t.Fatal(err)
	}
	var active atomic.Bool
	ev := newEventLog(100)
	const every = 2 * time.Minute
	bj := &backupJob{dir: dir, every: every, keep: 2, node: "a", store: st, clk: clk, log: zap.NewNop(), ev: ev, active: active.Load}
	bj.init()
	done := make(chan struct{})
	go func() { defer close(done); bj.run(ctx) }()
	defer func() { cancel(); <-done }()
	turn := func() { t.Helper(); loopTurn(t, ctx, clk, every/4, storeClk) } // one turn of the loop
	turn()
	if s := bj.status.Load(); s.Taken+s.Failed != 0 {
		t.Fatalf("a passive node backed up: %+v", s)
	}
	active.Store(true)
	turn()
	s := bj.status.Load()
	if s.Failed != 1 || s.LastError == "" {
		t.Fatalf("after a failing attempt: %+v", s)
	}
	if _, ok := ev.alarm("backup-failed"); !ok {
		t.Fatal("no backup-failed alarm")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	turn() // 30 s after the failure: no retry yet
	if s := bj.status.Load(); s.Failed != 1 || s.Taken != 0 {
		t.Fatalf("retried within a minute: %+v", s)
	}
	turn()
	s = bj.status.Load()
	if s.Taken != 1 || s.LastError != "" || s.Last == nil || s.Last.LSN != 1 {
		t.Fatalf("after the retry: %+v", s)
	}
	if _, ok := ev.alarm("backup-failed"); ok {
		t.Fatal("backup-failed still raised after a success")
	}
	for i := 0; i < 3; i++ { // 90 s: not due
		turn()
	}
	if s := bj.status.Load(); s.Taken != 1 {
		t.Fatalf("a backup before the period ended: %+v", s)
	}
	for i := 0; i < 8; i++ { // two more periods
		turn()
	}
	if s := bj.status.Load(); s.Taken != 3 {
		t.Fatalf("after two more periods: %d backups, want 3", s.Taken)
	}
	bs, err := wip.ListBackups(dir)
	if err != nil || len(bs) != 2 {
		t.Fatalf("kept %d backups (%v), want 2", len(bs), err)
	}
	// A restart finds the newest and does not take one at once.
	bj2 := &backupJob{dir: dir, every: every, keep: 2, store: st, clk: clk, log: zap.NewNop(), ev: ev, active: active.Load}
	bj2.init()
	if !bj2.last.Equal(bs[1].Created) {
		t.Fatalf("a restarted job starts from %v, want the newest backup's %v", bj2.last, bs[1].Created)
	}
}

// loopTurn moves a clock.Loop on by d and lets it take at most one turn:
// the loop's timer must be the only one on clk. It waits until the loop
// waits; advances the clocks in also (which keep the same time: a store's,
// say); jumps clk by d, which fires the loop's timer once if d reached its
// deadline (Advance would fire it a scheduler-dependent number of times: a
// CI run once saw two backups attempted in a step meant to hold one); and
// waits until the loop is done with the turn and waits again.
func loopTurn(t *testing.T, ctx context.Context, clk *clock.Manual, d time.Duration, also ...*clock.Manual) {
	t.Helper()
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, c := range also {
		c.Advance(d)
	}
	clk.Jump(d)
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
}
