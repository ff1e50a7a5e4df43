package pair

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Errors returned by New and Step. Each message names the event or field.
var (
	ErrStopped        = errors.New("pair: machine stopped")
	ErrTimeBackwards  = errors.New("pair: time went backwards")
	ErrBadEvent       = errors.New("pair: bad event")
	ErrRefused        = errors.New("pair: command refused")
	ErrNeedAck        = errors.New("pair: force-promote needs an explicit data-loss acknowledgement")
	ErrNoSuchAlarm    = errors.New("pair: no such alarm raised")
	ErrBadPersisted   = errors.New("pair: bad persisted state")
	errUnknownKindFmt = "%w: %s: unknown action kind %d"
)

type hoPhase uint8

// answer is where the active stands with the peer's switchover request.
type answer uint8

const (
	answerNone    answer = iota // no request heard
	answerPending               // heard, blocked so far, within the grace
	answerStarted               // the switchover was started
	answerRefused               // refused (advertised as Refused while it stands)
)

const (
	hoNone     hoPhase = iota
	hoPausing          // graceful StopRuntime sent, waiting for RuntimePaused
	hoDraining         // waiting for the peer to ack every commit
)

// tri is an answer that may not have come yet.
type tri uint8

const (
	unknown tri = iota
	yes
	no
)

// Machine is the pair state machine of one node. It is not safe for
// concurrent use: the daemon's event loop owns it.
type Machine struct {
	cfg Config
	t   Timing
	now time.Time

	boot time.Time
	role Role

	epoch    uint64 // highest epoch seen or owned; the active's own epoch while active
	maint    bool
	maintGen uint64
	outdated bool // persisted: I5
	repl     ReplState
	lsn      uint64
	lsnKnown bool
	lsnGrew  time.Time // a passive's store last received commits: some primary is alive
	peerSync bool      // primary: peer acks synchronously
	peerAll  bool      // primary: peer acked all
	// replFailed: the store has failed (Replication.Failed); the advert
	// says NoFollow.
	replFailed bool

	// peer view
	peerSeen      bool
	lastHeard     time.Time
	lastMutual    time.Time // last heartbeat from a peer that heard us (the active's lease)
	forcedSilent  bool
	peer          Advert
	peerSeq       uint64
	peerLANSince  time.Time // peer advertised LANUp continuously since (zero: not up)
	pathsDown     map[string]bool
	becameActive  time.Time
	wasSilent     bool
	splitNotified bool

	// tie-breaker
	seq        uint64 // last probe seq issued
	probeOut   bool
	probeAt    time.Time
	freshFrom  uint64 // answers to probes with seq >= freshFrom count for the current silence (0: none)
	gwFresh    tri
	vipHeld    bool
	witFresh   tri
	gwLast     tri // latest answer, fresh or not (health)
	lastProbe  time.Time
	lanUp      bool
	lanUpSeq   uint64    // probes up to this one were sent while the link was down
	lanDownAt  time.Time // zero while the LAN is healthy
	lastKick   time.Time
	degraded   time.Time // until: failed to take the role; prefer the peer
	retryAfter time.Time // earliest next automatic promotion after a failed one
	holdUntil  time.Time // after a clock jump: no promotion before this

	// switchover
	ho          hoPhase
	hoAt        time.Time
	hoReason    string
	handover    bool // passive, advertising Handover to the peer
	handoverAt  time.Time
	stopAfterHO bool
	asking      bool // passive, advertising WantActive: an operator's switchover run here
	askAt       time.Time
	answer      answer    // active: where the peer's current request stands
	askSeenAt   time.Time // active: when the peer's current request was first heard

	stopping bool // orderly stop in progress (no handover)
	stopped  bool

	alarms map[string]string
	reason string
	out    []Action
}

// New builds the machine from its configuration and the persisted state, at
// boot time now. The returned Ready holds the boot actions (release a VIP a
// crashed predecessor may have left configured).
func New(cfg Config, p Persisted, now time.Time) (*Machine, Ready, error) {
	if err := cfg.Validate(); err != nil {
		return nil, Ready{}, err
	}
	if p.Role != RolePassive && p.Role != RoleActive && p.Role != RoleStarting {
		return nil, Ready{}, fmt.Errorf("%w: role: %s: want passive or active", ErrBadPersisted, p.Role)
	}
	m := &Machine{
		cfg: cfg, t: cfg.Timing, now: now, boot: now, role: RoleStarting,
		epoch: p.Epoch, maint: p.Maintenance, maintGen: p.MaintGen, outdated: p.Outdated,
		pathsDown: map[string]bool{}, alarms: map[string]string{}, lanUp: true,
		reason: "boot",
	}
	if p.Role == RoleActive {
		// The previous run was active and did not stop in order: the kernel may
		// still hold the VIP (a SIGKILLed keepalived keeps answering for it).
		m.emit(Action{Kind: ActReleaseVIP})
		m.persist()
		m.notice("was active at the last stop: VIP released, starting as passive")
	}
	if m.outdated {
		m.raise("outdated", "this node's data is outdated: it will not promote automatically")
	}
	if m.maint {
		m.raise("maintenance", "maintenance mode: no automatic failover")
	}
	m.evaluate()
	return m, m.ready(), nil
}

func ownerOf(epoch uint64) uint8 {
	if epoch == 0 {
		return 0
	}
	if epoch%2 == 1 {
		return 1
	}
	return 2
}

// nextEpoch is the smallest epoch above every epoch seen that this node owns.
// Node 1 owns the odd epochs, node 2 the even ones: two nodes promoting at the
// same time (split heartbeats, a handover racing a reclaim) never share an
// epoch, so "the higher epoch wins" always leaves exactly one of them.
func (m *Machine) nextEpoch() uint64 {
	e := m.epoch
	if m.peer.Epoch > e {
		e = m.peer.Epoch
	}
	e++
	if ownerOf(e) != m.cfg.NodeID {
		e++
	}
	return e
}

func (m *Machine) emit(a Action) { m.out = append(m.out, a) }

func (m *Machine) notice(f string, a ...any) { m.tally(TallyNone, f, a...) }

// tally emits a notice the daemon's counters count as t.
func (m *Machine) tally(t Tally, f string, a ...any) {
	m.emit(Action{Kind: ActNotice, Text: fmt.Sprintf(f, a...), Tally: t})
}

// Alarms are of two kinds.
//
// A condition alarm stands while its condition holds; the machine clears it
// when the condition ends, and the operator cannot (the table below says
// when it clears).
//
// An event alarm records something that happened and that time does not
// undo: a switchover that failed, a promotion forced over stale data, an
// action that failed, a VIP conflict seen. It stands until the operator
// acknowledges it (AdminAckAlarm) or the daemon restarts, and it is raised
// again if the event recurs. An acknowledgement only says "seen": it
// changes nothing else.
var conditionAlarms = map[string]string{
	"outdated":        "this node has caught up with the active (or promotes by force)",
	"maintenance":     "maintenance mode is turned off",
	"path-down:":      "the heartbeat path carries the peer's heartbeats again",
	"lan-down":        "the data LAN is up and a gateway answers",
	"peer-lost":       "the peer is heard again",
	"no-failover":     "this node promotes or the peer is heard again",
	"split-heartbeat": "the peer is heard again",
}

// eventAlarms lists every event alarm the machine raises (ids ending in
// ':' are prefixes). TestEveryAlarmHasAKind holds the two tables to the
// ids raised in this file.
var eventAlarms = []string{
	"forced", "switchover-failed", "handover-refused", "vip-conflict", "same-epoch",
	"persist-failed", "takeover-failed", "release-failed", "action-failed:",
}

// conditionAlarm says when the condition alarm id clears ("" for an event
// alarm or an id this package does not raise).
func conditionAlarm(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		id = id[:i+1]
	}
	return conditionAlarms[id]
}

// AlarmLatched reports whether id is an event alarm of this package: one
// that stands until the operator acknowledges it.
func AlarmLatched(id string) bool {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		id = id[:i+1]
	}
	return slices.Contains(eventAlarms, id)
}

func (m *Machine) raise(id, text string) {
	if m.alarms[id] == text {
		return
	}
	m.alarms[id] = text
	m.emit(Action{Kind: ActRaiseAlarm, Alarm: id, Text: text})
}

func (m *Machine) clear(id string) {
	if _, ok := m.alarms[id]; !ok {
		return
	}
	delete(m.alarms, id)
	m.emit(Action{Kind: ActClearAlarm, Alarm: id})
}

func (m *Machine) persisted() Persisted {
	r := m.role
	if r != RoleActive {
		r = RolePassive
	}
	return Persisted{Epoch: m.epoch, Role: r, Maintenance: m.maint, MaintGen: m.maintGen, Outdated: m.outdated}
}

func (m *Machine) persist() { m.emit(Action{Kind: ActPersist, State: m.persisted()}) }

func (m *Machine) ready() Ready {
	r := Ready{Actions: m.out, Advert: m.Advert(), Wake: m.wake(), Stopped: m.stopped}
	m.out = nil
	return r
}

// Advert is what the heartbeats carry now.
func (m *Machine) Advert() Advert {
	return Advert{
		Node: m.cfg.NodeID, Epoch: m.epoch, Role: m.role, LSN: m.lsn,
		Maintenance: m.maint, MaintGen: m.maintGen, Outdated: m.outdated || m.repl == ReplInconsistent || m.repl == ReplOutdated,
		LANUp: m.lanHealthy(), HearPeer: m.peerSeen && !m.forcedSilent && m.silentFor() < m.t.SuspectAfter,
		Handover: m.handover, WantActive: m.asking, Refused: m.role == RoleActive && m.answer == answerRefused,
		Degraded: m.now.Before(m.degraded), DataKnown: m.lsnKnown, NoFollow: m.replFailed,
	}
}

func (m *Machine) lanHealthy() bool { return m.lanUp && m.gwLast != no }

// silentFor is how long nothing was heard from the peer (since boot if never).
func (m *Machine) silentFor() time.Duration {
	if !m.peerSeen {
		return m.now.Sub(m.boot)
	}
	return m.now.Sub(m.lastHeard)
}

// leaseSilent is what the active's lease counts: the time since a heartbeat
// from a peer that also heard us. Under one-way loss the peer still reaches us
// but has stopped hearing us and may promote: the lease must not be renewed
// by its heartbeats then, only by the tie-breaker.
func (m *Machine) leaseSilent() time.Duration {
	if m.role != RoleActive {
		return m.silentFor()
	}
	return m.now.Sub(m.lastMutual)
}

func (m *Machine) peerAlive() bool {
	return m.peerSeen && !m.forcedSilent && m.silentFor() < m.t.DeadAfter
}

func (m *Machine) peerDead() bool {
	return m.forcedSilent || m.silentFor() >= m.t.DeadAfter
}

// tieBreakerOK: a probe started after the silence began found the gateway (and
// the witness granted, if configured) and, for a passive, nobody answering for
// the VIP.
func (m *Machine) tieBreakerOK() bool {
	if m.freshFrom == 0 || m.gwFresh != yes {
		return false
	}
	if m.role != RoleActive && m.vipHeld {
		return false
	}
	return !m.cfg.Witness || m.witFresh == yes
}

// Step feeds one event at time now.
func (m *Machine) Step(now time.Time, ev Event) (Ready, error) {
	if m.stopped {
		return Ready{}, fmt.Errorf("%w: %v", ErrStopped, ev)
	}
	if now.Before(m.now) {
		return Ready{}, fmt.Errorf("%w: %v: now %v is before the last step's %v", ErrTimeBackwards, ev, now, m.now)
	}
	m.now = now
	if err := m.step(ev); err != nil {
		m.out = nil
		return Ready{}, err
	}
	m.evaluate()
	return m.ready(), nil
}

// Tick lets time pass. A time earlier than the last step's is taken as no time
// passing (the daemon's clock is monotonic; this is only a guard).
func (m *Machine) Tick(now time.Time) Ready {
	if m.stopped {
		return Ready{Advert: m.Advert(), Stopped: true}
	}
	if now.After(m.now) {
		m.now = now
	}
	m.evaluate()
	return m.ready()
}

func (m *Machine) step(ev Event) error {
	switch e := ev.(type) {
	case nil:
		return fmt.Errorf("%w: nil event", ErrBadEvent)
	case PeerAlive:
		return m.onPeer(e)
	case PeerSilent:
		m.forcedSilent = true
	case PathDown:
		if e.Path == "" {
			return fmt.Errorf("%w: path-down: empty path name", ErrBadEvent)
		}
		if !m.pathsDown[e.Path] {
			m.pathsDown[e.Path] = true
			ctx := "the peer is still heard on the others"
			if m.forcedSilent {
				// The detector reports every path of a silent peer too.
				ctx = "the peer is silent on every path"
			}
			m.raise("path-down:"+e.Path, fmt.Sprintf("heartbeat path %s lost (%s)", e.Path, ctx))
		}
	case PathUp:
		if e.Path == "" {
			return fmt.Errorf("%w: path-up: empty path name", ErrBadEvent)
		}
		delete(m.pathsDown, e.Path)
		m.clear("path-down:" + e.Path)
	case GatewayProbe:
		if e.Seq == 0 || e.Seq > m.seq {
			return fmt.Errorf("%w: gateway-probe: seq %d was never issued (last %d)", ErrBadEvent, e.Seq, m.seq)
		}
		m.onProbe(e.Seq, e.Reachable, e.VIPHeld)
	case WitnessReply:
		if e.Seq == 0 || e.Seq > m.seq {
			return fmt.Errorf("%w: witness-reply: seq %d was never issued (last %d)", ErrBadEvent, e.Seq, m.seq)
		}
		if m.freshFrom != 0 && e.Seq >= m.freshFrom {
			m.witFresh = no
			if e.OK {
				m.witFresh = yes
			}
		}
	case LANLink:
		if e.Up && !m.lanUp {
			// The gateway answer from while the link was down is void: ask again.
			m.gwLast, m.lastProbe, m.lanUpSeq = unknown, time.Time{}, m.seq
		}
		m.lanUp = e.Up
	case Replication:
		return m.onRepl(e)
	case Admin:
		return m.onAdmin(e)
	case VIPConflict:
		if m.role == RoleActive && m.leaseSilent() >= m.t.SuspectAfter && m.cfg.NodeID == 2 {
			// Probably the peer, promoted in the instant between our claim and
			// its last ARP probe, and we cannot hear each other to compare
			// epochs. One of us must go: node 1 keeps the role, by rule.
			m.raise("vip-conflict", fmt.Sprintf("%s answers for the VIP while the peer is silent", e.MAC))
			m.demote("VIP conflict with the peer silent: node 1 keeps the role", true)
			m.retryAfter = m.now.Add(m.t.DeadAfter)
			return nil
		}
		if m.role == RoleActive {
			m.raise("vip-conflict", fmt.Sprintf("%s answers for the VIP while this node holds it", e.MAC))
			m.emit(Action{Kind: ActReannounceVIP})
		} else {
			m.raise("vip-conflict", fmt.Sprintf("%s answers for the VIP", e.MAC))
		}
	case ClockJump:
		m.onJump(e.Delta)
	case RuntimePaused:
		m.onPaused()
	case ActionFailed:
		return m.onFailed(e)
	case Stop:
		m.onStop()
	default:
		return fmt.Errorf("%w: unknown event %T", ErrBadEvent, ev)
	}
	return nil
}

func (m *Machine) onPeer(e PeerAlive) error {
	a := e.Advert
	if a.Node != 1 && a.Node != 2 {
		return fmt.Errorf("%w: peer-alive: node %d: want 1 or 2", ErrBadEvent, a.Node)
	}
	if a.Node == m.cfg.NodeID {
		return fmt.Errorf("%w: peer-alive: advert from node %d, which is this node (both configured with the same id?)", ErrBadEvent, a.Node)
	}
	if a.Role > RoleStopped {
		return fmt.Errorf("%w: peer-alive: role %d", ErrBadEvent, a.Role)
	}
	first := !m.peerSeen
	if m.wasSilent || first {
		m.notice("peer heard (%s)", a)
	}
	m.peerSeen, m.lastHeard, m.forcedSilent, m.wasSilent = true, m.now, false, false
	if a.HearPeer || m.role != RoleActive {
		if a.HearPeer {
			m.lastMutual = m.now
		}
		// The silence is over: a later one needs new tie-breaker answers.
		m.freshFrom, m.gwFresh, m.witFresh, m.vipHeld = 0, unknown, unknown, false
	}
	m.splitNotified = false
	m.clear("split-heartbeat")
	if !first && e.Seq <= m.peerSeq {
		return nil // reordered across paths: liveness only
	}
	m.peerSeq = e.Seq
	if a.LANUp && !m.peer.LANUp || first {
		m.peerLANSince = m.now
	}
	prev := m.peer
	m.peer = a

	// Maintenance is pair-wide: the higher generation wins; two changes from
	// the same generation resolve to "on" (the conservative side).
	switch {
	case a.MaintGen > m.maintGen:
		m.maintGen = a.MaintGen
		m.setMaint(a.Maintenance, "the peer's maintenance flag", true)
	case a.MaintGen == m.maintGen && a.Maintenance && !m.maint:
		m.maintGen++
		m.setMaint(true, "concurrent change on the peer", true)
	}
	// I5: our stream is down while the active's LSN passes ours (HA links cut,
	// the LAN heartbeat alive, the active committing alone): we are outdated
	// and must not promote on its loss.
	if m.role != RoleActive && a.Role == RoleActive && m.lsnKnown && m.repl == ReplDisconnected &&
		a.LSN > m.lsn && !m.outdated {
		m.outdated = true
		m.persist()
		m.raise("outdated", fmt.Sprintf("the active committed past this node (LSN %d > %d) with the stream down: it will not promote automatically", a.LSN, m.lsn))
	}
	// I1: a higher epoch from an active peer (or one handing over) ends our term
	// at once. A passive's higher epoch is only remembered: it may come from a
	// fenced term, and dropping a healthy active for it helps nobody.
	if a.Role == RoleActive && a.Epoch > m.epoch {
		m.epoch = a.Epoch
		m.handover = false
		if m.role == RoleActive {
			m.demote(fmt.Sprintf("peer is active in higher epoch %d", a.Epoch), false)
		} else {
			m.persist()
		}
	}
	if a.Role == RoleActive && m.role == RoleActive && a.Epoch < m.epoch && (prev.Role != RoleActive || prev.Epoch != a.Epoch) {
		// The peer will demote when it hears us; a second owner may have
		// answered ARP meanwhile.
		m.emit(Action{Kind: ActReannounceVIP})
		m.notice("peer is active in lower epoch %d: it must demote", a.Epoch)
	}
	if a.Role == RoleActive && m.role == RoleActive && a.Epoch == m.epoch {
		// Impossible with owned epochs; stay safe: the owner of the epoch keeps it.
		m.raise("same-epoch", fmt.Sprintf("both nodes active in epoch %d", a.Epoch))
		if ownerOf(m.epoch) != m.cfg.NodeID {
			m.demote("both active in one epoch: not its owner", false)
		}
	}
	return nil
}

func (m *Machine) setMaint(on bool, why string, force bool) {
	if m.maint == on && !force {
		return
	}
	changed := m.maint != on
	m.maint = on
	m.persist()
	if !changed {
		return
	}
	if on {
		m.raise("maintenance", "maintenance mode: no automatic failover")
	} else {
		m.clear("maintenance")
	}
	m.notice("maintenance %t (%s)", on, why)
}

func (m *Machine) onProbe(seq uint64, reachable, held bool) {
	if seq == m.seq {
		m.probeOut = false
	}
	if seq > m.lanUpSeq {
		m.gwLast = no
		if reachable {
			m.gwLast = yes
		}
	}
	if m.freshFrom != 0 && seq >= m.freshFrom {
		m.gwFresh, m.vipHeld = m.gwLast, held
	}
}

func (m *Machine) onRepl(e Replication) error {
	if e.State > ReplInconsistent {
		return fmt.Errorf("%w: replication: state %d", ErrBadEvent, e.State)
	}
	if e.LSN > m.lsn && m.role != RoleActive && m.lsnKnown {
		m.lsnGrew = m.now
	}
	m.repl, m.lsn, m.peerSync, m.peerAll, m.lsnKnown, m.replFailed = e.State, e.LSN, e.PeerInSync, e.PeerAckedAll, true, e.Failed
	switch e.State {
	case ReplOutdated, ReplInconsistent:
		if !m.outdated {
			m.outdated = true
			m.persist()
			m.raise("outdated", fmt.Sprintf("this node's data is %s: it will not promote automatically", e.State))
		}
	case ReplInSync:
		if m.outdated {
			m.outdated = false
			m.persist()
			m.clear("outdated")
		}
	}
	if m.ho == hoDraining && e.PeerAckedAll {
		m.handOver()
	}
	return nil
}

func (m *Machine) onAdmin(e Admin) error {
	switch e.Cmd {
	case AdminMaintenanceOn, AdminMaintenanceOff:
		on := e.Cmd == AdminMaintenanceOn
		if on != m.maint {
			if m.peer.MaintGen > m.maintGen {
				m.maintGen = m.peer.MaintGen
			}
			m.maintGen++
			m.setMaint(on, "operator", false)
		}
	case AdminSwitchover:
		if m.role == RolePassive {
			if why := m.requestBlocked(); why != "" {
				return fmt.Errorf("%w: switchover: %s", ErrRefused, why)
			}
			m.asking, m.askAt = true, m.now
			m.notice("switchover requested: asking the active peer to hand over")
			return nil
		}
		if m.role != RoleActive {
			return fmt.Errorf("%w: switchover: this node is %s, neither active nor passive", ErrRefused, m.role)
		}
		if why := m.switchoverBlocked(); why != "" {
			return fmt.Errorf("%w: switchover: %s", ErrRefused, why)
		}
		why := "operator switchover"
		if e.Why != "" {
			why = e.Why
		}
		m.startSwitchover(why, false)
	case AdminForcePromote:
		if !e.AckDataLoss {
			return fmt.Errorf("%w (admin force-promote)", ErrNeedAck)
		}
		if m.role == RoleActive {
			return fmt.Errorf("%w: force-promote: already active", ErrRefused)
		}
		if m.peerAlive() && m.peer.Role == RoleActive {
			return fmt.Errorf("%w: force-promote: the peer is alive and active in epoch %d (switch over instead)", ErrRefused, m.peer.Epoch)
		}
		if m.stopping || m.role == RoleStopping {
			return fmt.Errorf("%w: force-promote: stopping", ErrRefused)
		}
		loss := "unknown"
		if m.peerSeen && m.peer.LSN > m.lsn {
			loss = fmt.Sprintf("at least %d commits (peer LSN %d, local %d)", m.peer.LSN-m.lsn, m.peer.LSN, m.lsn)
		} else if !m.outdated && m.repl != ReplInconsistent {
			loss = "none known"
		}
		m.raise("forced", "promoted by force over data that may be stale: loss "+loss)
		m.promote("operator force-promote (data loss acknowledged: "+loss+")", true)
	case AdminAckAlarm:
		if e.Alarm == "" {
			return fmt.Errorf("%w: ack-alarm: no alarm id", ErrBadEvent)
		}
		if _, ok := m.alarms[e.Alarm]; !ok {
			return fmt.Errorf("%w: ack-alarm: %q is not raised on this node", ErrNoSuchAlarm, e.Alarm)
		}
		if !AlarmLatched(e.Alarm) {
			return fmt.Errorf("%w: ack-alarm: %q stands while its condition holds and clears when %s", ErrRefused, e.Alarm, conditionAlarm(e.Alarm))
		}
		m.clear(e.Alarm)
	default:
		return fmt.Errorf("%w: admin: unknown command %d", ErrBadEvent, e.Cmd)
	}
	return nil
}

// switchoverBlocked says why the peer cannot take over now ("" if it can).
func (m *Machine) switchoverBlocked() string {
	switch {
	case m.ho != hoNone:
		return "a switchover is already in progress"
	case !m.peerAlive():
		return "the peer is not heard"
	case m.peer.Role != RolePassive:
		return fmt.Sprintf("the peer is %s", m.peer.Role)
	case m.peer.Outdated:
		return "the peer's data is outdated (I5)"
	case !m.peerSync:
		return "the peer is not in sync"
	}
	return ""
}

// requestBlocked says why this passive node cannot ask the active peer to
// hand over now ("" if it can): the same conditions as switchoverBlocked,
// seen from this side.
func (m *Machine) requestBlocked() string {
	switch {
	case m.stopping:
		return "this node is stopping"
	case m.asking:
		return fmt.Sprintf("a switchover was already requested %v ago", m.now.Sub(m.askAt))
	case m.handover:
		return "this node is handing over to the peer"
	case !m.peerAlive():
		return "the peer is not heard"
	case m.peer.Role != RoleActive:
		return fmt.Sprintf("the peer is %s, not active", m.peer.Role)
	case m.peer.Refused:
		return "the peer still shows its refusal of the last request (a moment)"
	case m.outdated || m.repl == ReplInconsistent || m.repl == ReplOutdated:
		return "this node's data is stale (I5)"
	case m.repl != ReplInSync:
		return fmt.Sprintf("this node is not in sync (%s)", m.repl)
	}
	return ""
}

// checkRequest withdraws this passive node's request for a switchover when
// it can no longer be served. Promotion withdraws a served one.
func (m *Machine) checkRequest() {
	if !m.asking {
		return
	}
	why := ""
	switch {
	case m.stopping:
		why = "this node is stopping"
	case m.now.Sub(m.askAt) >= m.t.SwitchoverTimeout:
		why = fmt.Sprintf("the peer did not hand over within %v (see its alarms; a tandemd that predates the request ignores it)", m.t.SwitchoverTimeout)
	case m.peer.Handover:
		return // served: the handover promotes this node
	case m.peer.Refused:
		why = "the active refused it (its switchover-failed alarm says why)"
	case !m.peerAlive():
		why = "the peer went silent"
	case m.peer.Role != RoleActive:
		why = fmt.Sprintf("the peer is %s, not active", m.peer.Role)
	case m.outdated || m.repl != ReplInSync:
		why = fmt.Sprintf("this node fell out of sync (%s)", m.repl)
	default:
		return
	}
	m.asking = false
	m.raise("switchover-failed", "switchover request withdrawn: "+why)
}

// answerRequest: the active answers the passive peer's request for a
// switchover (Advert.WantActive) once; the peer withdraws it when it
// promotes or gives up. The request may come before this node sees what
// the peer sees (the peer in sync a few ms after a handover, say): it is
// started as soon as switchoverBlocked allows, and refused only when it
// still does not after askGrace.
func (m *Machine) answerRequest() {
	if !m.peer.WantActive || !m.peerAlive() {
		m.answer = answerNone
		return
	}
	switch m.answer {
	case answerStarted, answerRefused:
		return
	case answerNone:
		m.answer, m.askSeenAt = answerPending, m.now
	}
	why := m.switchoverBlocked()
	switch {
	case why == "":
		m.answer = answerStarted
		m.startSwitchover("requested on the peer", false)
	case m.now.Sub(m.askSeenAt) >= m.askGrace():
		m.answer = answerRefused
		m.raise("switchover-failed", fmt.Sprintf("the peer asked for a switchover, refused after %v: %s", m.askGrace(), why))
	}
}

// askGrace is how long the active waits for a requested switchover to be
// possible: half the time the peer keeps asking.
func (m *Machine) askGrace() time.Duration { return m.t.SwitchoverTimeout / 2 }

func (m *Machine) startSwitchover(why string, stop bool) {
	m.ho, m.hoAt, m.hoReason, m.stopAfterHO = hoPausing, m.now, why, stop
	m.notice("switchover started: %s", why)
	m.emit(Action{Kind: ActStopRuntime, Graceful: true})
}

func (m *Machine) onPaused() {
	switch {
	case m.ho == hoPausing:
		// A report from before the pause says nothing about the last commits:
		// ask for a new one.
		m.ho, m.peerAll = hoDraining, false
		m.emit(Action{Kind: ActAwaitPeerAck})
	case m.stopping:
		m.emit(Action{Kind: ActReleaseVIP})
		m.role = RolePassive
		m.persist()
		m.finishStop()
	}
}

// handOver: the runtime is paused and the peer has every commit. Release the
// VIP, become passive and tell the peer to promote now.
func (m *Machine) handOver() {
	m.ho = hoNone
	m.emit(Action{Kind: ActReleaseVIP})
	if m.cfg.Watchdog {
		m.emit(Action{Kind: ActDisarmWatchdog})
	}
	m.role = RolePassive
	m.persist()
	m.emit(Action{Kind: ActSetReplication, Epoch: m.epoch})
	m.handover, m.handoverAt = true, m.now
	m.reason = "handed over: " + m.hoReason
	m.tally(TallyHandover, "handing over to the peer (%s)", m.hoReason)
	if m.stopAfterHO {
		m.finishStop()
	}
}

func (m *Machine) abortSwitchover(why string) {
	m.notice("switchover aborted: %s", why)
	m.raise("switchover-failed", "switchover aborted: "+why)
	m.ho = hoNone
	if m.stopAfterHO {
		m.stopAfterHO = false
		m.stopping = true
		m.role = RoleStopping
		m.emit(Action{Kind: ActStopRuntime, Graceful: true})
		return
	}
	m.emit(Action{Kind: ActStartRuntime})
}

func (m *Machine) onJump(d time.Duration) {
	// Every answer is stale: the peer may have promoted while we were frozen.
	m.freshFrom, m.gwFresh, m.witFresh = 0, unknown, unknown
	m.probeOut = false // its answer, if any, is as stale; not a timeout
	if d < 0 {
		m.notice("clock stepped back by %v: timers use monotonic time, no effect", -d)
		return
	}
	m.notice("clock jumped forward by %v", d)
	// The socket buffers hold heartbeats from the whole freeze, oldest first:
	// decide nothing on the peer's view until the newest have arrived.
	m.holdUntil = m.now.Add(2 * m.t.Interval)
	if m.role == RoleActive && d >= m.t.FenceAfter {
		// Frozen for longer than our lease: the peer may be active now. Step
		// down before acting again; the election takes the role back at once if
		// the peer did not.
		m.demote(fmt.Sprintf("frozen for %v (longer than fence-after)", d), true)
	}
}

func (m *Machine) onFailed(e ActionFailed) error {
	if _, ok := actionNames[e.Kind]; !ok {
		return fmt.Errorf(errUnknownKindFmt, ErrBadEvent, "action-failed", e.Kind)
	}
	switch e.Kind {
	case ActPersist:
		m.raise("persist-failed", fmt.Sprintf("cannot persist the pair state: %v", e.Err))
		switch m.role {
		case RoleActive:
			// The actions after the persist never ran: nothing outward happened.
			m.role = RolePassive
			m.retryAfter = m.now.Add(m.t.DeadAfter)
			m.reason = "promotion failed: persist"
		case RolePassive:
			// A demotion's or a handover's persist (the VIP is already
			// released): the store's demotion after it never ran. The
			// role is not safety state (a node that boots from "active"
			// starts passive, and epochs fence), so the demotion goes on:
			// a disk that hangs must not keep the store primary, nor hold
			// the handover the advert now announces.
			m.emit(Action{Kind: ActSetReplication, Epoch: m.epoch})
		}
	case ActSetReplication, ActClaimVIP, ActStartRuntime:
		m.raise("takeover-failed", fmt.Sprintf("%s failed: %v", e.Kind, e.Err))
		if m.role == RoleActive {
			m.degraded = m.now.Add(m.t.HealthCooldown)
			m.retryAfter = m.now.Add(m.t.DeadAfter)
			m.demote(fmt.Sprintf("%s failed", e.Kind), true)
		}
	case ActReleaseVIP:
		m.raise("release-failed", fmt.Sprintf("cannot release the VIP: %v (the peer may find it held)", e.Err))
	default:
		m.raise("action-failed:"+e.Kind.String(), fmt.Sprintf("%s failed: %v", e.Kind, e.Err))
	}
	return nil
}

func (m *Machine) onStop() {
	if m.stopping || m.stopAfterHO {
		return
	}
	m.reason = "orderly stop"
	switch {
	case m.role == RoleActive && m.ho == hoNone && m.switchoverBlocked() == "":
		m.startSwitchover("orderly stop", true)
	case m.role == RoleActive && m.ho != hoNone:
		m.stopAfterHO = true
	case m.role == RoleActive:
		m.stopping, m.role = true, RoleStopping
		m.notice("stopping without handover: %s", m.switchoverBlocked())
		m.emit(Action{Kind: ActStopRuntime, Graceful: true})
	default:
		m.finishStop()
	}
}

func (m *Machine) finishStop() {
	if m.cfg.Watchdog {
		m.emit(Action{Kind: ActDisarmWatchdog})
	}
	m.role = RoleStopped
	m.stopped = true
	m.asking = false
	m.notice("stopped")
}

// promote takes the role: persist the new epoch, then replication, VIP, runtime (I1, I3).
func (m *Machine) promote(why string, force bool) { m.promoteWith(why, force, false) }

// promoteWith is promote; peerFollows says the peer is alive and follows
// as passive (ActSetReplication.PeerFollows).
func (m *Machine) promoteWith(why string, force, peerFollows bool) {
	m.epoch = m.nextEpoch()
	m.role = RoleActive
	m.becameActive = m.now
	// The lease starts now: the peer hears us (election, handover) or the
	// tie-breaker just confirmed us (silence).
	m.lastMutual = m.now
	m.handover = false
	m.asking, m.answer = false, answerNone
	m.reason = why
	m.clear("no-failover")
	m.persist()
	m.emit(Action{Kind: ActSetReplication, Primary: true, Epoch: m.epoch, Force: force, PeerFollows: peerFollows})
	m.emit(Action{Kind: ActClaimVIP})
	if m.cfg.Watchdog {
		m.emit(Action{Kind: ActKickWatchdog})
		m.lastKick = m.now
	}
	m.emit(Action{Kind: ActStartRuntime})
	m.notice("active in epoch %d: %s", m.epoch, why)
}

// demote leaves the role: runtime, VIP, then persist (I3).
func (m *Machine) demote(why string, fence bool) {
	m.emit(Action{Kind: ActStopRuntime})
	m.emit(Action{Kind: ActReleaseVIP})
	if m.cfg.Watchdog {
		m.emit(Action{Kind: ActDisarmWatchdog})
	}
	m.role = RolePassive
	m.ho = hoNone
	m.reason = why
	m.persist()
	m.emit(Action{Kind: ActSetReplication, Epoch: m.epoch})
	if fence {
		m.tally(TallyFence, "self-fenced: %s", why)
	} else {
		m.notice("demoted: %s", why)
	}
	if m.stopAfterHO {
		// An orderly stop waited for a handover that this demotion cut
		// short: it is passive now, so the stop ends here (onStop ignores
		// a second one while stopAfterHO is set).
		m.stopAfterHO = false
		m.finishStop()
	}
}

// probe starts a tie-breaker probe (and a witness query when configured).
func (m *Machine) probe(forSilence bool) {
	m.seq++
	m.probeOut, m.probeAt, m.lastProbe = true, m.now, m.now
	if forSilence && m.freshFrom == 0 {
		m.freshFrom = m.seq
	}
	m.emit(Action{Kind: ActProbeGateway, Seq: m.seq})
	if forSilence && m.cfg.Witness {
		e := m.epoch
		if m.role != RoleActive {
			e = m.nextEpoch()
		}
		m.emit(Action{Kind: ActQueryWitness, Seq: m.seq, Epoch: e})
	}
}

// evaluate applies the time-driven rules of the current role.
func (m *Machine) evaluate() {
	if m.stopped {
		return
	}
	// A probe the daemon did not answer in time counts as unreachable.
	if m.probeOut && m.now.Sub(m.probeAt) >= m.t.ProbeTimeout {
		m.onProbe(m.seq, false, false)
	}
	suspect := m.forcedSilent || m.leaseSilent() >= m.t.SuspectAfter
	if suspect && !m.wasSilent && m.peerSeen && m.peerDead() {
		m.wasSilent = true
		m.notice("peer silent for %v", m.silentFor())
	}
	if !m.probeOut {
		switch {
		case suspect && (m.freshFrom == 0 || m.now.Sub(m.lastProbe) >= m.t.ProbeTimeout/2):
			// During a silence keep asking: the active renews its lease (and the
			// witness grant), the passive notices when the VIP stops answering.
			m.probe(true)
		case m.now.Sub(m.lastProbe) >= m.t.ProbeEvery || m.lastProbe.IsZero():
			m.probe(false)
		}
	}
	if m.lanHealthy() {
		m.lanDownAt = time.Time{}
		m.clear("lan-down")
	} else if m.lanDownAt.IsZero() {
		m.lanDownAt = m.now
		m.raise("lan-down", "data LAN down or no gateway reachable")
	}

	if m.role == RoleStarting {
		switch {
		case m.peerSeen:
			m.role = RolePassive
			m.reason = "peer seen at startup"
		case m.now.Sub(m.boot) >= m.t.StartupWait:
			m.role = RolePassive
			m.reason = "startup-wait expired without the peer"
			m.notice("startup-wait (%v) expired, the peer was never seen", m.t.StartupWait)
		default:
			return
		}
	}
	switch m.role {
	case RoleActive:
		m.evalActive()
	case RolePassive:
		m.evalPassive()
	}
}

func (m *Machine) evalActive() {
	lease := (!m.forcedSilent && m.leaseSilent() < m.t.FenceAfter) || m.tieBreakerOK()
	if !lease {
		m.demote(fmt.Sprintf("peer silent (or not hearing us) for %v and the tie-breaker does not confirm this node", m.leaseSilent()), true)
		return
	}
	if m.cfg.Watchdog && m.now.Sub(m.lastKick) >= m.t.Interval {
		m.emit(Action{Kind: ActKickWatchdog})
		m.lastKick = m.now
	}
	if m.ho != hoNone {
		switch {
		case !m.peerAlive():
			m.abortSwitchover("the peer went silent")
		case m.now.Sub(m.hoAt) >= m.t.SwitchoverTimeout:
			m.abortSwitchover(fmt.Sprintf("not done within %v", m.t.SwitchoverTimeout))
		case !m.peerSync:
			m.abortSwitchover("the peer is no longer in sync")
		case m.peer.Outdated || m.peer.Role != RolePassive:
			m.abortSwitchover(fmt.Sprintf("the peer is %s outdated=%t", m.peer.Role, m.peer.Outdated))
		}
		return
	}
	m.answerRequest()
	if m.ho != hoNone {
		return
	}
	if m.peerAlive() {
		m.clear("peer-lost")
	} else {
		m.raise("peer-lost", "peer silent; active alone (tie-breaker confirmed)")
	}
	// Health failover: our LAN has been down for health-hold, the peer's up for
	// as long, and neither of us took the role within health-cooldown.
	if m.cfg.HealthFailover && !m.maint && !m.lanDownAt.IsZero() &&
		m.now.Sub(m.lanDownAt) >= m.t.HealthHold &&
		m.now.Sub(m.becameActive) >= m.t.HealthCooldown &&
		m.peerAlive() && m.peer.LANUp && m.now.Sub(m.peerLANSince) >= m.t.HealthHold &&
		m.switchoverBlocked() == "" {
		m.startSwitchover("health: this node lost its data LAN, the peer has it", false)
	}
}

func (m *Machine) evalPassive() {
	m.checkRequest()
	if m.stopping {
		return
	}
	// Degraded (a failed takeover) only lowers the rank in an election: with the
	// peer gone this node is still the only candidate, and retries after retryAfter.
	if m.now.Before(m.holdUntil) {
		return
	}
	auto := !m.maint && !m.outdated && m.repl != ReplInconsistent && !m.now.Before(m.retryAfter)
	alive := m.peerAlive()
	switch {
	case alive && m.peer.Handover && m.peer.Role != RoleActive:
		if m.outdated || m.repl == ReplInconsistent {
			m.raise("handover-refused", "the peer hands over but this node's data is stale (I5)")
			return
		}
		// The old active follows as passive, and the store waits for
		// it, unless its store has failed (NoFollow).
		m.promoteWith("handover from the peer", false, !m.peer.NoFollow)
	case alive && m.peer.Role == RoleActive:
	case alive:
		// Both passive: the better-ranked node takes the role.
		if m.handover {
			if m.now.Sub(m.handoverAt) < m.t.SwitchoverTimeout {
				return
			}
			m.handover = false
			m.raise("switchover-failed", "the peer did not take the handover")
			if !m.maint {
				m.promote("the peer did not take the handover", false)
				return
			}
		}
		// Only when the peer hears us too: under one-way loss it may be about
		// to promote on silence.
		// Nor while commits still stream in: then a primary is alive and the
		// peer's passive advert is merely older than its promotion.
		// And only on a fresh view: an advert older than suspect-after may
		// predate a cut after which the peer promotes on silence.
		if !auto || !m.peer.HearPeer || m.silentFor() >= m.t.SuspectAfter ||
			m.now.Sub(m.lsnGrew) < m.t.DeadAfter || !m.ranksFirst() {
			return
		}
		// The peer is alive and follows as passive: the store waits for
		// it rather than marking it Outdated at once, so that this node
		// dying right after the election leaves it promotable.
		m.promoteWith("both passive, this node ranks first", false, !m.peer.NoFollow)
	case m.peerDead():
		if m.handover && m.now.Sub(m.handoverAt) < m.t.DeadAfter {
			return
		}
		if !auto {
			if m.maint {
				m.raise("no-failover", "peer silent; maintenance mode blocks failover")
			} else if m.outdated || m.repl == ReplInconsistent {
				m.raise("no-failover", "peer silent; this node's data is stale, force-promote to take over (I5)")
			}
			return
		}
		if m.freshFrom != 0 && m.gwFresh == yes && m.vipHeld && !m.splitNotified {
			m.splitNotified = true
			m.raise("split-heartbeat", "peer silent on every path, but the VIP still answers on the LAN: not promoting")
		}
		if m.tieBreakerOK() {
			why := fmt.Sprintf("peer silent for %v, tie-breaker confirms", m.silentFor())
			if !m.peerSeen {
				why = "peer never seen within startup-wait, tie-breaker confirms"
			}
			m.clear("no-failover")
			m.promote(why, false)
		}
	}
}

// ranksFirst orders two passive nodes: eligible (not outdated, not degraded,
// LAN up, running), then more data, then the owner of the newest epoch (the
// last active), then the lower node id. Both nodes compute it from the same two
// adverts, so they agree.
func (m *Machine) ranksFirst() bool {
	me, p := m.Advert(), m.peer
	if !me.DataKnown || !p.DataKnown {
		return false // compare data, not a boot-time zero
	}
	el := func(a Advert) bool {
		return !a.Outdated && !a.Degraded && a.LANUp && (a.Role == RolePassive || a.Role == RoleStarting) && !a.Maintenance
	}
	if el(me) != el(p) {
		return el(me)
	}
	if !el(me) {
		return false
	}
	if me.LSN != p.LSN {
		return me.LSN > p.LSN
	}
	e := me.Epoch
	if p.Epoch > e {
		e = p.Epoch
	}
	if o := ownerOf(e); o != 0 {
		return o == me.Node
	}
	return me.Node < p.Node
}

// wake is the next time a rule may fire without an event.
func (m *Machine) wake() time.Time {
	if m.stopped {
		return time.Time{}
	}
	cands := []time.Time{m.now.Add(m.t.Interval)}
	add := func(t time.Time) {
		if t.After(m.now) {
			cands = append(cands, t)
		}
	}
	ref := m.lastHeard
	if !m.peerSeen {
		ref = m.boot
		add(m.boot.Add(m.t.StartupWait))
	}
	add(ref.Add(m.t.SuspectAfter))
	add(ref.Add(m.t.FenceAfter))
	add(ref.Add(m.t.DeadAfter))
	if m.probeOut {
		add(m.probeAt.Add(m.t.ProbeTimeout))
	}
	add(m.lastProbe.Add(m.t.ProbeEvery))
	if m.forcedSilent || m.leaseSilent() >= m.t.SuspectAfter {
		add(m.lastProbe.Add(m.t.ProbeTimeout / 2))
	}
	if m.role == RoleActive {
		add(m.lastMutual.Add(m.t.SuspectAfter))
		add(m.lastMutual.Add(m.t.FenceAfter))
	}
	if !m.lanDownAt.IsZero() {
		add(m.lanDownAt.Add(m.t.HealthHold))
	}
	add(m.retryAfter)
	add(m.holdUntil)
	add(m.lsnGrew.Add(m.t.DeadAfter))
	add(m.degraded)
	if m.handover {
		add(m.handoverAt.Add(m.t.DeadAfter))
		add(m.handoverAt.Add(m.t.SwitchoverTimeout))
	}
	if m.ho != hoNone {
		add(m.hoAt.Add(m.t.SwitchoverTimeout))
	}
	if m.asking {
		add(m.askAt.Add(m.t.SwitchoverTimeout))
	}
	if m.answer == answerPending {
		add(m.askSeenAt.Add(m.askGrace()))
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].Before(cands[j]) })
	return cands[0]
}

// Status reports the machine's state.
func (m *Machine) Status() Status {
	s := Status{
		Role: m.role, Epoch: m.epoch, Maintenance: m.maint, Outdated: m.outdated,
		PeerAlive: m.peerAlive(), Peer: m.peer, PeerSeen: m.peerSeen, LastHeard: m.lastHeard,
		Reason: m.reason, Alarms: map[string]string{}, SwitchoverRequested: m.asking,
	}
	switch m.role {
	case RoleActive:
		s.SwitchoverBlocked = m.switchoverBlocked()
	case RolePassive:
		s.SwitchoverBlocked = m.requestBlocked()
	default:
		s.SwitchoverBlocked = fmt.Sprintf("this node is %s, neither active nor passive", m.role)
	}
	for k, v := range m.alarms {
		s.Alarms[k] = v
	}
	switch m.role {
	case RoleActive:
		switch {
		case m.ho != hoNone:
			s.Substate, s.SubReason = "handing-over", "handing over to the peer: "+m.hoReason
		case m.peerAlive():
			s.Substate, s.SubReason = "paired", "the peer is heard"
		default:
			s.Substate, s.SubReason = "alone", "the peer is not heard"
		}
	case RolePassive, RoleStarting:
		switch {
		case m.repl == ReplInconsistent:
			s.Substate, s.SubReason = "inconsistent", "the WIP store is inconsistent until a snapshot from the active completes"
		case m.outdated || m.repl == ReplOutdated:
			s.Substate, s.SubReason = "outdated", "the WIP store misses commits the active acknowledged without it"
		case m.repl == ReplInSync:
			s.Substate, s.SubReason = "in-sync", "the WIP store holds every commit the active acknowledged"
		default:
			s.Substate, s.SubReason = "syncing", "the WIP store is not in sync with the active (connecting or catching up)"
		}
	}
	return s
}
