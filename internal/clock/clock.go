// Package clock is the only place in Tandem that reads the time or waits for it.
//
// Every component that needs time takes a Clock. Production code passes Real();
// tests pass a *Manual, whose time moves only when the test calls Advance, so
// failure detectors, GARP schedules and retry loops are exercised
// deterministically instead of with sleeps and timed assertions.
//
// Contract:
//   - Real() delegates to package time and carries its monotonic reading, so
//     durations computed with Since are immune to wall-clock steps.
//   - A Manual clock starts at the time given to NewManual and never moves by
//     itself. Advance(d) moves it forward in steps: to each pending timer or
//     ticker deadline in deadline order (ties in creation order), firing it,
//     and finally to now+d. A ticker that falls due several times inside one
//     Advance fires each time, in order, exactly as a real ticker on an idle
//     machine would (its channel holds one value; further ticks are dropped
//     while it is full, as in package time).
//   - AfterFunc callbacks run synchronously inside Advance, on the caller's
//     goroutine, without the clock's lock held, so a callback may use the clock.
//   - Timer and ticker channels have a buffer of one and are never closed.
//   - WaitForTimers lets a test block until goroutines under test have armed
//     the timers it expects, which removes the only source of races between a
//     test's Advance and the code it drives.
//
// The internal/lint test forbids time.Now, time.Sleep, time.After and their
// relatives everywhere else in the module (but for the network lab, which
// measures real outages).
package clock

import (
	"context"
	"time"
)

// Clock tells the time and creates timers. Implementations are safe for
// concurrent use.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Since returns the time elapsed since t.
	Since(t time.Time) time.Duration
	// NewTimer creates a Timer that sends the current time on its channel
	// after at least d.
	NewTimer(d time.Duration) Timer
	// NewTicker returns a Ticker that sends the time every d. d must be > 0.
	NewTicker(d time.Duration) Ticker
	// AfterFunc calls f in its own goroutine (Real) or inside Advance
	// (Manual) after d. The returned Timer's channel is nil.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the clock-independent view of *time.Timer.
type Timer interface {
	// C returns the channel on which the time is delivered (nil for AfterFunc timers).
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it stopped a pending timer.
	Stop() bool
	// Reset changes the timer to expire after d; it reports whether the timer had been active.
	Reset(d time.Duration) bool
}

// Ticker is the clock-independent view of *time.Ticker.
type Ticker interface {
	// C returns the channel on which the ticks are delivered.
	C() <-chan time.Time
	// Stop turns off the ticker. No more ticks are sent after Stop returns.
	Stop()
	// Reset stops the ticker and resets its period to d.
	Reset(d time.Duration)
}

// Sleep waits for d on c, or until ctx is done, whichever comes first. It
// returns ctx.Err() if the context ended the wait.
func Sleep(ctx context.Context, c Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// Loop calls f after first, and then again each time the delay f returned
// has passed since f returned, until ctx ends: the periodic goroutine
// (a purge, a backup schedule, a watch) with one timer and one stop path.
// f gets the time the timer fired at (its clock's reading then). f is not
// called once ctx has ended, even if the timer fired in the same moment.
func Loop(ctx context.Context, c Clock, first time.Duration, f func(now time.Time) (next time.Duration)) {
	t := c.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		if ctx.Err() != nil {
			return
		}
		t.Reset(f(c.Now()))
	}
}

// Real returns the Clock backed by package time.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time                  { return time.Now() }
func (realClock) Since(t time.Time) time.Duration { return time.Since(t) }
func (realClock) NewTimer(d time.Duration) Timer  { return realTimer{time.NewTimer(d)} }
func (realClock) NewTicker(d time.Duration) Ticker {
	return realTicker{time.NewTicker(d)}
}
func (realClock) AfterFunc(d time.Duration, f func()) Timer {
	return realTimer{time.AfterFunc(d, f)}
}

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }
