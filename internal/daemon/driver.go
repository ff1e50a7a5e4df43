package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/heartbeat"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/pair"
	"github.com/tandem-ha/tandem/vip"
	"github.com/tandem-ha/tandem/wip"
)

// The driver's view of the other components: narrow interfaces defined
// here, so each boundary is explicit (and the driver is testable).

// replicaStore is the WIP store as the driver uses it.
type replicaStore interface {
	// Promote makes the store primary at epoch; force overrides I5;
	// peerFollows says the old primary handed over and follows.
	Promote(ctx context.Context, epoch uint64, force, peerFollows bool) error
	// Demote makes it secondary.
	Demote(ctx context.Context) error
	// Replication reports the state for the machine and for the API.
	Replication() (pair.Replication, api.ReplicationStatus)
	// Redial makes a secondary dial the peer now (it has just become
	// active) instead of at the end of its backoff.
	Redial()
	// PeerCannotAck tells a primary that the peer's store has failed:
	// commits waiting for it meet on-peer-loss at once.
	PeerCannotAck(why string)
}

// orchestrator is the orchestration runtime as the driver uses it.
type orchestrator interface {
	Start(ctx context.Context) error
	// Pause stops starting jobs and waits for in-flight ones up to the
	// configured bound; it returns what it waited for and handed over.
	Pause(ctx context.Context) (string, error)
	// Stop stops at once; running jobs resume from their checkpoints
	// wherever the pair runs next.
	Stop() error
	Handler() http.Handler
	Status() api.RuntimeStatus
}

// vipGroup is the VIP manager as the driver uses it.
type vipGroup interface {
	Claim(ctx context.Context) error
	Release(ctx context.Context) error
	Announce(ctx context.Context) error
	Status() vip.Status
}

// heartbeats is the heartbeat as the driver uses it.
type heartbeats interface {
	// Events delivers the failure detector's verdicts in order.
	Events() <-chan heartbeat.Event
	// Publish sets what the following heartbeats carry.
	Publish(p heartbeat.Payload)
}

// gatewayProber answers "can this node still reach the outside?".
type gatewayProber interface {
	Probe(ctx context.Context) (reachable bool, err error)
}

// watchdogDev is the optional hardware watchdog.
type watchdogDev interface {
	Kick() error
	Disarm() error
}

// adminReq is an operator command waiting for the machine's verdict.
type adminReq struct {
	ev    pair.Admin
	reply chan adminReply
}

// adminReply is the machine's verdict and its status right after it.
type adminReply struct {
	err error
	st  pair.Status
}

// driver owns the pair state machine and carries out its actions.
type driver struct {
	node    string
	peerID  uint8
	peerSeq uint64 // PeerAlive events delivered, in order
	log     *zap.Logger
	clk     clock.Clock
	timing  pair.Timing
	dir     string // data directory: the pair state file
	// ackTimeout is the store's peer-ack-timeout (the slow-acks alarm),
	// and blockOnPeerLoss its on-peer-loss (the commits-wait alarm).
	ackTimeout      time.Duration
	blockOnPeerLoss bool

	// peerActiveEpoch is the epoch in which the peer's heartbeat last
	// said it was active (0: not active): a new one makes the store redial.
	peerActiveEpoch uint64

	m     *pair.Machine
	hb    heartbeats
	watch *freezeWatch
	store replicaStore
	vip   vipGroup
	vips  []netip.Addr
	gw    gatewayProber
	wd    watchdogDev // nil: none configured
	rt    orchestrator
	dp    *dataPlane
	ev    *eventLog

	// runCtx bounds the helper goroutines the driver starts (probes,
	// pauses); they report on in.
	runCtx context.Context
	in     chan pair.Event
	admin  chan adminReq
	rtOps  chan pair.Action // runtime start/stop, for runtimeWorker
	wg     sync.WaitGroup
	// answering counts work off the loop not yet done: answers not yet
	// posted, I/O under boundedIO (tests wait for none).
	answering atomic.Int32

	epoch           atomic.Uint64
	loopAt          atomic.Int64 // Unix ns of the last loop turn (systemd watchdog)
	status          atomic.Pointer[pair.Status]
	lastRepl        pair.Replication
	replSent        bool
	awaitAck        bool
	handoverRefused string        // storeHandover's last refusal, logged once
	handoverAt      time.Time     // when storeHandover last saw its switchover under way
	stallOverAt     time.Time     // when failedAlarm first saw the failed store's disk answer again (zero: not yet)
	restartAfter    time.Duration // disk.restart-after-stall (stallrestart.go); 0: never
	ioErrorHandover time.Duration // disk.io-error-handover (storeHandover); 0: never
	ioHandedOverAt  time.Time     // when storeHandover last handed over for I/O errors
	ioHandoverEpoch uint64        // the epoch it handed over from
	restarting      bool          // stallRestart has stopped the node to restart it
	restartRefused  string        // why stallRestart will not restart the node
	refusedUntil    time.Time     // when a refusal for the limit ends (zero: with the run)
	gwState         atomic.Pointer[api.TieBreakerStatus]
	counters        countersAtomic
	persisted       pair.Persisted
	saver           *persister // the pair state file's writer (made at the first persist)
	roleAt          atomic.Pointer[time.Time]
	prev            pair.Status // machine status after the last Ready (noteRole)
	gate            *goAloneGate
	gateFrom        *pair.Status // the status the gate was last set from (syncGate)
}

type countersAtomic struct {
	promotions, demotions, fences, switchovers atomic.Uint64
}

// answer runs f on its own goroutine and posts the event it returns: the
// machine's requests (a probe, a query) are answered off the loop.
func (d *driver) answer(f func() pair.Event) {
	d.wg.Add(1)
	d.answering.Add(1)
	go func() {
		defer d.wg.Done()
		d.post(f())
		d.answering.Add(-1)
	}()
}

// post hands an event to the driver from another goroutine; it gives up
// when the run ends.
func (d *driver) post(ev pair.Event) {
	select {
	case d.in <- ev:
	case <-d.runCtx.Done():
	}
}

// loop runs the machine until it reports Stopped. stopCtx ending starts
// the orderly stop; hardCtx ending abandons it.
func (d *driver) loop(stopCtx, hardCtx context.Context, first pair.Ready) error {
	d.apply(first)
	if first.Stopped {
		return nil
	}
	stopCh := stopCtx.Done()
	period := driverPeriod(d.timing)
	expect := d.clk.Now().Add(period) // read before arming, as at each tick's Reset
	t := d.clk.NewTimer(period)
	defer t.Stop()
	lateMin := d.lateMin()
	jumped := false // a ClockJump since the last tick
	for {
		d.loopAt.Store(d.clk.Now().UnixNano())
		var (
			ev   pair.Event
			hev  *heartbeat.Event
			req  *adminReq
			tick bool
		)
		select {
		case <-hardCtx.Done():
			return fmt.Errorf("daemon: orderly stop abandoned: %w", context.Cause(hardCtx))
		case <-stopCh:
			stopCh = nil
			d.ev.add(d.clk.Now(), "role", "orderly stop requested")
			ev = pair.Stop{}
		case h := <-d.hb.Events():
			hev = &h
		case ev = <-d.in:
		case r := <-d.admin:
			req = &r
		case <-t.C():
			tick = true
		}
		// A process (or VM) that was frozen wakes with everything it
		// believes about the peer and the tie-breaker stale, and with the
		// heartbeats of the whole freeze queued oldest first: whatever
		// woke the loop, the machine is told first (ClockJump), and steps
		// down if it was active. Only the freeze watch can tell a freeze:
		// this loop is also late when one of its own actions was slow,
		// and then the heartbeats went on and the peer saw nothing amiss.
		if frozen := d.watch.take(d.clk.Now()); frozen > lateMin {
			d.log.Warn("the process did not run on time (frozen or starved?)", zap.Duration("late", frozen))
			jumped = true
			if d.feed(pair.ClockJump{Delta: frozen}) {
				return nil
			}
		}
		// Then the heartbeats, oldest first: every step runs the
		// machine's time rules, and after a stall they must judge the
		// peer on the newest heartbeat, not on the one from before it.
		if hev != nil {
			if e := d.fromHeartbeat(*hev); e != nil && d.feed(e) {
				return nil
			}
		}
		if d.drain(d.hb.Events(), nil) {
			return nil
		}
		switch {
		case req != nil:
			rd, err := d.m.Step(d.clk.Now(), req.ev)
			req.reply <- adminReply{err: err, st: d.m.Status()}
			if err == nil {
				d.ev.add(d.clk.Now(), "admin", req.ev.String())
				if d.apply(rd) {
					return nil
				}
			}
		case tick:
			now := d.clk.Now()
			if late := now.Sub(expect); late > lateMin && !jumped {
				d.log.Warn("the driver was held up by its own actions; the process ran meanwhile, so this is no freeze", zap.Duration("late", late))
			}
			// Answers that came in meanwhile (a gateway probe's) count
			// before the time rules call them overdue.
			if d.drain(nil, d.in) {
				return nil
			}
			if d.apply(d.m.Tick(d.clk.Now())) {
				return nil
			}
			d.gate.ticked(now)
			t.Reset(period)
			expect, jumped = now.Add(period), false
			r, rs := d.replication()
			if r != nil && d.feed(r) {
				return nil
			}
			if d.storeHandover(rs) {
				return nil
			}
			if rs.StallOver && d.stallRestart(rs, d.m.Status()) && d.feed(pair.Stop{}) {
				return nil
			}
		case ev != nil:
			if d.feed(ev) {
				return nil
			}
		}
	}
}

// lateMin is the lateness (of the process, of the loop, of one action)
// worth a word: a heartbeat interval, and never less than 50 ms, which a
// loaded host reaches without anything being wrong. For the process, it
// is also the least freeze the machine is told of (ClockJump).
func (d *driver) lateMin() time.Duration { return max(d.timing.Interval, 50*time.Millisecond) }

// driverPeriod is how often the driver ticks the machine (and the freeze
// watch wakes): half the heartbeat interval, at most 20 ms.
func driverPeriod(t pair.Timing) time.Duration {
	return min(t.Interval/2, 20*time.Millisecond)
}

// feed steps the machine with ev and carries out the result. It reports
// whether the machine has stopped.
func (d *driver) feed(ev pair.Event) bool {
	rd, err := d.m.Step(d.clk.Now(), ev)
	if err != nil {
		d.log.Warn("state machine refused an event", zap.Stringer("event", ev), zap.Error(err))
		return false
	}
	return d.apply(rd)
}

// drainMax bounds one drain: the heartbeat queue's channel and d.in hold
// 16 and 64 events.
const drainMax = 128

// drain feeds the machine the heartbeat verdicts (hb) or component events
// (in) that are already waiting, without blocking; pass nil for the other.
// It reports whether the machine has stopped.
func (d *driver) drain(hb <-chan heartbeat.Event, in <-chan pair.Event) bool {
	for range drainMax {
		var ev pair.Event
		select {
		case hev := <-hb:
			ev = d.fromHeartbeat(hev)
		case ev = <-in:
		default:
			return false
		}
		if ev != nil && d.feed(ev) {
			return true
		}
	}
	return false
}

// runtimeWorker carries out the runtime actions in order, until the run
// ends. Start failures and completed pauses go back to the machine.
func (d *driver) runtimeWorker() {
	for {
		select {
		case <-d.runCtx.Done():
			return
		case a := <-d.rtOps:
			switch {
			case a.Kind == pair.ActStartRuntime:
				if err := d.rt.Start(d.runCtx); err != nil && d.runCtx.Err() == nil {
					d.log.Error("runtime start", zap.Error(err))
					d.post(pair.ActionFailed{Kind: pair.ActStartRuntime, Err: err})
				}
			case a.Graceful:
				report, err := d.rt.Pause(d.runCtx)
				if err != nil {
					d.log.Warn("runtime pause", zap.Error(err))
				}
				d.ev.add(d.clk.Now(), "runtime", "paused: "+report)
				d.post(pair.RuntimePaused{})
			default:
				if err := d.rt.Stop(); err != nil {
					d.log.Error("runtime stop", zap.Error(err))
				}
			}
		}
	}
}

// replication polls the store and returns an event when its state changed
// (or when the machine is waiting for the peer's ack of everything), and
// the store's status as the API shows it.
func (d *driver) replication() (pair.Event, api.ReplicationStatus) {
	r, rs := d.store.Replication()
	d.peerSnapshotAlarm(rs)
	d.slowAcksAlarm(rs)
	d.peerOutdatedAlarm(rs)
	d.commitsWaitAlarm(rs)
	st := d.m.Status()
	d.corruptAlarm(rs, st)
	d.failedAlarm(rs, st)
	d.writeAlarms(rs)
	if st.Role == pair.RoleActive && st.PeerAlive && st.Peer.NoFollow {
		// The passive's store has failed (its heartbeat says no-follow):
		// it will not ack, and the pair knows it before the store's
		// peer-ack-timeout would (5 s of stalled commits by default).
		d.store.PeerCannotAck("the passive's store has failed (its heartbeat says no-follow)")
	}
	if d.replSent && r == d.lastRepl && !(d.awaitAck && r.PeerAckedAll) {
		return nil, rs
	}
	if d.awaitAck && r.PeerAckedAll {
		d.awaitAck = false
	}
	d.lastRepl, d.replSent = r, true
	return r, rs
}

// storeHandover starts a switchover when this node is active, its WIP
// store reports corruption or has failed (a local write or sync error),
// or pebble's own work on it has failed with an I/O error (not a full
// file system) for disk.io-error-handover, and the machine would accept
// one (the peer is passive, alive and in sync): the peer's copy is whole
// and writable, this one is not, or sits on a disk that fails. A failed
// store's committed LSN is its last durable one, so the switchover's wait
// for the peer's ack of every commit ends as for a working store.
// One that did not complete (aborted: the peer fell out of sync, the pause
// failed) is tried again a switchover-timeout after it ended, not at the
// next tick: each try pauses the runtime. It reports whether the machine
// has stopped.
//
// The I/O-error handover is DRBD's on-io-error detach: commits still
// work, but compactions that fail reading a table (a bad sector) let
// level 0 grow until commits stall, and the jobs' own reads may meet the
// same sector. Not in maintenance, where nothing moves the role by itself
// while the store works. A node that has handed over for I/O errors and is active
// again in a later epoch within the hour does not do it again: if the
// peer's disk fails too, the role settles on one node instead of moving
// at every disk.io-error-handover (the peer does not say its own store's
// errors). A handover that did not complete (the same epoch) is tried
// again as any other.
func (d *driver) storeHandover(rs api.ReplicationStatus) bool {
	if rs.Role != wip.Primary.String() || rs.Failed == "" && rs.Corruption == "" && rs.WriteError == "" {
		return false // the common tick: nothing to read from the machine
	}
	now := d.clk.Now() // not the tick's: the tick has stepped the machine since
	st := d.m.Status()
	why, ioErr := "", false
	switch {
	case rs.Failed != "":
		why = "the WIP store has failed"
	case rs.Corruption != "":
		why = "the WIP store is corrupt"
	case !st.Maintenance && d.ioErrorHandoverDue(rs, now, st.Epoch): // the store still works: no automatic move
		why, ioErr = fmt.Sprintf("%s for %v (%s)", writeErrorWhat(rs), now.Sub(rs.WriteErrorSince).Round(time.Second), rs.WriteError), true
	default:
		return false
	}
	if st.Substate == "handing-over" {
		d.handoverAt = now
		return false
	}
	if st.Role != pair.RoleActive || st.SwitchoverBlocked != "" {
		return false
	}
	if !d.handoverAt.IsZero() && now.Sub(d.handoverAt) < d.timing.SwitchoverTimeout {
		return false
	}
	rd, err := d.m.Step(now, pair.Admin{Cmd: pair.AdminSwitchover, Why: why})
	if err != nil {
		// Not expected (SwitchoverBlocked was ""): said once per reason,
		// not at every tick.
		if msg := err.Error(); msg != d.handoverRefused {
			d.handoverRefused = msg
			d.log.Warn(why+": switchover refused", zap.Error(err))
		}
		return false
	}
	d.handoverRefused, d.handoverAt = "", now
	if ioErr {
		d.ioHandedOverAt, d.ioHandoverEpoch = now, st.Epoch
	}
	d.log.Warn(why + ": handing the active role over to the peer") // the machine's notice records it
	return d.apply(rd)
}

// ioErrorHandoverDue reports whether pebble's work on the store has failed
// with an I/O error (not a full file system: the peer's store holds the
// same data) for disk.io-error-handover, and this node, active in epoch,
// has not handed over for I/O errors from an earlier epoch within the
// last hour.
func (d *driver) ioErrorHandoverDue(rs api.ReplicationStatus, now time.Time, epoch uint64) bool {
	if d.ioErrorHandover <= 0 || rs.WriteError == "" || rs.WriteErrorNoSpace || now.Sub(rs.WriteErrorSince) < d.ioErrorHandover {
		return false
	}
	return d.ioHandedOverAt.IsZero() || epoch == d.ioHandoverEpoch || now.Sub(d.ioHandedOverAt) >= ioHandoverEvery
}

// ioHandoverEvery bounds the I/O-error handovers from one node.
const ioHandoverEvery = time.Hour

// fromHeartbeat turns a detector verdict into a machine event (nil for
// those the machine does not take).
func (d *driver) fromHeartbeat(e heartbeat.Event) pair.Event {
	now := d.clk.Now()
	switch e.Kind {
	case heartbeat.PeerAlive:
		a := advertFromPayload(e.Payload)
		a.Node = d.peerID
		// The heartbeat delivers payloads in the sender's round order
		// (a late path cannot step the payload back), so the order of
		// its events is the order the machine needs.
		d.peerSeq++
		if a.Role == pair.RoleActive && a.Epoch != d.peerActiveEpoch {
			// The peer has just taken the role (election, handover,
			// failback): if it waits for this node (PeerFollows), it waits
			// for this dial.
			d.store.Redial()
		}
		if a.Role == pair.RoleActive {
			d.peerActiveEpoch = a.Epoch
		} else {
			d.peerActiveEpoch = 0
		}
		return pair.PeerAlive{Path: e.Path, Seq: d.peerSeq, Advert: a}
	case heartbeat.PeerSilent:
		d.ev.add(now, "path", "peer silent on every path")
		return pair.PeerSilent{}
	case heartbeat.PathDown:
		d.ev.add(now, "path", "heartbeat path "+e.Path+" down")
		return pair.PathDown{Path: e.Path}
	case heartbeat.PathUp:
		d.ev.add(now, "path", "heartbeat path "+e.Path+" up")
		return pair.PathUp{Path: e.Path}
	case heartbeat.PeerRestarted:
		d.ev.add(now, "peer", "the peer restarted")
	case heartbeat.BootRaised:
		d.ev.add(now, "heartbeat", fmt.Sprintf("heartbeat boot id raised from %d to %d: the peer had accepted a larger one from this node "+
			"(its data directory was lost and its clock is behind the last run's)", e.OldBootID, e.BootID))
	}
	return nil
}

// apply carries out rd's actions in order, then publishes its advert. It
// reports whether the machine has stopped.
func (d *driver) apply(rd pair.Ready) bool {
	for depth := 0; ; depth++ {
		// The machine has already moved (also after an ActionFailed step):
		// close or open the store's fence-peer gate before any action can
		// block.
		d.syncGate()
		failed := false
		for _, a := range rd.Actions {
			start := d.clk.Now()
			err := d.do(a)
			if took := d.clk.Since(start); took > d.lateMin() {
				// Not a freeze (see freezeWatch), but it delays what the
				// machine does next: a slow disk shows here first.
				d.log.Warn("slow action", zap.Stringer("action", a), zap.Duration("took", took))
				d.ev.add(d.clk.Now(), "action", fmt.Sprintf("%s took %v", a, took.Round(time.Millisecond)))
			}
			if err != nil {
				d.log.Error("action failed", zap.Stringer("action", a), zap.Error(err))
				d.ev.add(d.clk.Now(), "action", fmt.Sprintf("%s failed: %v", a, err))
				next, serr := d.m.Step(d.clk.Now(), pair.ActionFailed{Kind: a.Kind, Err: err})
				if serr != nil {
					d.log.Error("state machine refused ActionFailed", zap.Error(serr))
					break
				}
				d.publish(rd.Advert)
				d.noteRole()
				rd, failed = next, true
				break
			}
		}
		if !failed || depth > 8 {
			d.publish(rd.Advert)
			d.noteRole()
			return rd.Stopped
		}
	}
}

// syncGate sets the store's fence-peer gate from the machine's role; most
// Readys (heartbeats) leave the role alone and cost a comparison only.
func (d *driver) syncGate() {
	st := d.m.Status()
	if d.gateFrom != nil && st.Role == d.gateFrom.Role && st.Substate == d.gateFrom.Substate {
		return
	}
	d.gateFrom = &st
	d.gate.set(st.Role == pair.RoleActive, st.Role.String()+"/"+st.Substate)
}

// publish puts the advert on the heartbeats and refreshes the status the
// API reads.
func (d *driver) publish(a pair.Advert) {
	d.hb.Publish(payloadFromAdvert(a))
	st := d.m.Status()
	d.status.Store(&st)
	d.epoch.Store(st.Epoch)
}

// noteRole counts and logs role changes since before.
// The machine has already changed when a Ready reaches apply, so the
// comparison is with the status seen after the previous Ready (d.prev).
func (d *driver) noteRole() {
	before, after := d.prev, d.m.Status()
	d.prev = after
	if after.Role == before.Role && after.Substate == before.Substate {
		return
	}
	now := d.clk.Now()
	d.roleAt.Store(&now)
	reason := after.Reason
	if after.Role == before.Role && before.Substate != "" {
		reason = after.SubReason // the role's reason is that of its last change
	}
	d.log.Info("role", zap.Stringer("from", before.Role), zap.String("from_sub", before.Substate),
		zap.Stringer("to", after.Role), zap.String("to_sub", after.Substate), zap.Uint64("epoch", after.Epoch), zap.String("reason", reason))
	d.ev.add(now, "role", fmt.Sprintf("%s/%s -> %s/%s (epoch %d): %s", before.Role, before.Substate, after.Role, after.Substate, after.Epoch, reason))
	if after.Role == pair.RoleActive && before.Role != pair.RoleActive {
		d.counters.promotions.Add(1)
	}
	if before.Role == pair.RoleActive && after.Role != pair.RoleActive {
		d.counters.demotions.Add(1)
	}
}

// raiseAlarm raises an alarm; a new one is logged and recorded as an
// event. It reports whether the alarm is new.
func (d *driver) raiseAlarm(id, severity, text string) bool {
	if !d.ev.raise(d.clk.Now(), id, severity, text) {
		return false
	}
	d.log.Warn("alarm raised", zap.String("alarm", id), zap.String("text", text))
	d.ev.add(d.clk.Now(), "alarm", id+": "+text)
	return true
}

// clearAlarm clears an alarm; if it was raised, that is logged and
// recorded as an event. It reports whether it was raised.
func (d *driver) clearAlarm(id string) bool {
	if !d.ev.clear(id) {
		return false
	}
	d.log.Info("alarm cleared", zap.String("alarm", id))
	d.ev.add(d.clk.Now(), "alarm", id+" cleared")
	return true
}

// actionTimeout bounds one store or VIP operation: long enough for an
// fsync and a netlink round on a loaded host, short enough that a stuck
// disk turns into an ActionFailed instead of a hung driver.
const actionTimeout = 10 * time.Second

// do carries out one action.
func (d *driver) do(a pair.Action) error {
	ctx, cancel := context.WithTimeout(d.runCtx, actionTimeout)
	defer cancel()
	switch a.Kind {
	case pair.ActPersist:
		if d.saver == nil {
			// Real time, not the driver's clock: the bound is on a
			// disk's latency (a test's manual clock would fire it while
			// a real write is under way).
			d.saver = &persister{dir: d.dir, clk: clock.Real()}
		}
		if err := d.saver.save(ctx, a.State); err != nil {
			return err
		}
		d.persisted = a.State
	case pair.ActSetReplication:
		if a.Primary {
			return d.store.Promote(ctx, a.Epoch, a.Force, a.PeerFollows)
		}
		return d.store.Demote(ctx)
	case pair.ActClaimVIP:
		if err := d.vip.Claim(ctx); err != nil {
			return err
		}
		return d.dp.start(d.vips)
	case pair.ActReleaseVIP:
		// Listeners first: no request may be accepted on an address that
		// is about to leave (I3's demotion order).
		sctx, scancel := context.WithTimeout(d.runCtx, 2*time.Second)
		d.dp.stop(sctx)
		scancel()
		return d.vip.Release(ctx)
	case pair.ActReannounceVIP:
		return d.vip.Announce(ctx)
	case pair.ActStartRuntime, pair.ActStopRuntime:
		if d.rt == nil {
			if a.Kind == pair.ActStopRuntime && a.Graceful {
				d.answer(func() pair.Event { return pair.RuntimePaused{} })
			}
			return nil
		}
		// Runtime operations take a while (resuming jobs commits their
		// first checkpoints; a pause waits for jobs): the driver must
		// keep turning meanwhile, or the machine would read the stall
		// as a freeze. One worker runs them in the order given, so a
		// stop never overtakes the start before it. The VIP is claimed
		// and the epoch durable before a start is queued (I3).
		select {
		case d.rtOps <- a:
		default:
			return fmt.Errorf("daemon: runtime operations backed up (%d queued)", cap(d.rtOps))
		}
	case pair.ActAwaitPeerAck:
		d.awaitAck = true
	case pair.ActKickWatchdog:
		if d.wd != nil {
			return d.wd.Kick()
		}
	case pair.ActDisarmWatchdog:
		if d.wd != nil {
			return d.wd.Disarm()
		}
	case pair.ActProbeGateway:
		seq := a.Seq
		d.answer(func() pair.Event {
			pctx, cancel := context.WithTimeout(d.runCtx, d.timing.ProbeTimeout)
			ok, err := d.gw.Probe(pctx)
			cancel()
			now := d.clk.Now()
			d.gwState.Store(&api.TieBreakerStatus{GatewayReachable: ok, Checked: now})
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				d.log.Debug("gateway probe", zap.Error(err))
			}
			return pair.GatewayProbe{Seq: seq, Reachable: ok}
		})
	case pair.ActQueryWitness:
		// No witness client in this build: the machine only asks when one
		// is configured, and config refuses a witness it cannot use.
		seq := a.Seq
		d.answer(func() pair.Event { return pair.WitnessReply{Seq: seq, OK: false} })
	case pair.ActRaiseAlarm:
		d.raiseAlarm(a.Alarm, "warning", a.Text)
	case pair.ActClearAlarm:
		d.clearAlarm(a.Alarm)
	case pair.ActNotice:
		d.log.Info("notice", zap.String("text", a.Text))
		d.ev.add(d.clk.Now(), "notice", a.Text)
		switch a.Tally {
		case pair.TallyFence:
			d.counters.fences.Add(1)
		case pair.TallyHandover:
			d.counters.switchovers.Add(1)
		}
	default:
		return fmt.Errorf("daemon: unknown action %v", a.Kind)
	}
	return nil
}
