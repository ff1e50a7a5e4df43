package vip

import (
	"context"
	"net"
	"time"

	"github.com/mdlayher/packet"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// speaker sends one ownership session's frames over a net.PacketConn: the
// announcement rounds on the Schedule and the conflict probes every
// probeEvery; every maintainEvery it calls maintain, which checks the
// addresses (restoring any that disappeared, renewing the lease), and
// starts the schedule over when something had to be restored. It owns no
// socket: the session opens and closes conn.
//
// Each round is sent in full before the next timer is armed, and the next
// delay is measured from that send (At(n) - At(n-1)), so two rounds are
// never closer than the schedule says even after the process was stalled:
// that spacing is what gets a repeat past a neighbour's locktime.
type speaker struct {
	conn       net.PacketConn
	clk        clock.Clock
	log        *zap.Logger
	sched      Schedule // normalized
	round      [][]byte // one announcement round, in sending order
	probes     [][]byte // one probe round; empty for none
	probeEvery time.Duration
	// maintain checks the VIPs on their link and reports how many it had
	// to restore; nil (or maintainEvery 0) for none.
	maintain      func() (restored int, err error)
	maintainEvery time.Duration
	stats         *stats

	restart chan chan struct{} // kick: start the schedule over, then close the channel sent
	done    chan struct{}      // closed when run returns
}

func newSpeaker(conn net.PacketConn, clk clock.Clock, log *zap.Logger, st *stats) *speaker {
	return &speaker{conn: conn, clk: clk, log: log, stats: st, restart: make(chan chan struct{}), done: make(chan struct{})}
}

// announce sends one announcement round now.
func (s *speaker) announce() error {
	err := s.send(s.round)
	s.stats.sent(kindAnnounce, s.clk.Now(), err, s.log)
	return err
}

// probe sends one probe round now.
func (s *speaker) probe() error {
	if len(s.probes) == 0 {
		return nil
	}
	err := s.send(s.probes)
	s.stats.sent(kindProbe, s.clk.Now(), err, s.log)
	return err
}

// send writes every frame, even after one fails (a full transmit queue for
// one frame must not silence the others), and returns the first error.
func (s *speaker) send(frames [][]byte) error {
	var first error
	for _, f := range frames {
		// A raw packet socket takes the destination from the frame; the
		// address only has to be a *packet.Addr.
		if _, err := s.conn.WriteTo(f, &packet.Addr{HardwareAddr: net.HardwareAddr(f[0:6])}); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// kick makes run start the schedule over from announcement 1, as if round
// 0 had just been sent (the caller sent it), and returns once run has
// re-armed its timer, so that when Announce returns the old schedule can no
// longer fire. It returns at once if run has ended.
func (s *speaker) kick() {
	ack := make(chan struct{})
	select {
	case s.restart <- ack:
		<-ack
	case <-s.done:
	}
}

// run follows the schedule until ctx ends. The caller has sent round 0 and
// the first probe round.
func (s *speaker) run(ctx context.Context) {
	defer close(s.done)
	// The stall guard's first wake (below), read before any timer is
	// armed: a test that waits for the timers and then moves its manual
	// clock must find it read from the time before the move.
	lastWake := s.clk.Now()
	next := 1
	var (
		annT  clock.Timer
		annC  <-chan time.Time
		probC <-chan time.Time
		mainC <-chan time.Time
	)
	// arm sets the timer for announcement next, due the schedule's gap
	// after the round just sent.
	arm := func() {
		if annT != nil {
			annT.Stop()
			annT, annC = nil, nil
		}
		cur, ok1 := s.sched.At(next)
		prev, ok2 := s.sched.At(next - 1)
		if !ok1 || !ok2 {
			return // schedule finished and no refresh
		}
		annT = s.clk.NewTimer(cur - prev)
		annC = annT.C()
	}
	arm()
	if s.probeEvery > 0 && len(s.probes) > 0 {
		t := s.clk.NewTicker(s.probeEvery)
		defer t.Stop()
		probC = t.C()
	}
	if s.maintainEvery > 0 && s.maintain != nil {
		t := s.clk.NewTicker(s.maintainEvery)
		defer t.Stop()
		mainC = t.C()
	}
	defer func() {
		if annT != nil {
			annT.Stop()
		}
	}()
	// Stall guard. The maintenance ticker wakes the loop at least every
	// maintainEvery, so a wake-up much later than that means the process
	// (or its VM) was stopped. Meanwhile the peer may have promoted; the
	// state machine learns it from the next heartbeats, but our overdue
	// timers fire first. So after a stall the timed outward actions
	// (announcements, restores) wait stallHoldoff, giving the state machine
	// time to Release. Probes go on: they change no cache, and they find
	// the new owner. Explicit Claim and Announce calls are never held.
	var holdUntil time.Time
	held := func() bool {
		now := s.clk.Now()
		if s.maintainEvery > 0 && now.Sub(lastWake) > s.maintainEvery+stallThreshold {
			holdUntil = now.Add(stallHoldoff)
			s.stats.stalled()
			s.log.Warn("process was stalled; holding timed announcements so the state machine can catch up",
				zap.Duration("stall", now.Sub(lastWake)), zap.Duration("hold", stallHoldoff))
		}
		lastWake = now
		return now.Before(holdUntil)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ack := <-s.restart:
			held()
			next = 1
			arm()
			close(ack)
		case <-annC:
			if held() {
				// Same announcement, later.
				annT = s.clk.NewTimer(holdUntil.Sub(s.clk.Now()))
				annC = annT.C()
				continue
			}
			s.announce()
			next++
			arm()
		case <-probC:
			held()
			s.probe()
		case <-mainC:
			if held() {
				continue
			}
			restored, err := s.maintain()
			s.stats.maintained(restored, s.clk.Now(), err, s.log)
			if restored > 0 {
				// A VIP was gone (removed by someone, or flushed with its
				// link): caches may have moved meanwhile. Announce as at
				// a claim.
				s.announce()
				next = 1
				arm()
			}
		}
	}
}

// Stall guard constants. A loaded machine delays a goroutine by tens or
// hundreds of milliseconds, not by a second more than the ticker period;
// two seconds cover a few heartbeat intervals of the default profile.
const (
	stallThreshold = time.Second
	stallHoldoff   = 2 * time.Second
)
