package vip

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// speakerRig runs a speaker on a manual clock; what it sends reaches
// client through an in-memory hub, stamped with the clock's time.
type speakerRig struct {
	clk    *clock.Manual
	node   *hubConn
	client *hubConn
	sp     *speaker
	st     *stats
	round  [][]byte
	probes [][]byte
	ctx    context.Context
	cancel context.CancelFunc
}

func newSpeakerRig(t *testing.T, sched Schedule, probeEvery time.Duration) *speakerRig {
	t.Helper()
	clk := clock.NewManual(epoch)
	h := newHub(clk)
	r := &speakerRig{clk: clk, node: h.conn("node"), client: h.conn("client"), st: &stats{}}
	var err error
	if r.round, err = announceFrames(macB, group4); err != nil {
		t.Fatal(err)
	}
	if r.probes, err = probeFrames(macB, llB, group4); err != nil {
		t.Fatal(err)
	}
	r.sp = newSpeaker(r.node, clk, zap.NewNop(), r.st)
	r.sp.sched = sched.normalized()
	r.sp.round = r.round
	if probeEvery > 0 {
		r.sp.probes = r.probes
		r.sp.probeEvery = probeEvery
	}
	r.ctx, r.cancel = context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(r.cancel)
	return r
}

// start sends round 0, as Claim does, and starts the loop.
func (r *speakerRig) start(t *testing.T) {
	t.Helper()
	if err := r.sp.announce(); err != nil {
		t.Fatal(err)
	}
	go r.sp.run(r.ctx)
}

// stop ends the loop and waits for it.
func (r *speakerRig) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	<-r.sp.done
}

// expect reads len(want) frames and checks they are want, sent at offset at.
func (r *speakerRig) expect(t *testing.T, want [][]byte, at time.Duration) {
	t.Helper()
	for i, w := range want {
		f := r.client.next(t)
		if string(f.b) != string(w) {
			t.Fatalf("frame %d at %v: not the expected frame", i, at)
		}
		if got := f.at.Sub(epoch); got != at {
			t.Fatalf("frame %d sent at %v, want %v", i, got, at)
		}
	}
}

func (r *speakerRig) waitArmed(t *testing.T, n int) {
	t.Helper()
	if err := r.clk.WaitForTimers(r.ctx, n); err != nil {
		t.Fatalf("speaker did not arm its timer: %v", err)
	}
}

// TestSpeakerFollowsTheSchedule drives the loop on the manual clock and
// checks that every round goes out exactly when Schedule.At says, and not a
// millisecond earlier.
func TestSpeakerFollowsTheSchedule(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sched  Schedule
		rounds int // how many rounds to check (the schedule may be endless)
		ends   bool
	}{
		{"default", Schedule{}, 6, true},
		{"no repeats", Schedule{Repeats: -1}, 1, true},
		{"fast", Schedule{Repeats: 3, Interval: 200 * time.Millisecond}, 4, true},
		{"refresh", Schedule{Repeats: 2, Interval: time.Second, Refresh: 30 * time.Second}, 7, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSpeakerRig(t, tc.sched, 0)
			r.start(t)
			r.expect(t, r.round, 0)
			for n := 1; n < tc.rounds; n++ {
				off, ok := tc.sched.At(n)
				prev, _ := tc.sched.At(n - 1)
				if !ok {
					t.Fatalf("schedule has no round %d", n)
				}
				r.waitArmed(t, 1)
				r.clk.Advance(off - prev - time.Millisecond)
				if r.client.pending() != 0 {
					t.Fatalf("round %d sent before %v", n, off)
				}
				r.clk.Advance(time.Millisecond)
				r.expect(t, r.round, off)
			}
			r.stop(t)
			if _, more := tc.sched.At(tc.rounds); more == tc.ends {
				t.Fatalf("test table disagrees with the schedule about its end")
			}
			if tc.ends {
				r.clk.Advance(24 * time.Hour)
				if n := r.client.pending(); n != 0 {
					t.Fatalf("%d frames after the schedule ended", n)
				}
			}
			if p := r.clk.Pending(); p != 0 {
				t.Fatalf("%d timers left armed after the speaker stopped", p)
			}
			if got := r.st.announcements; got != uint64(tc.rounds) {
				t.Fatalf("stats count %d rounds, want %d", got, tc.rounds)
			}
		})
	}
}

// TestSpeakerKickStartsOver: Announce (a round now, then kick) restarts the
// repeats from the kick, and the old schedule never fires again.
func TestSpeakerKickStartsOver(t *testing.T) {
	r := newSpeakerRig(t, Schedule{Repeats: 3, Interval: time.Second}, 0)
	r.start(t)
	r.expect(t, r.round, 0)
	r.waitArmed(t, 1)
	r.clk.Advance(time.Second)
	r.expect(t, r.round, time.Second)
	r.waitArmed(t, 1)
	r.clk.Advance(500 * time.Millisecond) // 1.5 s: the state machine asks
	if err := r.sp.announce(); err != nil {
		t.Fatal(err)
	}
	r.sp.kick() // returns once the loop re-armed
	r.expect(t, r.round, 1500*time.Millisecond)
	r.clk.Advance(500 * time.Millisecond) // 2 s: the old schedule's slot
	if r.client.pending() != 0 {
		t.Fatal("the old schedule fired after the kick")
	}
	for _, at := range []time.Duration{2500, 3500, 4500} {
		r.waitArmed(t, 1)
		r.clk.Advance(at*time.Millisecond - r.clk.Since(epoch))
		r.expect(t, r.round, at*time.Millisecond)
	}
	r.stop(t)
	r.clk.Advance(time.Hour)
	if r.client.pending() != 0 {
		t.Fatal("frames after the restarted schedule ended")
	}
	// A kick after the loop ended must not block.
	r.sp.kick()
}

func TestSpeakerProbesOnTheirOwnTicker(t *testing.T) {
	r := newSpeakerRig(t, Schedule{Repeats: 1, Interval: 700 * time.Millisecond}, 500*time.Millisecond)
	r.start(t)
	r.expect(t, r.round, 0)
	r.waitArmed(t, 2) // announcement timer and probe ticker
	r.clk.Advance(500 * time.Millisecond)
	r.expect(t, r.probes, 500*time.Millisecond)
	r.clk.Advance(200 * time.Millisecond)
	r.expect(t, r.round, 700*time.Millisecond)
	for i := 2; i <= 5; i++ {
		at := time.Duration(i) * 500 * time.Millisecond
		r.clk.Advance(at - r.clk.Since(epoch))
		r.expect(t, r.probes, at)
	}
	r.stop(t)
	if r.st.probes != 5 || r.st.announcements != 2 {
		t.Fatalf("stats: %d probe rounds, %d announcement rounds; want 5 and 2", r.st.probes, r.st.announcements)
	}
}

// TestSpeakerMaintains: the address check runs on its own ticker; a
// failure is counted, and when it had to restore a VIP a round goes out at
// once and the repeats start over from there.
func TestSpeakerMaintains(t *testing.T) {
	r := newSpeakerRig(t, Schedule{Repeats: 1, Interval: 3 * time.Second}, 0)
	type result struct {
		restored int
		err      error
	}
	results := []result{{0, nil}, {0, errors.New("netlink: no buffer space")}, {1, nil}}
	calls := make(chan int, 10)
	n := 0
	r.sp.maintainEvery = 10 * time.Second
	r.sp.maintain = func() (int, error) {
		res := results[n]
		n++
		calls <- n
		return res.restored, res.err
	}
	r.start(t)
	r.expect(t, r.round, 0)
	r.waitArmed(t, 2) // the repeat and the maintenance ticker
	r.clk.Advance(3 * time.Second)
	r.expect(t, r.round, 3*time.Second) // the one repeat
	for i := 1; i <= 3; i++ {
		r.clk.Advance(time.Duration(i)*10*time.Second - r.clk.Since(epoch))
		select {
		case got := <-calls:
			if got != i {
				t.Fatalf("check %d reported as %d", i, got)
			}
		case <-r.ctx.Done():
			t.Fatalf("check %d did not happen", i)
		}
	}
	// The third check restored a VIP: a round at once (30 s), and the
	// repeat 3 s later although the schedule had ended.
	r.expect(t, r.round, 30*time.Second)
	r.waitArmed(t, 2)
	r.clk.Advance(3 * time.Second)
	r.expect(t, r.round, 33*time.Second)
	r.stop(t)
	if r.st.restores != 1 || r.st.failures != 1 || r.st.lastErr == nil || r.st.failing[kindRenew] {
		t.Fatalf("stats after ok, fail, restore: restores %d failures %d lastErr %v failing %v",
			r.st.restores, r.st.failures, r.st.lastErr, r.st.failing[kindRenew])
	}
}

func TestSpeakerSendsTheRestWhenOneFrameFails(t *testing.T) {
	r := newSpeakerRig(t, Schedule{Repeats: -1}, 0)
	r.node.failNext = 1
	err := r.sp.announce()
	if err == nil {
		t.Fatal("announce hid the write error")
	}
	r.expect(t, r.round[1:], 0)
	if r.st.failures != 1 || r.st.announcements != 0 || !r.st.failing[kindAnnounce] {
		t.Fatalf("stats after a failed round: %+v", r.st)
	}
	if err := r.sp.announce(); err != nil {
		t.Fatal(err)
	}
	r.expect(t, r.round, 0)
	if r.st.announcements != 1 || r.st.failing[kindAnnounce] {
		t.Fatalf("stats after recovery: announcements %d failing %v", r.st.announcements, r.st.failing[kindAnnounce])
	}
}

// TestSpeakerHoldsAfterAStall: when the loop wakes long after it should
// have (the process was stopped), the overdue announcement and address
// checks wait stallHoldoff; probes do not.
func TestSpeakerHoldsAfterAStall(t *testing.T) {
	r := newSpeakerRig(t, Schedule{Repeats: 5, Interval: time.Second}, 0)
	var checks []time.Duration // written by the loop, read after it stopped
	r.sp.maintainEvery = time.Second
	r.sp.maintain = func() (int, error) {
		checks = append(checks, r.clk.Since(epoch))
		return 0, nil
	}
	r.start(t)
	r.expect(t, r.round, 0)
	r.waitArmed(t, 2) // repeat 1 and the check ticker
	// SIGSTOP for 10 s: the clock jumps, nothing fired meanwhile.
	r.clk.Set(epoch.Add(10 * time.Second))
	r.clk.Advance(0)  // resume: the overdue timers fire now
	r.waitArmed(t, 2) // the ticker, and repeat 1 postponed
	if n := r.client.pending(); n != 0 {
		t.Fatalf("%d frames sent right after the stall", n)
	}
	r.clk.Advance(stallHoldoff - time.Millisecond)
	if n := r.client.pending(); n != 0 {
		t.Fatalf("%d frames sent during the hold", n)
	}
	r.clk.Advance(time.Millisecond)
	r.expect(t, r.round, 10*time.Second+stallHoldoff) // the held repeat
	r.waitArmed(t, 2)
	r.clk.Advance(time.Second)
	r.expect(t, r.round, 11*time.Second+stallHoldoff) // the next, on the schedule again
	r.stop(t)
	for _, at := range checks {
		if at < 10*time.Second+stallHoldoff {
			t.Errorf("address check at %v, during the hold", at)
		}
	}
	if len(checks) == 0 {
		t.Error("no address check after the hold")
	}
	r.st.mu.Lock()
	defer r.st.mu.Unlock()
	if r.st.stalls != 1 {
		t.Errorf("stalls = %d, want 1", r.st.stalls)
	}
}
