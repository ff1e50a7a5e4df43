package heartbeat

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// detHarness drives a detector on a manual clock the way watch does: tick
// at every deadline it announces, record every event with its offset.
type detHarness struct {
	t   *testing.T
	clk *clock.Manual
	d   *detector
	log []string
	seq []uint64
}

func newDetHarness(t *testing.T, dead, pathDead time.Duration, paths ...string) *detHarness {
	clk := clock.NewManual(t0)
	return &detHarness{t: t, clk: clk, d: newDetector(paths, dead, pathDead, t0), seq: make([]uint64, len(paths))}
}

func (h *detHarness) record(evs []Event) {
	for _, e := range evs {
		h.log = append(h.log, fmt.Sprintf("%v %s", e.At.Sub(t0), e))
	}
}

// advance moves time forward by d, ticking at each deadline on the way.
func (h *detHarness) advance(d time.Duration) {
	end := h.clk.Now().Add(d)
	for {
		n := h.d.next()
		if n.IsZero() || n.After(end) {
			break
		}
		h.clk.Set(n)
		h.record(h.d.tick(n, nil))
	}
	h.clk.Set(end)
	h.record(h.d.tick(end, nil))
}

// hb delivers the next valid datagram of boot on path i.
func (h *detHarness) hb(i int, boot uint64, p Payload) error {
	h.seq[i]++
	return h.deliver(i, &frame{BootID: boot, Seq: h.seq[i], Round: h.seq[i], Payload: p})
}

func (h *detHarness) deliver(i int, f *frame) error {
	evs, err := h.d.accept(i, f, h.clk.Now(), nil)
	h.record(evs)
	return err
}

func (h *detHarness) expect(want ...string) {
	h.t.Helper()
	if strings.Join(h.log, "\n") != strings.Join(want, "\n") {
		h.t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(h.log, "\n"), strings.Join(want, "\n"))
	}
	h.log = nil
}

func TestDetectorSilentWhenNoPathHearsThePeer(t *testing.T) {
	h := newDetHarness(t, 300*time.Millisecond, 300*time.Millisecond, "ha1", "lan")
	p := Payload{Epoch: 3, Role: 1}
	for i := 0; i < 3; i++ { // both paths every 100 ms
		h.hb(0, 7, p)
		h.hb(1, 7, p)
		h.advance(100 * time.Millisecond)
	}
	// One peer-alive per round, on the path that brought it first.
	alive := func(at, path string) string {
		return at + " peer-alive path=" + path + " epoch=3 role=1 committed=0 applied=0 health=0x0 handover=0/0"
	}
	h.expect("0s path-up path=ha1", alive("0s", "ha1"), "0s path-up path=lan", alive("100ms", "ha1"), alive("200ms", "ha1"))
	// ha1 is cut: lan keeps the peer alive, ha1 goes down after 300 ms.
	for i := 0; i < 5; i++ {
		h.hb(1, 7, p)
		h.advance(100 * time.Millisecond)
	}
	h.expect(alive("300ms", "lan"), alive("400ms", "lan"), "500ms path-down path=ha1", alive("500ms", "lan"), alive("600ms", "lan"), alive("700ms", "lan"))
	// Everything is cut at 800 ms: the last datagram was at 700 ms.
	h.advance(time.Second)
	h.expect("1s path-down path=lan", "1s peer-silent")
}

func TestDetectorSilentAtStartWhenNothingArrives(t *testing.T) {
	h := newDetHarness(t, 300*time.Millisecond, 200*time.Millisecond, "ha1")
	h.advance(time.Second)
	h.expect("200ms path-down path=ha1", "300ms peer-silent")
	if n := h.d.next(); !n.IsZero() {
		t.Fatalf("all dead, next deadline %v, want none", n)
	}
	h.hb(0, 1, Payload{})
	h.expect("1s path-up path=ha1", "1s peer-alive path=ha1 epoch=0 role=0 committed=0 applied=0 health=0x0 handover=0/0")
}

// TestDetectorReportsEveryRoundOnce: each new round is a peer-alive,
// changed or not (the state machine counts the peer's silence from it); the
// same round on another path, or an older round arriving late, is not.
func TestDetectorReportsEveryRoundOnce(t *testing.T) {
	h := newDetHarness(t, time.Second, time.Second, "ha1", "ha2")
	h.hb(0, 1, Payload{Epoch: 1})
	h.hb(1, 1, Payload{Epoch: 1})
	h.expect("0s path-up path=ha1", "0s peer-alive path=ha1 epoch=1 role=0 committed=0 applied=0 health=0x0 handover=0/0", "0s path-up path=ha2")
	h.advance(100 * time.Millisecond)
	h.hb(0, 1, Payload{Epoch: 1}) // round 2, unchanged
	h.hb(1, 1, Payload{Epoch: 1}) // round 2 again on ha2: nothing new
	h.expect("100ms peer-alive path=ha1 epoch=1 role=0 committed=0 applied=0 health=0x0 handover=0/0")
	h.advance(100 * time.Millisecond)
	h.hb(1, 1, Payload{Epoch: 1, CommittedLSN: 5}) // round 3 first on ha2
	h.hb(0, 1, Payload{Epoch: 1, CommittedLSN: 5})
	h.expect("200ms peer-alive path=ha2 epoch=1 role=0 committed=5 applied=0 health=0x0 handover=0/0")
	// ha1 lags: its round 4 comes after ha2's round 5 and is not
	// reported (nor does it step the payload back: see
	// TestDetectorOlderRoundOnASlowPathIsNotNews).
	h.seq[1]++
	h.hb(1, 1, Payload{Epoch: 1, CommittedLSN: 7}) // round 5
	h.seq[0] = 3
	h.hb(0, 1, Payload{Epoch: 1, CommittedLSN: 6}) // round 4, late
	h.expect("200ms peer-alive path=ha2 epoch=1 role=0 committed=7 applied=0 health=0x0 handover=0/0")
}

// TestUnauthenticatedOrReplayedHeartbeatNeverChangesAVerdict replays every
// datagram the detector accepted, after the peer fell silent: nothing may
// bring it back to life; nor may an older boot id.
func TestDetectorReplayNeverChangesAVerdict(t *testing.T) {
	h := newDetHarness(t, 300*time.Millisecond, 300*time.Millisecond, "ha1")
	var seen []frame
	for i := 0; i < 70; i++ {
		h.seq[0]++
		f := frame{BootID: 9, Seq: h.seq[0], Round: h.seq[0], Payload: Payload{Epoch: 2}}
		if err := h.deliver(0, &f); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, f)
		h.advance(10 * time.Millisecond)
	}
	h.advance(time.Second)
	h.log = nil
	for _, f := range seen {
		if err := h.deliver(0, &f); !errors.Is(err, ErrReplay) {
			t.Fatalf("replayed seq %d: err %v, want ErrReplay", f.Seq, err)
		}
	}
	old := frame{BootID: 8, Seq: 1000}
	if err := h.deliver(0, &old); !errors.Is(err, ErrReplay) {
		t.Fatalf("older boot id: err %v, want ErrReplay", err)
	}
	h.advance(time.Second)
	h.expect() // no verdict changed
	if got := h.d.stats(0).Dropped.Replay; got != 71 {
		t.Fatalf("replay drops %d, want 71", got)
	}
}

func TestDetectorWindowAcceptsReorderingOnce(t *testing.T) {
	var w replayWindow
	for _, s := range []uint64{5, 3, 4, 10, 6, 70, 7} {
		if !w.check(s) {
			t.Fatalf("fresh seq %d refused", s)
		}
		w.record(s)
	}
	for _, s := range []uint64{5, 3, 10, 70, 6, 7, 2} {
		if w.check(s) {
			t.Fatalf("seen or too-old seq %d accepted", s)
		}
	}
	if !w.check(69) {
		t.Fatal("unseen seq 69 inside the window refused")
	}
}

func TestDetectorLossFromSequenceGaps(t *testing.T) {
	h := newDetHarness(t, time.Second, time.Second, "ha1")
	for s := uint64(1); s <= 100; s++ {
		if s%4 == 0 {
			continue // a quarter lost
		}
		h.deliver(0, &frame{BootID: 1, Seq: s})
	}
	if got := h.d.stats(0).Loss; got < 0.24 || got > 0.26 {
		t.Fatalf("loss %.3f, want 0.25", got)
	}
}

func TestDetectorPeerRestartResetsTheWindow(t *testing.T) {
	h := newDetHarness(t, time.Second, time.Second, "ha1")
	h.deliver(0, &frame{BootID: 5, Seq: 40, Round: 40, Payload: Payload{Epoch: 4}})
	h.deliver(0, &frame{BootID: 6, Seq: 1, Round: 1, Payload: Payload{Epoch: 4}})
	h.expect("0s path-up path=ha1",
		"0s peer-alive path=ha1 epoch=4 role=0 committed=0 applied=0 health=0x0 handover=0/0",
		"0s peer-restarted boot=0x6 old=0x5",
		"0s peer-alive path=ha1 epoch=4 role=0 committed=0 applied=0 health=0x0 handover=0/0")
}

func TestDetectorRTTFromEcho(t *testing.T) {
	h := newDetHarness(t, time.Second, time.Second, "ha1")
	// We sent at +10ms (TxNanos 10ms); the peer held it 3 ms; it is back at +25 ms.
	h.clk.Set(t0.Add(25 * time.Millisecond))
	h.deliver(0, &frame{BootID: 1, Seq: 1, EchoNanos: uint64(10 * time.Millisecond), HoldNanos: uint64(3 * time.Millisecond)})
	if got := h.d.stats(0).RTT; got != 12*time.Millisecond {
		t.Fatalf("rtt %v, want 12ms", got)
	}
}

// An older round arriving late on a slower path keeps the peer alive but
// never steps its announced payload back.
func TestDetectorOlderRoundOnASlowPathIsNotNews(t *testing.T) {
	h := newDetHarness(t, time.Second, time.Second, "ha1", "lan")
	h.deliver(0, &frame{BootID: 1, Seq: 1, Round: 1, Payload: Payload{Epoch: 1}})
	h.deliver(0, &frame{BootID: 1, Seq: 2, Round: 2, Payload: Payload{Epoch: 2, Role: 1}})
	h.deliver(1, &frame{BootID: 1, Seq: 1, Round: 1, Payload: Payload{Epoch: 1}}) // round 1, late on lan
	h.deliver(1, &frame{BootID: 1, Seq: 2, Round: 2, Payload: Payload{Epoch: 2, Role: 1}})
	h.expect("0s path-up path=ha1",
		"0s peer-alive path=ha1 epoch=1 role=0 committed=0 applied=0 health=0x0 handover=0/0",
		"0s peer-alive path=ha1 epoch=2 role=1 committed=0 applied=0 health=0x0 handover=0/0",
		"0s path-up path=lan")
	if p := h.d.lastPayload; p.Epoch != 2 {
		t.Fatalf("peer payload stepped back to %+v", p)
	}
	if got := h.d.stats(1).Received; got != 2 {
		t.Fatalf("lan received %d, want 2 (the late round still counts for liveness)", got)
	}
}
