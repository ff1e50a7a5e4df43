package clock

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestManualTimerFiresOnlyWhenDue(t *testing.T) {
	m := NewManual(epoch)
	tm := m.NewTimer(time.Second)
	m.Advance(999 * time.Millisecond)
	select {
	case <-tm.C():
		t.Fatal("timer fired before its deadline")
	default:
	}
	m.Advance(time.Millisecond)
	select {
	case got := <-tm.C():
		if want := epoch.Add(time.Second); !got.Equal(want) {
			t.Fatalf("timer delivered %v, want %v", got, want)
		}
	default:
		t.Fatal("timer did not fire at its deadline")
	}
	if m.Pending() != 0 {
		t.Fatalf("fired timer still pending")
	}
}

func TestManualFiresInDeadlineOrderWithTiesInCreationOrder(t *testing.T) {
	m := NewManual(epoch)
	var got []string
	m.AfterFunc(3*time.Second, func() { got = append(got, "c@3") })
	m.AfterFunc(time.Second, func() { got = append(got, "a@1") })
	m.AfterFunc(time.Second, func() { got = append(got, "b@1") })
	m.AfterFunc(2*time.Second, func() { got = append(got, "x@2:"+m.Now().Sub(epoch).String()) })
	m.Advance(5 * time.Second)
	want := []string{"a@1", "b@1", "x@2:2s", "c@3"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if now := m.Now(); !now.Equal(epoch.Add(5 * time.Second)) {
		t.Fatalf("clock reads %v after Advance, want +5s", now)
	}
}

func TestManualTickerFiresEachPeriodAndKeepsItsGrid(t *testing.T) {
	m := NewManual(epoch)
	tk := m.NewTicker(100 * time.Millisecond)
	var ticks []time.Duration
	m.AfterFunc(0, func() {}) // an unrelated timer must not disturb the grid
	for i := 0; i < 5; i++ {
		m.Advance(70 * time.Millisecond)
		select {
		case at := <-tk.C():
			ticks = append(ticks, at.Sub(epoch))
		default:
		}
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}
	if len(ticks) != len(want) {
		t.Fatalf("ticks at %v, want %v", ticks, want)
	}
	for i := range want {
		if ticks[i] != want[i] {
			t.Fatalf("ticks at %v, want %v", ticks, want)
		}
	}
	tk.Stop()
	m.Advance(time.Second)
	select {
	case <-tk.C():
		t.Fatal("stopped ticker ticked")
	default:
	}
}

func TestManualTickerDropsTicksWhileChannelFull(t *testing.T) {
	m := NewManual(epoch)
	tk := m.NewTicker(time.Second)
	m.Advance(10 * time.Second) // nobody reads: one tick buffered, nine dropped
	if got := len(tk.C()); got != 1 {
		t.Fatalf("buffered ticks = %d, want 1", got)
	}
	first := <-tk.C()
	if want := epoch.Add(time.Second); !first.Equal(want) {
		t.Fatalf("buffered tick = %v, want the first one %v", first, want)
	}
}

func TestManualStopAndReset(t *testing.T) {
	m := NewManual(epoch)
	tm := m.NewTimer(time.Second)
	if !tm.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	if tm.Stop() {
		t.Fatal("second Stop reported true")
	}
	m.Advance(2 * time.Second)
	select {
	case <-tm.C():
		t.Fatal("stopped timer fired")
	default:
	}
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a stopped timer reported it active")
	}
	m.Advance(time.Second)
	if len(tm.C()) != 1 {
		t.Fatal("reset timer did not fire")
	}

	tk := m.NewTicker(time.Second)
	tk.Reset(5 * time.Second)
	m.Advance(4 * time.Second)
	if len(tk.C()) != 0 {
		t.Fatal("ticker ticked on its old period after Reset")
	}
	m.Advance(time.Second)
	if len(tk.C()) != 1 {
		t.Fatal("ticker did not tick on its new period")
	}
}

func TestManualSetDoesNotFireButOverdueFiresOnNextAdvance(t *testing.T) {
	m := NewManual(epoch)
	fired := 0
	m.AfterFunc(time.Minute, func() { fired++ })
	m.Set(epoch.Add(time.Hour)) // wall clock stepped forward
	if fired != 0 {
		t.Fatal("Set fired a timer")
	}
	m.Advance(0)
	if fired != 1 {
		t.Fatalf("overdue timer fired %d times on Advance(0), want 1", fired)
	}
	m.Set(epoch) // stepped backwards
	if got := m.Since(epoch.Add(time.Hour)); got != -time.Hour {
		t.Fatalf("Since after a backward step = %v", got)
	}
}

// Jump fires what falls due once, at the new time, where Advance fires
// each deadline on the way.
func TestManualJumpFiresOnceAtTheNewTime(t *testing.T) {
	m := NewManual(epoch)
	var at []time.Duration
	var again func()
	again = func() {
		at = append(at, m.Since(epoch))
		m.AfterFunc(time.Second, again)
	}
	m.AfterFunc(time.Second, again)
	m.Jump(10 * time.Second)
	if len(at) != 1 || at[0] != 10*time.Second {
		t.Fatalf("Jump(10s) over a 1 s AfterFunc chain fired at %v, want once at 10s", at)
	}
	m.Jump(500 * time.Millisecond) // the re-armed timer is due at 11 s
	if len(at) != 1 {
		t.Fatalf("Jump fired a timer not yet due: %v", at)
	}
	m.Advance(3 * time.Second)
	if want := []time.Duration{10 * time.Second, 11 * time.Second, 12 * time.Second, 13 * time.Second}; !slices.Equal(at, want) {
		t.Fatalf("Advance after Jump fired at %v, want %v", at, want)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Jump(-1) did not panic")
		}
	}()
	m.Jump(-1)
}

func TestManualAfterFuncMayUseTheClock(t *testing.T) {
	m := NewManual(epoch)
	n := 0
	var again func()
	again = func() {
		n++
		if n < 3 {
			m.AfterFunc(time.Second, again)
		}
	}
	m.AfterFunc(time.Second, again)
	m.Advance(10 * time.Second)
	if n != 3 {
		t.Fatalf("chained AfterFunc ran %d times, want 3", n)
	}
}

func TestManualAdvanceNegativePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Advance(-1) did not panic")
		}
	}()
	NewManual(epoch).Advance(-1)
}

// TestManualDrivesAGoroutine is the pattern every package uses: wait until
// the goroutine under test has armed its timer, then Advance.
func TestManualDrivesAGoroutine(t *testing.T) {
	m := NewManual(epoch)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	results := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		results <- Sleep(ctx, m, time.Minute)
	}()
	if err := m.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	m.Advance(time.Minute)
	if err := <-results; err != nil {
		t.Fatalf("Sleep returned %v", err)
	}
	wg.Wait()

	ctx2, cancel2 := context.WithCancel(ctx)
	cancel2()
	if err := Sleep(ctx2, m, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep on a cancelled context returned %v", err)
	}
}

func TestRealClock(t *testing.T) {
	c := Real()
	start := c.Now()
	tm := c.NewTimer(time.Millisecond)
	<-tm.C()
	if c.Since(start) < time.Millisecond {
		t.Fatal("real timer fired early")
	}
	done := make(chan struct{})
	c.AfterFunc(time.Millisecond, func() { close(done) })
	<-done
	tk := c.NewTicker(time.Millisecond)
	<-tk.C()
	tk.Stop()
}

// Loop calls f after the first delay, then after each delay f returned,
// with the time the timer fired at, and stops at ctx without a last call.
func TestLoopFollowsTheDelaysItIsGiven(t *testing.T) {
	m := NewManual(epoch)
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan time.Time)
	next := []time.Duration{3 * time.Second, time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Loop(ctx, m, 2*time.Second, func(now time.Time) time.Duration {
			calls <- now
			d := next[0]
			next = next[1:]
			return d
		})
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	for _, want := range []time.Duration{2 * time.Second, 5 * time.Second, 6 * time.Second} {
		if err := m.WaitForTimers(wctx, 1); err != nil {
			t.Fatal(err)
		}
		if want == 6*time.Second {
			// The last call: the test stops the loop before the one after.
			next = append(next, time.Hour)
		}
		m.Advance(want - m.Since(epoch))
		if got := (<-calls).Sub(epoch); got != want {
			t.Fatalf("call at %v, want %v", got, want)
		}
	}
	if err := m.WaitForTimers(wctx, 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	m.Advance(2 * time.Hour)
	select {
	case c := <-calls:
		t.Fatalf("called at %v after ctx ended", c.Sub(epoch))
	default:
	}
	if m.Pending() != 0 {
		t.Errorf("%d timers left armed after the loop ended", m.Pending())
	}
}
