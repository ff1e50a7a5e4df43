package pair

import (
	"fmt"
	"strings"
	"time"
)

// Role is what a node is doing for the pair.
type Role uint8

// Roles. The numeric values are carried in the heartbeat's role field.
const (
	RoleStarting Role = iota
	RolePassive
	RoleActive
	RoleStopping
	RoleStopped
)

func (r Role) String() string {
	switch r {
	case RoleStarting:
		return "starting"
	case RolePassive:
		return "passive"
	case RoleActive:
		return "active"
	case RoleStopping:
		return "stopping"
	case RoleStopped:
		return "stopped"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// ReplState is the local replica's state as the wip package reports it.
type ReplState uint8

// Replication states.
const (
	ReplDisconnected ReplState = iota // no stream (yet)
	ReplCatchingUp                    // connected, behind
	ReplInSync                        // connected, every commit applied
	ReplOutdated                      // missed commits while the peer ran alone (I5)
	ReplInconsistent                  // mid-snapshot (I5)
)

func (s ReplState) String() string {
	switch s {
	case ReplDisconnected:
		return "disconnected"
	case ReplCatchingUp:
		return "catching-up"
	case ReplInSync:
		return "in-sync"
	case ReplOutdated:
		return "outdated"
	case ReplInconsistent:
		return "inconsistent"
	}
	return fmt.Sprintf("repl(%d)", uint8(s))
}

// Persisted is the node's durable pair state. The daemon stores it on
// ActPersist before it carries out the actions that follow (I1, I3) and hands
// it back to New after a restart.
type Persisted struct {
	Epoch       uint64 // the highest epoch seen or owned
	Role        Role   // the role when last persisted (active or passive)
	Maintenance bool
	MaintGen    uint64 // generation of the maintenance flag: the higher one wins across the pair
	Outdated    bool   // this node missed commits: never promote automatically (I5)
}

func (p Persisted) String() string {
	return fmt.Sprintf("epoch=%d role=%s maint=%t/%d outdated=%t", p.Epoch, p.Role, p.Maintenance, p.MaintGen, p.Outdated)
}

// Advert is what this node's heartbeats carry now. The heartbeat package maps
// it onto its fields: epoch, role, LSN, and the flag bits.
type Advert struct {
	Node        uint8
	Epoch       uint64
	Role        Role
	LSN         uint64 // last durable LSN in the local store
	Maintenance bool
	MaintGen    uint64 // generation of Maintenance (higher wins)
	Outdated    bool   // I5: the sender holds stale or partial data
	LANUp       bool   // health: data LAN link up and the gateway reachable
	HearPeer    bool   // the sender hears the receiver
	Handover    bool   // the (former) active hands the role to the receiver
	WantActive  bool   // the (passive) sender asks the active receiver to hand over
	Refused     bool   // the (active) sender refused the receiver's standing WantActive
	Degraded    bool   // the sender failed to take the role recently: prefer the other
	DataKnown   bool   // the sender's store reported its LSN: elections wait for it
	// NoFollow: the sender's store has failed (Replication.Failed): it
	// cannot follow as passive, so a handover from it (or an election it
	// loses) is not waited for: the new active goes on alone at once.
	NoFollow bool
}

func (a Advert) String() string {
	var fl []string
	for _, f := range []struct {
		on   bool
		name string
	}{{a.Maintenance, "maint"}, {a.Outdated, "outdated"}, {!a.LANUp, "lan-down"}, {a.Handover, "handover"}, {a.WantActive, "want-active"}, {a.Refused, "refused"}, {a.Degraded, "degraded"}, {a.NoFollow, "no-follow"}} {
		if f.on {
			fl = append(fl, f.name)
		}
	}
	s := fmt.Sprintf("n%d e%d %s lsn=%d", a.Node, a.Epoch, a.Role, a.LSN)
	if len(fl) > 0 {
		s += " [" + strings.Join(fl, ",") + "]"
	}
	return s
}

// ActionKind names an action.
type ActionKind uint8

// Actions the daemon carries out, in the order given.
const (
	ActPersist        ActionKind = iota + 1 // make Action.State durable (fsync) before anything after it
	ActSetReplication                       // Primary/Epoch/Force: switch the wip store's direction
	ActClaimVIP                             // claim the VIP group and announce it
	ActReleaseVIP                           // delete the VIP group
	ActReannounceVIP                        // send the GARP/NA burst again (a second owner may have existed)
	ActStartRuntime                         // start listeners, resume jobs from WIP
	ActStopRuntime                          // Graceful: pause (seed 001) and report RuntimePaused; else stop at once
	ActAwaitPeerAck                         // report Replication{PeerAckedAll} once the peer acked every commit
	ActKickWatchdog                         // kick /dev/watchdog (only while the active's lease holds)
	ActDisarmWatchdog                       // magic close of /dev/watchdog
	ActProbeGateway                         // probe the gateways (and ARP the VIP); report GatewayProbe{Seq}
	ActQueryWitness                         // ask the witness for a grant at Epoch; report WitnessReply{Seq}
	ActRaiseAlarm                           // Alarm/Text
	ActClearAlarm                           // Alarm
	ActNotice                               // Text: a line for the operator's event log
)

var actionNames = map[ActionKind]string{
	ActPersist: "persist", ActSetReplication: "set-replication", ActClaimVIP: "claim-vip",
	ActReleaseVIP: "release-vip", ActReannounceVIP: "reannounce-vip", ActStartRuntime: "start-runtime",
	ActStopRuntime: "stop-runtime", ActAwaitPeerAck: "await-peer-ack", ActKickWatchdog: "kick-watchdog",
	ActDisarmWatchdog: "disarm-watchdog", ActProbeGateway: "probe-gateway", ActQueryWitness: "query-witness",
	ActRaiseAlarm: "raise-alarm", ActClearAlarm: "clear-alarm", ActNotice: "notice",
}

func (k ActionKind) String() string {
	if n, ok := actionNames[k]; ok {
		return n
	}
	return fmt.Sprintf("action(%d)", uint8(k))
}

// Action is one thing for the daemon to do. Only the fields of its Kind are set.
type Action struct {
	Kind    ActionKind
	State   Persisted // ActPersist
	Primary bool      // ActSetReplication
	Epoch   uint64    // ActSetReplication, ActQueryWitness
	Force   bool      // ActSetReplication: promoted over stale data (I5 override)
	// PeerFollows (ActSetReplication, primary): the peer is alive and
	// follows as passive (it handed the role over, or lost the election),
	// so the store waits for it rather than marking it Outdated at once
	// (wip.PeerFollows).
	PeerFollows bool
	Graceful    bool   // ActStopRuntime
	Seq         uint64 // ActProbeGateway, ActQueryWitness
	Alarm       string // ActRaiseAlarm, ActClearAlarm
	Text        string // ActRaiseAlarm, ActNotice
	Tally       Tally  // ActNotice: what the daemon's counters count it as
}

// Tally classifies a notice for the daemon's counters, so they never
// depend on the wording of the text.
type Tally uint8

const (
	TallyNone     Tally = iota
	TallyFence          // the active stepped down on its own (self-fence)
	TallyHandover       // the active handed over to the peer (switchover)
)

func (a Action) String() string {
	switch a.Kind {
	case ActPersist:
		return "persist " + a.State.String()
	case ActSetReplication:
		dir := "secondary"
		if a.Primary {
			dir = "primary"
		}
		s := fmt.Sprintf("set-replication %s epoch=%d", dir, a.Epoch)
		if a.Force {
			s += " force"
		}
		if a.PeerFollows {
			s += " peer-follows"
		}
		return s
	case ActStopRuntime:
		if a.Graceful {
			return "stop-runtime graceful"
		}
		return "stop-runtime"
	case ActProbeGateway:
		return fmt.Sprintf("probe-gateway seq=%d", a.Seq)
	case ActQueryWitness:
		return fmt.Sprintf("query-witness seq=%d epoch=%d", a.Seq, a.Epoch)
	case ActRaiseAlarm:
		return fmt.Sprintf("raise-alarm %s: %s", a.Alarm, a.Text)
	case ActClearAlarm:
		return "clear-alarm " + a.Alarm
	case ActNotice:
		switch a.Tally {
		case TallyFence:
			return "notice (fence): " + a.Text
		case TallyHandover:
			return "notice (handover): " + a.Text
		}
		return "notice: " + a.Text
	}
	return a.Kind.String()
}

// Ready is the output of New, Step and Tick.
type Ready struct {
	// Actions, in order. The daemon carries them out one after the other; an
	// ActPersist must be durable before the next action starts (I1, I3). When one
	// fails the daemon drops the rest and reports ActionFailed.
	Actions []Action
	// Advert is what heartbeats must carry from now on. When it differs from the
	// previous one the daemon sends a heartbeat at once.
	Advert Advert
	// Wake is the latest time at which the daemon must call Tick.
	Wake time.Time
	// Stopped: the orderly stop is complete; the daemon may exit.
	Stopped bool
}

// Event is an input to Step.
type Event interface {
	isEvent()
	String() string
}

// PeerAlive: a valid heartbeat from the peer (authenticated, not replayed).
// Seq is the heartbeat's sequence number; it must increase across the
// sender's restarts too (start it at the boot time in nanoseconds). Paths
// reorder heartbeats: one with a Seq not above the last counts as liveness,
// but its advert is ignored as stale.
type PeerAlive struct {
	Path   string
	Seq    uint64
	Advert Advert
}

// PeerSilent: the heartbeat detector's verdict that nothing arrived on any
// path for dead-after. The machine keeps its own timing too; this only hastens it.
type PeerSilent struct{}

// PathDown and PathUp: one heartbeat path lost or back (an alarm, not a failover).
type PathDown struct{ Path string }

// PathUp is PathDown's inverse.
type PathUp struct{ Path string }

// GatewayProbe answers ActProbeGateway Seq: Reachable if any gateway answered;
// VIPHeld if another MAC answered an ARP for the VIP (someone owns it).
type GatewayProbe struct {
	Seq       uint64
	Reachable bool
	VIPHeld   bool
}

// WitnessReply answers ActQueryWitness Seq.
type WitnessReply struct {
	Seq uint64
	OK  bool
}

// LANLink: the data LAN interface's carrier.
type LANLink struct{ Up bool }

// Replication reports the local replica and, on the primary, the peer.
type Replication struct {
	State        ReplState
	LSN          uint64 // last durable local LSN
	PeerInSync   bool   // primary: the peer acks synchronously
	PeerAckedAll bool   // primary: the peer acked every commit so far
	// Failed: the local store failed (a write or sync error) and works
	// again only after a restart; the advert says NoFollow.
	Failed bool
}

// AdminCmd is an operator command.
type AdminCmd uint8

// Operator commands.
const (
	AdminSwitchover AdminCmd = iota + 1
	AdminMaintenanceOn
	AdminMaintenanceOff
	AdminForcePromote // needs AckDataLoss
	AdminAckAlarm     // acknowledges the event alarm named by Alarm (see AlarmLatched)
)

func (c AdminCmd) String() string {
	switch c {
	case AdminSwitchover:
		return "switchover"
	case AdminMaintenanceOn:
		return "maintenance-on"
	case AdminMaintenanceOff:
		return "maintenance-off"
	case AdminForcePromote:
		return "force-promote"
	case AdminAckAlarm:
		return "ack-alarm"
	}
	return fmt.Sprintf("admin(%d)", uint8(c))
}

// Admin is an operator command from the local API.
type Admin struct {
	Cmd         AdminCmd
	AckDataLoss bool
	Alarm       string // AdminAckAlarm: the alarm's id
	// Why, for AdminSwitchover on the active, is the reason it records
	// ("" : an operator's switchover).
	Why string
}

// VIPConflict: another MAC answered for the VIP while we hold it.
type VIPConflict struct{ MAC string }

// ClockJump: the daemon noticed that time moved by Delta more than its timers
// expected (the process or VM was frozen, or the wall clock was stepped).
type ClockJump struct{ Delta time.Duration }

// RuntimePaused: the graceful ActStopRuntime completed (jobs checkpointed).
type RuntimePaused struct{}

// ActionFailed: an action failed; the actions after it were not carried out.
type ActionFailed struct {
	Kind ActionKind
	Err  error
}

// Stop: orderly stop (SIGTERM).
type Stop struct{}

func (PeerAlive) isEvent()     {}
func (PeerSilent) isEvent()    {}
func (PathDown) isEvent()      {}
func (PathUp) isEvent()        {}
func (GatewayProbe) isEvent()  {}
func (WitnessReply) isEvent()  {}
func (LANLink) isEvent()       {}
func (Replication) isEvent()   {}
func (Admin) isEvent()         {}
func (VIPConflict) isEvent()   {}
func (ClockJump) isEvent()     {}
func (RuntimePaused) isEvent() {}
func (ActionFailed) isEvent()  {}
func (Stop) isEvent()          {}

func (e PeerAlive) String() string {
	return fmt.Sprintf("peer-alive %s seq=%d %s", e.Path, e.Seq, e.Advert)
}
func (PeerSilent) String() string { return "peer-silent" }
func (e PathDown) String() string { return "path-down " + e.Path }
func (e PathUp) String() string   { return "path-up " + e.Path }
func (e GatewayProbe) String() string {
	return fmt.Sprintf("gateway-probe seq=%d reachable=%t vip-held=%t", e.Seq, e.Reachable, e.VIPHeld)
}
func (e WitnessReply) String() string { return fmt.Sprintf("witness-reply seq=%d ok=%t", e.Seq, e.OK) }
func (e LANLink) String() string      { return fmt.Sprintf("lan-link up=%t", e.Up) }
func (e Replication) String() string {
	return fmt.Sprintf("replication %s lsn=%d peer-in-sync=%t peer-acked-all=%t", e.State, e.LSN, e.PeerInSync, e.PeerAckedAll)
}
func (e Admin) String() string {
	if e.Cmd == AdminAckAlarm {
		return fmt.Sprintf("admin %s %s", e.Cmd, e.Alarm)
	}
	return fmt.Sprintf("admin %s ack=%t", e.Cmd, e.AckDataLoss)
}
func (e VIPConflict) String() string  { return "vip-conflict " + e.MAC }
func (e ClockJump) String() string    { return fmt.Sprintf("clock-jump %v", e.Delta) }
func (RuntimePaused) String() string  { return "runtime-paused" }
func (e ActionFailed) String() string { return fmt.Sprintf("action-failed %s: %v", e.Kind, e.Err) }
func (Stop) String() string           { return "stop" }

// Status is the machine's state for the API and the console.
type Status struct {
	Role        Role
	Substate    string // passive: syncing|in-sync|outdated|inconsistent; active: paired|alone|handing-over
	Epoch       uint64
	Maintenance bool
	Outdated    bool
	PeerAlive   bool
	Peer        Advert // the last advert heard (zero if never)
	PeerSeen    bool
	LastHeard   time.Time
	Reason      string // why the role last changed
	// SubReason says what the Substate means now (the role's Reason is
	// that of the last role change, not of a later change of substate).
	SubReason string
	Alarms    map[string]string // id -> text
	// SwitchoverRequested: this passive node asks the active peer to hand
	// over (an operator's switchover run here), since an AdminSwitchover.
	SwitchoverRequested bool
	// SwitchoverBlocked says why AdminSwitchover would be refused now ("":
	// it would be accepted). A drill's next leg waits for "".
	SwitchoverBlocked string
}
