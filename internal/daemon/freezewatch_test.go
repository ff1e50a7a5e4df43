package daemon

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tandem-ha/tandem/heartbeat"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/pair"
	"github.com/tandem-ha/tandem/vip"
)

var watchStart = time.Date(2026, 12, 6, 15, 0, 0, 0, time.UTC)

// The watch's arithmetic, scripted: on-time wake-ups report nothing; a
// late one reports its lateness once; a take that comes before the watch
// has woken after a freeze reports the freeze itself, and the watch's own
// wake-up afterwards does not report it a second time.
func TestFreezeWatchReportsEachFreezeOnce(t *testing.T) {
	const p = 20 * time.Millisecond
	at := func(ms int) time.Time { return watchStart.Add(time.Duration(ms) * time.Millisecond) }
	w := newFreezeWatch(clock.NewManual(watchStart), p)
	type op struct {
		take bool // else a wake-up
		ms   int
		want time.Duration // for a take
	}
	script := []op{
		{ms: 20}, {ms: 40}, {take: true, ms: 45, want: 0},
		{ms: 60}, {ms: 83}, {take: true, ms: 90, want: 3 * time.Millisecond},
		// Frozen from about 90 to 800; the watch wakes first.
		{ms: 800}, {take: true, ms: 801, want: 697 * time.Millisecond},
		{ms: 820}, {take: true, ms: 821, want: 0},
		// Frozen from 821 to 1500; the driver's tick runs first.
		{take: true, ms: 1500, want: 660 * time.Millisecond},
		{ms: 1501}, {take: true, ms: 1502, want: time.Millisecond},
		{ms: 1521}, {take: true, ms: 1530, want: 0},
		// Two late wake-ups between takes: the worst counts.
		{ms: 1600}, {ms: 1700}, {take: true, ms: 1701, want: 80 * time.Millisecond},
	}
	for i, o := range script {
		if !o.take {
			w.turn(at(o.ms))
			continue
		}
		if got := w.take(at(o.ms)); got != o.want {
			t.Errorf("step %d: take at %d ms = %v, want %v", i, o.ms, got, o.want)
		}
	}
}

// driverRig is a driver with the real pair machine and fakes for the parts
// that touch the host, on a manual clock the test moves.
type driverRig struct {
	t      *testing.T
	clk    *clock.Manual
	d      *driver
	hb     *fakeHeartbeats
	store  *slowStore
	period time.Duration
	peer   bool // the passive peer is up and heard
	// peerNoFollow: the peer's store has failed (its adverts say so).
	peerNoFollow bool
	done         chan error
	stop         context.CancelFunc
}

type fakeHeartbeats struct{ ch chan heartbeat.Event }

func (f *fakeHeartbeats) Events() <-chan heartbeat.Event { return f.ch }
func (f *fakeHeartbeats) Publish(heartbeat.Payload)      {}

// slowStore's first promotion blocks until the test lets it go: the
// test moves the clock meanwhile, as a slow fsync would.
type slowStore struct {
	mu        sync.Mutex
	promotes  int
	promoting chan struct{}
	release   chan struct{}
	view      func() (pair.Replication, api.ReplicationStatus) // nil: in sync, nothing else
	cannotAck []string                                         // PeerCannotAck's calls
}

func (s *slowStore) Promote(ctx context.Context, epoch uint64, force, peerFollows bool) error {
	s.mu.Lock()
	s.promotes++
	first := s.promotes == 1
	s.mu.Unlock()
	if first {
		s.promoting <- struct{}{}
		<-s.release
	}
	return nil
}
func (s *slowStore) Demote(ctx context.Context) error { return nil }
func (s *slowStore) Replication() (pair.Replication, api.ReplicationStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.view != nil {
		return s.view()
	}
	return pair.Replication{State: pair.ReplInSync}, api.ReplicationStatus{}
}

// setView makes Replication report what f returns.
func (s *slowStore) setView(f func() (pair.Replication, api.ReplicationStatus)) {
	s.mu.Lock()
	s.view = f
	s.mu.Unlock()
}
func (s *slowStore) Redial() {}
func (s *slowStore) PeerCannotAck(why string) {
	s.mu.Lock()
	s.cannotAck = append(s.cannotAck, why)
	s.mu.Unlock()
}

type fakeVIP struct{}

func (fakeVIP) Claim(context.Context) error    { return nil }
func (fakeVIP) Release(context.Context) error  { return nil }
func (fakeVIP) Announce(context.Context) error { return nil }
func (fakeVIP) Status() vip.Status             { return vip.Status{} }

type reachableGateway struct{}

func (reachableGateway) Probe(context.Context) (bool, error) { return true, nil }

func newDriverRig(t *testing.T, peer bool, opts ...func(*driver)) *driverRig {
	t.Helper()
	timing, err := pair.Profile("fast")
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewManual(watchStart)
	m, first, err := pair.New(pair.Config{NodeID: 1, Timing: timing, HealthFailover: true}, pair.Persisted{}, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancelRun := context.WithCancel(context.Background())
	r := &driverRig{t: t, clk: clk, hb: &fakeHeartbeats{ch: make(chan heartbeat.Event, 4096)},
		store:  &slowStore{promoting: make(chan struct{}), release: make(chan struct{})},
		period: driverPeriod(timing), peer: peer, done: make(chan error, 1)}
	r.d = &driver{
		node: "a", peerID: 2, log: zaptest.NewLogger(t), clk: clk, timing: timing, dir: t.TempDir(),
		m: m, hb: r.hb, store: r.store, vip: fakeVIP{}, gw: reachableGateway{},
		ev: newEventLog(1000), runCtx: runCtx,
		in: make(chan pair.Event, 64), admin: make(chan adminReq), rtOps: make(chan pair.Action, 64),
		gate: newGoAloneGate(clk, max(4*timing.Interval, 250*time.Millisecond)),
	}
	r.d.dp = &dataPlane{node: "a", log: zap.NewNop(), epoch: &r.d.epoch}
	r.d.watch = newFreezeWatch(clk, r.period)
	for _, o := range opts {
		o(r.d)
	}
	stopCtx, stop := context.WithCancel(context.Background())
	r.stop = stop
	r.d.wg.Add(1)
	go func() { defer r.d.wg.Done(); r.d.watch.run(runCtx) }()
	go func() { r.done <- r.d.loop(stopCtx, context.Background(), first) }()
	t.Cleanup(func() {
		stop()
		r.release()
		for {
			select {
			case <-r.done:
				cancelRun()
				r.d.wg.Wait()
				return
			case <-r.store.promoting: // a promotion the test did not wait for
			default:
				r.clk.Advance(r.period)
				runtime.Gosched()
			}
		}
	})
	r.d.post(pair.LANLink{Up: true})
	return r
}

// release lets a blocked first promotion finish (once).
func (r *driverRig) release() {
	select {
	case <-r.store.release:
	default:
		close(r.store.release)
	}
}

// peerAlive queues what the heartbeat delivers while the passive peer,
// which hears this node, keeps sending (if there is a peer).
func (r *driverRig) peerAlive() {
	if !r.peer {
		return
	}
	a := pair.Advert{Node: 2, Role: pair.RolePassive, LANUp: true, HearPeer: true, DataKnown: true, NoFollow: r.peerNoFollow}
	r.hb.ch <- heartbeat.Event{Kind: heartbeat.PeerAlive, Path: "ha0", Payload: payloadFromAdvert(a)}
}

// settle waits until the driver and the watch are back in their selects
// (their two timers armed) and the driver has taken every answer (a
// gateway probe's), or reports that the driver is in the slow promotion.
func (r *driverRig) settle() (promoting bool) {
	for r.clk.Pending() < 2 || r.d.answering.Load() > 0 || len(r.d.in) > 0 {
		select {
		case <-r.store.promoting:
			return true
		case err := <-r.done:
			r.t.Fatalf("driver stopped: %v", err)
		default:
			runtime.Gosched()
		}
	}
	return false
}

// step is one driver period with the peer's heartbeats flowing.
func (r *driverRig) step() (promoting bool) {
	r.peerAlive()
	r.clk.Advance(r.period)
	return r.settle()
}

func (r *driverRig) status() pair.Status {
	st := r.d.status.Load()
	if st == nil {
		return pair.Status{}
	}
	return *st
}

// A promotion whose store work takes 700 ms (a slow fsync), while the
// process runs on, is no freeze: the new active stays active, and the slow
// action is on the record. With the peer up, its heartbeats kept arriving
// meanwhile and renew the lease; with the peer never heard, the gateway
// probe's answer, waiting in the queue, does. A real freeze of as long,
// afterwards, still makes it step down.
func TestSlowPromotionIsNoFreeze(t *testing.T) {
	for _, peer := range []bool{true, false} {
		t.Run(fmt.Sprintf("peer=%t", peer), func(t *testing.T) { testSlowPromotion(t, peer) })
	}
}

func testSlowPromotion(t *testing.T, peer bool) {
	r := newDriverRig(t, peer)
	if r.settle() {
		t.Fatal("promoting before the first step")
	}
	promoted := false
	for i := 0; i < 3000 && !promoted; i++ {
		promoted = r.step()
	}
	if !promoted {
		t.Fatalf("no promotion in 3000 steps; status %+v", r.status())
	}
	// The driver is inside Promote. 700 ms pass in periods: the watch
	// wakes on time, the heartbeats queue up.
	stall := 700 * time.Millisecond
	for el := time.Duration(0); el < stall; el += r.period {
		r.peerAlive()
		r.clk.Advance(r.period)
		for r.clk.Pending() < 1 { // the watch, re-armed
			runtime.Gosched()
		}
	}
	r.release()
	for range 60 {
		if r.step() {
			t.Fatal("a second slow promotion")
		}
	}
	st := r.status()
	if st.Role != pair.RoleActive || st.Epoch != 1 {
		t.Fatalf("after a %v promotion: %s epoch %d (%s), want active in epoch 1", stall, st.Role, st.Epoch, st.Reason)
	}
	if n := r.d.counters.demotions.Load(); n != 0 {
		t.Fatalf("%d demotions after a slow promotion", n)
	}
	var slow string
	for _, e := range r.d.ev.last(1000) {
		if e.Kind == "action" && strings.Contains(e.Text, "took") {
			slow = e.Text
		}
	}
	_, took, _ := strings.Cut(slow, " took ")
	if d, err := time.ParseDuration(took); !strings.HasPrefix(slow, "set-replication") || err != nil || d < stall {
		t.Errorf("event log: slow action %q, want the promotion's store work, %v or more", slow, stall)
	}

	// A freeze of the whole process: the clock jumps without any
	// goroutine running, as after SIGSTOP or a paused VM.
	r.clk.Set(r.clk.Now().Add(stall))
	r.clk.Advance(0)
	r.settle()
	st = r.status()
	if st.Role == pair.RoleActive || !strings.Contains(st.Reason, "frozen for") {
		t.Fatalf("after a %v freeze: %s epoch %d (%s), want a step-down for the freeze", stall, st.Role, st.Epoch, st.Reason)
	}
}
