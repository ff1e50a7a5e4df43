package pair

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"time"
)

// The simulated pair: two machines, three heartbeat paths, a gateway, an
// optional witness, a replication link over the HA paths and the VIP, on a
// simulated clock driven by an event queue. The harness plays the daemon: it
// carries out each Ready's actions in order and feeds their results back.

var paths = []string{"ha1", "ha2", "lan"}

var simStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type item struct {
	at  time.Time
	seq uint64
	fn  func()
}

type queue []*item

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*item)) }
func (q *queue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

type simNode struct {
	name  string
	id    uint8
	m     *Machine
	gen   int // incremented on crash: stale timers of a dead incarnation do nothing
	up    bool
	froze bool
	frzAt time.Time
	inbox []Event // events that arrived while frozen

	persisted   Persisted
	vip, run    bool
	orphanVIP   bool // the daemon died, its kernel still holds the VIP
	replPrimary bool
	replEpoch   uint64
	lsn         uint64
	replState   ReplState
	forcedRepl  *ReplState
	storeFailed bool // the store reports Failed ("repl X failed")
	lastRepl    Replication
	replSent    bool
	advert      Advert
	lastRx      map[string]time.Time
	pathDown    map[string]bool
	failNext    map[ActionKind]bool
	gwOK, lanOK bool
	witnessOK   bool
	hbSeq       uint64 // never reset: heartbeat seqs grow across restarts
	wake        *item
	lastClaimOK bool // persist-before-claim bookkeeping
	claimEpoch  uint64
	oldAdvert   bool // plays a tandemd that predates Advert.WantActive: it never sees the bit
}

type sim struct {
	cfg      [2]Config
	now      time.Time
	q        queue
	seq      uint64
	nodes    [2]*simNode
	cut      map[string]bool // "ha1:a>b"
	lanSplit bool            // ARP between the nodes blocked too
	latency  time.Duration
	probeRTT time.Duration
	pauseFor time.Duration

	// witness
	witHolder  int
	witRenewed time.Time

	log        []string
	violations []string
	allowDual  bool
	dualSince  time.Time
	dualBound  time.Duration // 0: any overlap is a violation
	quiet      bool          // log nothing (random tests)
	onClaim    func(n *simNode)
	loss       map[string]float64 // per path drop probability (needs rand)
	jitter     time.Duration      // extra delivery delay, uniform (needs rand)
	rand       *rand.Rand
	rng        func(n int) int
}

func newSim(base Config) *sim {
	s := &sim{now: simStart, cut: map[string]bool{}, latency: 200 * time.Microsecond,
		probeRTT: time.Millisecond, pauseFor: 50 * time.Millisecond, witHolder: -1}
	for i, name := range []string{"a", "b"} {
		c := base
		c.NodeID = uint8(i + 1)
		s.cfg[i] = c
		s.nodes[i] = &simNode{name: name, id: uint8(i + 1), gwOK: true, lanOK: true, witnessOK: true,
			persisted: Persisted{Role: RolePassive}}
	}
	return s
}

func (s *sim) at(t time.Time, fn func()) *item {
	s.seq++
	it := &item{at: t, seq: s.seq, fn: fn}
	heap.Push(&s.q, it)
	return it
}

func (s *sim) other(n *simNode) *simNode { return s.nodes[2-n.id] }

func (s *sim) logf(n *simNode, f string, a ...any) {
	if s.quiet {
		return
	}
	prefix := fmt.Sprintf("%9.4fs", s.now.Sub(simStart).Seconds())
	if n != nil {
		prefix += " " + n.name + ":"
	}
	s.log = append(s.log, prefix+" "+fmt.Sprintf(f, a...))
}

func (s *sim) violate(f string, a ...any) {
	v := fmt.Sprintf("%9.4fs VIOLATION ", s.now.Sub(simStart).Seconds()) + fmt.Sprintf(f, a...)
	s.violations = append(s.violations, v)
	if !s.quiet {
		s.log = append(s.log, v)
	}
}

// run processes every queued item up to and including until.
func (s *sim) run(until time.Time) {
	for s.q.Len() > 0 && !s.q[0].at.After(until) {
		it := heap.Pop(&s.q).(*item)
		if it.at.After(s.now) {
			s.checkInstant() // the previous instant is complete
			s.now = it.at
		}
		it.fn()
	}
	s.checkInstant()
	if until.After(s.now) {
		s.now = until
	}
}

// acting: the node's machine is active and it can act (host up, not frozen).
func (s *sim) acting(n *simNode) bool {
	return n.up && !n.froze && n.m != nil && n.m.role == RoleActive
}

// checkInstant asserts the safety property at the end of every instant.
func (s *sim) checkInstant() {
	a, b := s.nodes[0], s.nodes[1]
	if s.acting(a) && s.acting(b) {
		if s.dualSince.IsZero() {
			s.dualSince = s.now
		}
		if s.allowDual {
			return
		}
		if s.now.Sub(s.dualSince) > s.dualBound || s.dualBound == 0 {
			s.violate("two actives: a epoch %d, b epoch %d (since %v)", a.m.epoch, b.m.epoch, s.now.Sub(s.dualSince))
		}
	} else {
		s.dualSince = time.Time{}
	}
}

func (s *sim) start(n *simNode) {
	n.gen++
	n.up, n.froze, n.inbox = true, false, nil
	n.lastRx, n.pathDown, n.failNext = map[string]time.Time{}, map[string]bool{}, map[ActionKind]bool{}
	n.vip, n.run, n.orphanVIP = false, false, false // the boot's release-vip clears a leftover
	// The store keeps its data and lineage; the direction is set by the machine.
	n.replPrimary, n.lastRepl, n.replSent = false, Replication{}, false
	if n.vip {
		n.vip = false
	}
	m, rd, err := New(s.cfg[n.id-1], n.persisted, s.now)
	if err != nil {
		panic(err)
	}
	n.m = m
	s.logf(n, "boot (%s)", n.persisted)
	s.apply(n, rd)
	gen := n.gen
	phase := time.Duration(0)
	if s.rng != nil {
		phase = time.Duration(s.rng(int(s.cfg[0].Timing.Interval)))
	}
	var beat func()
	beat = func() {
		if n.gen != gen || !n.up {
			return
		}
		if !n.froze {
			s.arpWatch(n)
			s.sendHB(n)
			s.checkPaths(n)
			s.reportRepl(n)
		}
		s.at(s.now.Add(s.cfg[0].Timing.Interval), beat)
	}
	s.at(s.now.Add(phase), beat)
}

// kill: the daemon dies (SIGKILL, panic) but the host lives on, and so
// does the VIP in its kernel until a new daemon releases it at boot.
func (s *sim) kill(n *simNode) {
	n.gen++
	n.up, n.m = false, nil
	n.orphanVIP, n.vip, n.run = n.vip, false, false
	s.logf(n, "daemon killed (vip left configured: %t)", n.orphanVIP)
}

func (s *sim) crash(n *simNode) {
	n.gen++
	n.up, n.m = false, nil
	n.vip, n.run, n.orphanVIP = false, false, false // the host is gone, and its addresses with it
	s.logf(n, "crash")
}

// deliver hands an event to a node's machine (or its inbox while frozen).
func (s *sim) deliver(n *simNode, ev Event) {
	if !n.up || n.m == nil {
		return
	}
	if n.froze {
		n.inbox = append(n.inbox, ev)
		return
	}
	if n.m.stopped {
		return
	}
	rd, err := n.m.Step(s.now, ev)
	if err != nil {
		s.logf(n, "step %v: error: %v", ev, err)
		return
	}
	s.apply(n, rd)
}

func (s *sim) tick(n *simNode) {
	if !n.up || n.froze || n.m == nil || n.m.stopped {
		return
	}
	s.apply(n, n.m.Tick(s.now))
}

// apply plays the daemon: actions in order, failures reported, then the wake timer.
func (s *sim) apply(n *simNode, rd Ready) {
	prevRole := n.advert.Role
	for _, a := range rd.Actions {
		if n.failNext[a.Kind] {
			delete(n.failNext, a.Kind)
			s.logf(n, "%s FAILS", a)
			s.deliver(n, ActionFailed{Kind: a.Kind, Err: errors.New("injected failure")})
			return
		}
		s.do(n, a)
	}
	if !n.up || n.m == nil {
		return
	}
	changed := rd.Advert != n.advert
	n.advert = rd.Advert
	if rd.Advert.Role != prevRole && !s.quiet {
		st := n.m.Status()
		s.logf(n, "role %s -> %s (%s)", prevRole, rd.Advert.Role, st.Reason)
	}
	if changed || rd.Stopped {
		s.sendHB(n)
	}
	if rd.Stopped {
		s.logf(n, "stopped")
		n.up = false
		n.gen++
		return
	}
	if n.wake != nil {
		n.wake.fn = func() {}
	}
	gen := n.gen
	w := rd.Wake
	if !w.After(s.now) {
		w = s.now.Add(time.Microsecond)
	}
	n.wake = s.at(w, func() {
		if n.gen == gen {
			s.tick(n)
		}
	})
}

func (s *sim) do(n *simNode, a Action) {
	switch a.Kind {
	case ActPersist:
		if a.State.Epoch < n.persisted.Epoch {
			s.violate("%s: epoch decreased %d -> %d", n.name, n.persisted.Epoch, a.State.Epoch)
		}
		n.persisted = a.State
		n.lastClaimOK = a.State.Role == RoleActive
		n.claimEpoch = a.State.Epoch
		s.logf(n, "%s", a)
	case ActSetReplication:
		if a.Primary && (!n.lastClaimOK || a.Epoch != n.claimEpoch) {
			s.violate("%s: replication primary in epoch %d before persisting it", n.name, a.Epoch)
		}
		n.replPrimary, n.replEpoch = a.Primary, a.Epoch
		s.logf(n, "%s", a)
	case ActClaimVIP:
		if !n.lastClaimOK || n.claimEpoch != n.m.epoch {
			s.violate("%s: claim-vip without a persisted active epoch (I1/I3)", n.name)
		}
		n.vip = true
		s.logf(n, "%s", a)
		if s.onClaim != nil {
			s.onClaim(n)
		}
	case ActReleaseVIP:
		n.vip = false
		s.logf(n, "%s", a)
	case ActStartRuntime:
		if !n.vip && n.m.role == RoleActive {
			s.violate("%s: runtime started without the VIP", n.name)
		}
		n.run = true
		s.logf(n, "%s", a)
	case ActStopRuntime:
		n.run = false
		s.logf(n, "%s", a)
		if a.Graceful {
			gen := n.gen
			s.at(s.now.Add(s.pauseFor), func() {
				if n.gen == gen {
					s.deliver(n, RuntimePaused{})
				}
			})
		}
	case ActAwaitPeerAck:
		gen := n.gen
		s.at(s.now.Add(time.Millisecond), func() {
			if n.gen == gen && s.replConnected() && s.other(n).lsn == n.lsn {
				s.deliver(n, Replication{State: ReplInSync, LSN: n.lsn, PeerInSync: true, PeerAckedAll: true, Failed: n.storeFailed})
			}
		})
	case ActProbeGateway:
		gen, seq := n.gen, a.Seq
		ok := n.gwOK && n.lanOK
		o := s.other(n)
		// A frozen node is a paused VM: its kernel does not answer either.
		held := ok && (o.up && !o.froze && o.vip || o.orphanVIP) && o.lanOK && !s.lanSplit
		d := s.probeRTT
		if !ok {
			d = s.cfg[0].Timing.ProbeTimeout / 2
		}
		s.at(s.now.Add(d), func() {
			if n.gen == gen {
				s.deliver(n, GatewayProbe{Seq: seq, Reachable: ok, VIPHeld: held})
			}
		})
	case ActQueryWitness:
		gen, seq := n.gen, a.Seq
		s.at(s.now.Add(s.probeRTT), func() {
			if n.gen != gen || !n.witnessOK {
				return
			}
			i := int(n.id - 1)
			grant := s.witHolder == -1 || s.witHolder == i || s.now.Sub(s.witRenewed) > s.cfg[0].Timing.DeadAfter
			if grant {
				s.witHolder, s.witRenewed = i, s.now
			}
			s.deliver(n, WitnessReply{Seq: seq, OK: grant})
		})
	case ActRaiseAlarm, ActClearAlarm, ActReannounceVIP:
		s.logf(n, "%s", a)
	case ActNotice, ActKickWatchdog, ActDisarmWatchdog:
	default:
		s.violate("%s: unknown action %v", n.name, a)
	}
}

func (s *sim) linkOK(path string, from, to *simNode) bool {
	if s.cut[path+":"+from.name+">"+to.name] {
		return false
	}
	if path == "lan" && (!from.lanOK || !to.lanOK || s.lanSplit) {
		return false
	}
	return true
}

func (s *sim) sendHB(n *simNode) {
	if !n.up || n.froze {
		return
	}
	o := s.other(n)
	adv := n.advert
	n.hbSeq++
	seq := n.hbSeq
	for i, p := range paths {
		if !s.linkOK(p, n, o) {
			continue
		}
		if s.loss != nil && s.rand != nil && s.rand.Float64() < s.loss[p] {
			continue
		}
		p := p
		gen := o.gen
		d := s.latency + time.Duration(i)*10*time.Microsecond
		if s.jitter > 0 && s.rand != nil {
			d += time.Duration(s.rand.Int63n(int64(s.jitter)))
		}
		s.at(s.now.Add(d), func() {
			if o.gen != gen || !o.up {
				return
			}
			if o.oldAdvert {
				adv.WantActive = false
			}
			o.lastRx[p] = s.now
			s.deliver(o, PeerAlive{Path: p, Seq: seq, Advert: adv})
		})
	}
}

// checkPaths plays the heartbeat detector's per-path verdicts.
func (s *sim) checkPaths(n *simNode) {
	dead := s.cfg[0].Timing.DeadAfter
	alive := 0
	for _, p := range paths {
		if t, ok := n.lastRx[p]; ok && s.now.Sub(t) < dead {
			alive++
		}
	}
	for _, p := range paths {
		t, ok := n.lastRx[p]
		down := !ok || s.now.Sub(t) >= dead
		if !ok {
			continue
		}
		if down && !n.pathDown[p] && alive > 0 {
			n.pathDown[p] = true
			s.deliver(n, PathDown{Path: p})
		} else if !down && n.pathDown[p] {
			n.pathDown[p] = false
			s.deliver(n, PathUp{Path: p})
		}
	}
}

// replConnected: the replication stream runs over HA link 1 or 2, both ways.
func (s *sim) replConnected() bool {
	a, b := s.nodes[0], s.nodes[1]
	if !a.up || !b.up || a.froze || b.froze {
		return false
	}
	for _, p := range []string{"ha1", "ha2"} {
		if s.linkOK(p, a, b) && s.linkOK(p, b, a) {
			return true
		}
	}
	return false
}

// reportRepl plays the wip store: the primary commits while its runtime runs;
// a connected secondary catches up at once; a secondary that reconnects to a
// primary that moved on without it is caught up (sync) and reported in sync.
func (s *sim) reportRepl(n *simNode) {
	o := s.other(n)
	conn := s.replConnected() && o.m != nil
	var r Replication
	if n.replPrimary {
		if n.run {
			n.lsn++
		}
		peerSec := conn && !o.replPrimary
		if peerSec {
			o.lsn = n.lsn
		}
		r = Replication{State: ReplInSync, LSN: n.lsn, PeerInSync: peerSec, PeerAckedAll: peerSec, Failed: n.storeFailed}
	} else {
		st := ReplDisconnected
		if conn && o.replPrimary {
			if o.lsn >= n.lsn {
				n.lsn = o.lsn
			}
			st = ReplInSync
		}
		if n.forcedRepl != nil {
			st = *n.forcedRepl
		}
		if n.storeFailed {
			st = ReplInconsistent // as the daemon's wire reports a failed secondary
		}
		r = Replication{State: st, LSN: n.lsn, Failed: n.storeFailed}
	}
	if r != n.lastRepl || !n.replSent {
		n.lastRepl, n.replSent = r, true
		s.deliver(n, r)
	}
}

// arpWatch plays the vip package's conflict detection: another host answers
// ARP for the VIP we hold.
func (s *sim) arpWatch(n *simNode) {
	o := s.other(n)
	if n.vip && n.lanOK && o.lanOK && !s.lanSplit && (o.up && !o.froze && o.vip || o.orphanVIP) {
		s.deliver(n, VIPConflict{MAC: "02:00:00:00:00:0" + o.name})
	}
}

func (s *sim) freeze(n *simNode) {
	n.froze, n.frzAt = true, s.now
	s.logf(n, "freeze")
}

func (s *sim) thaw(n *simNode) {
	if !n.froze {
		return
	}
	d := s.now.Sub(n.frzAt)
	n.froze = false
	s.logf(n, "thaw after %v", d)
	// The daemon notices the jump first, then drains its socket buffers.
	s.deliver(n, ClockJump{Delta: d})
	in := n.inbox
	n.inbox = nil
	for _, ev := range in {
		s.deliver(n, ev)
	}
	s.tick(n)
}

func (s *sim) status() string {
	var b strings.Builder
	for _, n := range s.nodes {
		if !n.up || n.m == nil {
			fmt.Fprintf(&b, "%s: down (persisted %s)\n", n.name, n.persisted)
			continue
		}
		st := n.m.Status()
		fmt.Fprintf(&b, "%s: %s", n.name, st.Role)
		if st.Substate != "" {
			fmt.Fprintf(&b, "/%s", st.Substate)
		}
		fmt.Fprintf(&b, " epoch=%d vip=%t runtime=%t peer-alive=%t", st.Epoch, n.vip, n.run, st.PeerAlive)
		if st.Maintenance {
			b.WriteString(" maintenance")
		}
		if n.froze {
			b.WriteString(" frozen")
		}
		if st.SwitchoverRequested {
			b.WriteString(" switchover-requested")
		}
		var ids []string
		for id := range st.Alarms {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		if len(ids) > 0 {
			fmt.Fprintf(&b, " alarms=%s", strings.Join(ids, ","))
		}
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n")
}
