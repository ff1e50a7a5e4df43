package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Manual is a Clock whose time moves only when Advance or Set is called.
// The zero value is not usable; create one with NewManual.
type Manual struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64    // creation order, breaks deadline ties deterministically
	waiters []*waiter // armed timers and tickers
	changed chan struct{}
}

// waiter is one armed timer, ticker or AfterFunc.
type waiter struct {
	m        *Manual
	deadline time.Time
	period   time.Duration // > 0 for tickers
	seq      uint64
	ch       chan time.Time // nil for AfterFunc
	fn       func()         // non-nil for AfterFunc
	armed    bool
}

// NewManual returns a Manual clock reading start.
func NewManual(start time.Time) *Manual {
	return &Manual{now: start, changed: make(chan struct{})}
}

var _ Clock = (*Manual)(nil)

// Now returns the clock's current time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// Since returns Now().Sub(t).
func (m *Manual) Since(t time.Time) time.Duration { return m.Now().Sub(t) }

// NewTimer arms a timer that fires when the clock reaches now+d. A timer with
// d <= 0 fires at once.
func (m *Manual) NewTimer(d time.Duration) Timer {
	w := &waiter{m: m, ch: make(chan time.Time, 1)}
	m.arm(w, d, 0)
	return (*manualTimer)(w)
}

// NewTicker arms a ticker with period d. It panics if d <= 0, like time.NewTicker.
func (m *Manual) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	w := &waiter{m: m, ch: make(chan time.Time, 1)}
	m.arm(w, d, d)
	return (*manualTicker)(w)
}

// AfterFunc arms f to run inside the Advance call that reaches now+d.
func (m *Manual) AfterFunc(d time.Duration, f func()) Timer {
	w := &waiter{m: m, fn: f}
	m.arm(w, d, 0)
	return (*manualTimer)(w)
}

// Pending reports how many timers and tickers are armed.
func (m *Manual) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.waiters)
}

// WaitForTimers blocks until at least n timers or tickers are armed, or ctx
// ends. Tests use it to know that the goroutine they drive has reached its
// select before they Advance.
func (m *Manual) WaitForTimers(ctx context.Context, n int) error {
	for {
		m.mu.Lock()
		if len(m.waiters) >= n {
			m.mu.Unlock()
			return nil
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Advance moves the clock forward by d, firing every timer, ticker and
// AfterFunc that falls due, in deadline order. It panics on a negative d:
// time going backwards is an event the code under test must be told about
// (see Set), never something Advance does.
func (m *Manual) Advance(d time.Duration) {
	if d < 0 {
		panic("clock: Advance with negative duration")
	}
	m.mu.Lock()
	end := m.now.Add(d)
	m.mu.Unlock()
	for m.fireNext(end) {
	}
	m.mu.Lock()
	if end.After(m.now) {
		m.now = end
	}
	m.mu.Unlock()
}

// Jump moves the clock forward by d in one step and then fires what is
// overdue, each timer at the new time: a host resumed after d. A timer
// re-armed by what it woke is not fired again unless its new deadline is
// already due. Tests that drive a periodic goroutine use it to get exactly
// one turn whatever d is: Advance(d) would fire the goroutine's timer once
// per re-arm that the goroutine managed before Advance looked again, a
// count that depends on the scheduler. It panics on a negative d.
func (m *Manual) Jump(d time.Duration) {
	if d < 0 {
		panic("clock: Jump with negative duration")
	}
	m.Set(m.Now().Add(d))
	m.Advance(0) // fires what is overdue, at the new time
}

// Set moves the clock to t without firing anything that falls due in
// between (a wall-clock step, as after a VM resume or an NTP correction).
// Timers keep their absolute deadlines; one already overdue fires on the next
// Advance, even Advance(0).
func (m *Manual) Set(t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = t
}

// fireNext fires the earliest waiter due at or before end. It reports
// whether it fired one.
func (m *Manual) fireNext(end time.Time) bool {
	m.mu.Lock()
	if len(m.waiters) == 0 || m.waiters[0].deadline.After(end) {
		m.mu.Unlock()
		return false
	}
	w := m.waiters[0]
	if w.deadline.After(m.now) {
		m.now = w.deadline
	}
	now := m.now
	if w.period > 0 {
		// Re-arm the ticker relative to its deadline, not to now, so that
		// ticks stay on their grid like a real ticker's.
		w.deadline = w.deadline.Add(w.period)
		m.seq++
		w.seq = m.seq
		m.sortLocked()
	} else {
		m.removeLocked(w)
	}
	fn, ch := w.fn, w.ch
	m.mu.Unlock()
	if fn != nil {
		fn()
	} else {
		select {
		case ch <- now:
		default: // full: drop, as package time does for tickers
		}
	}
	return true
}

// arm (re)arms w to fire at now+d; period > 0 makes it a ticker. It reports
// whether w was armed before.
func (m *Manual) arm(w *waiter, d, period time.Duration) (wasArmed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	wasArmed = w.armed
	if w.armed {
		m.removeLocked(w)
	}
	w.period = period
	w.deadline = m.now.Add(d)
	m.seq++
	w.seq = m.seq
	w.armed = true
	m.waiters = append(m.waiters, w)
	m.sortLocked()
	m.notifyLocked()
	return wasArmed
}

func (m *Manual) disarm(w *waiter) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !w.armed {
		return false
	}
	m.removeLocked(w)
	return true
}

func (m *Manual) removeLocked(w *waiter) {
	for i, x := range m.waiters {
		if x == w {
			m.waiters = append(m.waiters[:i], m.waiters[i+1:]...)
			break
		}
	}
	w.armed = false
	m.notifyLocked()
}

func (m *Manual) sortLocked() {
	sort.SliceStable(m.waiters, func(i, j int) bool {
		a, b := m.waiters[i], m.waiters[j]
		if !a.deadline.Equal(b.deadline) {
			return a.deadline.Before(b.deadline)
		}
		return a.seq < b.seq
	})
}

func (m *Manual) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

type manualTimer waiter

func (t *manualTimer) C() <-chan time.Time { return t.ch }
func (t *manualTimer) Stop() bool          { w := (*waiter)(t); return w.m.disarm(w) }
func (t *manualTimer) Reset(d time.Duration) bool {
	w := (*waiter)(t)
	return w.m.arm(w, d, 0)
}

type manualTicker waiter

func (t *manualTicker) C() <-chan time.Time { return t.ch }
func (t *manualTicker) Stop()               { w := (*waiter)(t); w.m.disarm(w) }
func (t *manualTicker) Reset(d time.Duration) {
	if d <= 0 {
		panic("clock: non-positive interval for Ticker.Reset")
	}
	w := (*waiter)(t)
	w.m.arm(w, d, d)
}
