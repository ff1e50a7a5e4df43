package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
)

// freezeWatch tells a freeze of the whole process (SIGSTOP, a paused VM, a
// starved host) from a stall of the driver alone.
//
// The driver carries out some of the machine's actions synchronously: the
// pair state's fsync (ActPersist), the store's promotion (ActSetReplication),
// the VIP's netlink round. On a busy disk one of them can take longer than
// fence-after. The driver's next tick is then late, but the process was not
// frozen: the heartbeat goroutines went on sending and receiving, so the
// peer never saw a silence and cannot have taken over. Reading that lateness
// as a freeze would make a node that has just been promoted fence itself
// (ClockJump), and the peer could do the same after it: a failover that
// flaps because a disk is slow.
//
// The watch's goroutine does nothing but wake every period, so its lateness
// is the process's own. The driver asks it (take) at every tick and sends
// ClockJump only for that; its own extra lateness it logs as a stall.
//
// Each stretch of frozen time is reported once: take reports the watch's
// largest lateness since the last take, or, when the watch is overdue at
// that moment (a thawed process whose driver runs before the watch does),
// how overdue it is; time up to a take is not counted again afterwards.
type freezeWatch struct {
	clk    clock.Clock
	period time.Duration

	mu       sync.Mutex
	last     time.Time     // the watch's last wake-up
	worst    time.Duration // largest lateness since the last take
	reported time.Time     // lateness up to here was reported by a take
}

func newFreezeWatch(clk clock.Clock, period time.Duration) *freezeWatch {
	now := clk.Now()
	return &freezeWatch{clk: clk, period: period, last: now, reported: now}
}

// run wakes every period until ctx ends. Its owner is the driver's run.
func (w *freezeWatch) run(ctx context.Context) {
	w.mu.Lock()
	w.last = w.clk.Now() // the first wake-up is due a period from here
	w.mu.Unlock()
	clock.Loop(ctx, w.clk, w.period, func(now time.Time) time.Duration {
		w.turn(now)
		return w.period
	})
}

// dueLocked is when the next wake-up was due, for what is not yet reported.
func (w *freezeWatch) dueLocked() time.Time {
	due := w.last.Add(w.period)
	if w.reported.After(due) {
		return w.reported
	}
	return due
}

// turn records a wake-up at now.
func (w *freezeWatch) turn(now time.Time) {
	w.mu.Lock()
	if late := now.Sub(w.dueLocked()); late > w.worst {
		w.worst = late
	}
	w.last = now
	w.mu.Unlock()
}

// take returns how long the process stood still since the last take.
func (w *freezeWatch) take(now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	late := w.worst
	w.worst = 0
	if over := now.Sub(w.dueLocked()); over > late {
		late = over
	}
	if now.After(w.reported) {
		w.reported = now
	}
	return late
}
