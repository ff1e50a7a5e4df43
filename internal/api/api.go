// Package api is tandemd's local administration API: JSON over HTTP on a
// unix socket (mode 0660, root's group), used by tandemctl, the serial
// console and the web console's back end.
//
// Contract:
//
//	GET  /v1/status                  Status of the pair as this node sees it
//	GET  /v1/events?after=N          recent events with sequence number > N
//	POST /v1/admin/switchover        planned switchover (only on the active)
//	POST /v1/admin/maintenance       {"on": true|false}
//	POST /v1/admin/force-promote     {"acknowledge_data_loss": true}
//
// Requests and responses are JSON objects; unknown request fields are
// rejected. Errors are {"error": "...", "code": "..."} with an HTTP status:
// 400 for a malformed request (the message names the field), 409 when the
// action does not apply in the current state (the message says why), 503
// while the daemon is starting or stopping. Handlers never block on the
// replication stream or disk: they hand actions to the daemon's driver and
// wait for its answer under the request's context.
//
// The types below are the wire format; fields are only ever added, never
// renamed or removed, so an older tandemctl can read a newer daemon.
package api

import (
	"time"

	"github.com/tandem-ha/tandem/internal/latency"
)

// Status is the pair as one node sees it.
type Status struct {
	Node        string    `json:"node"`
	Peer        string    `json:"peer"`
	Role        string    `json:"role"`      // starting, passive, active, maintenance, stopping
	SubState    string    `json:"sub_state"` // e.g. in-sync, outdated, paired, alone
	Epoch       uint64    `json:"epoch"`
	RoleSince   time.Time `json:"role_since"`
	Maintenance bool      `json:"maintenance"`
	// SwitchoverRequested: this passive node asks the active peer to hand
	// over (`tandemctl switchover` run here) and waits for it.
	SwitchoverRequested bool `json:"switchover_requested,omitempty"`
	// SwitchoverReady: `tandemctl switchover` would be accepted now, on
	// this node; otherwise SwitchoverBlocked says why not.
	SwitchoverReady   bool              `json:"switchover_ready"`
	SwitchoverBlocked string            `json:"switchover_blocked,omitempty"`
	PeerView          PeerStatus        `json:"peer_view"`
	Paths             []PathStatus      `json:"paths"`
	Replication       ReplicationStatus `json:"replication"`
	VIP               VIPStatus         `json:"vip"`
	TieBreaker        TieBreakerStatus  `json:"tie_breaker"`
	Runtime           RuntimeStatus     `json:"runtime"`
	Backup            BackupStatus      `json:"backup"`
	Alarms            []Alarm           `json:"alarms"`
	Events            []Event           `json:"events"` // the most recent ones
	Counters          Counters          `json:"counters"`
	Version           string            `json:"version"`
	Now               time.Time         `json:"now"`
}

// PeerStatus is what this node knows of its peer from heartbeats.
type PeerStatus struct {
	Alive        bool      `json:"alive"`
	Role         string    `json:"role"`
	Epoch        uint64    `json:"epoch"`
	CommittedLSN uint64    `json:"committed_lsn"`
	AppliedLSN   uint64    `json:"applied_lsn"`
	DataState    string    `json:"data_state"`
	LastSeen     time.Time `json:"last_seen"`
}

// PathStatus is one heartbeat path.
type PathStatus struct {
	Name     string        `json:"name"`
	Up       bool          `json:"up"`
	RTT      time.Duration `json:"rtt_ns"`
	Loss     float64       `json:"loss"` // fraction, recent window
	LastSeen time.Time     `json:"last_seen"`
	Dropped  uint64        `json:"dropped"` // invalid datagrams received on this path
}

// ReplicationStatus is the WIP store's replication state.
type ReplicationStatus struct {
	Role         string        `json:"role"` // primary, secondary
	Mode         string        `json:"mode"` // sync, async
	DataState    string        `json:"data_state"`
	PeerState    string        `json:"peer_state"` // in-sync, catching-up, snapshot N%, outdated, outdated (snapshot N%), disconnected
	CommittedLSN uint64        `json:"committed_lsn"`
	PeerAckedLSN uint64        `json:"peer_acked_lsn"`
	LagBatches   uint64        `json:"lag_batches"`
	LagBytes     uint64        `json:"lag_bytes"`
	LagTime      time.Duration `json:"lag_ns"`
	Rejected     uint64        `json:"rejected_frames"`
	// The retained log window (LSNs RetainedFirst..RetainedLast, 0..0 when
	// empty) and the last LSN the peer is known to hold (0: not known).
	// PeerCatchUp says how the peer would be caught up if it reconnected
	// now: "log", "snapshot" (a full resync: it was away longer than the
	// window) or "unknown".
	RetainedFirst uint64 `json:"retained_first_lsn"`
	RetainedLast  uint64 `json:"retained_last_lsn"`
	RetainedBytes uint64 `json:"retained_bytes"`
	PeerHoldsLSN  uint64 `json:"peer_holds_lsn"`
	PeerCatchUp   string `json:"peer_catch_up,omitempty"`
	// Session is the replication session's "local -> peer" addresses
	// (which HA link carries it); empty without a session.
	Session string `json:"session,omitempty"`
	// LastError is the replication's last error since the store opened:
	// a frame or handshake this node rejected, a refusal by the peer (a
	// primary that cannot read its own store says so), a snapshot this
	// node's store could not take, a divergence. It stays after the
	// problem is over; empty when there was none. LastErrorAt is when it
	// happened.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// NextDialAt: the passive is waiting to connect to the active's
	// replication listener (unreachable, or refusing it) and tries again
	// then; zero while connected or trying. DialError is what ended its
	// last attempt.
	NextDialAt time.Time `json:"next_dial_at,omitzero"`
	DialError  string    `json:"dial_error,omitempty"`
	// AckWaitSince: on a sync active, the oldest commits durable here that
	// wait for the passive's ack became durable then (zero when none
	// wait). GoAloneRefusal: with on-peer-loss degrade, why they may not go
	// on alone past peer-ack-timeout (this node may not be the active).
	AckWaitSince   time.Time `json:"ack_wait_since,omitzero"`
	GoAloneRefusal string    `json:"go_alone_refusal,omitempty"`
	// PeerOutdated: this node is the active and acknowledges commits its
	// peer lacks (it went on alone, or took over without the peer); false
	// again once the peer is in sync. PeerState then says "outdated".
	PeerOutdated bool `json:"peer_outdated,omitempty"`
	// Corruption is the on-disk corruption found in this node's WIP store
	// (the file, its key bounds, the error); empty when none.
	Corruption string `json:"corruption,omitempty"`
	// CorruptionRepair: "" (none started: the active), "resync" (the
	// passive resyncs by snapshot) or "failed: ..." (not retried).
	CorruptionRepair string `json:"corruption_repair,omitempty"`
	// Failed is the local write or sync error that failed this node's WIP
	// store (a full file system, a failing disk); empty when it works. A
	// failed store commits and acknowledges nothing more and is not
	// promotable until tandemd is restarted.
	Failed string `json:"failed,omitempty"`
	// FailedStall: Failed is a stalled write (a disk that hung), which
	// may answer again (StallOver).
	FailedStall bool `json:"failed_stall,omitempty"`
	// StallOver: Failed is a stalled write, and the disk answers again
	// since (its probe writes complete): a restart recovers the store.
	// False again while the disk hangs or fails again.
	StallOver bool `json:"stall_over,omitempty"`
	// WriteError is pebble's last failure of its own work on the store's
	// files in a run not yet ended (every job that failed in it has
	// succeeded since); WriteErrors counts the run's failures since
	// WriteErrorSince. WriteErrorJobs names the jobs that failed in the
	// run ("flushes", "compactions", "flushes and compactions"; empty for
	// pebble's other background reads), WriteErrorNoSpace says the error
	// is a full file system (otherwise the disk fails reads or writes).
	// WriteErrorsTotal counts the failures of all runs since the store
	// opened. StalledSince is when commits began to wait for a flush
	// (zero: they do not), StallReason why.
	WriteError        string    `json:"write_error,omitempty"`
	WriteErrorSince   time.Time `json:"write_error_since,omitzero"`
	WriteErrors       uint64    `json:"write_errors,omitempty"`
	WriteErrorJobs    string    `json:"write_error_jobs,omitempty"`
	WriteErrorNoSpace bool      `json:"write_error_no_space,omitempty"`
	WriteErrorsTotal  uint64    `json:"write_errors_total,omitempty"`
	StalledSince      time.Time `json:"stalled_since,omitzero"`
	StallReason       string    `json:"stall_reason,omitempty"`
	// SlowWrite is the oldest of the store's own writes under way (a
	// commit's log write and fsync, a batch the passive applies) once it
	// has taken half of disk.stall-timeout, with since when; empty
	// otherwise. SlowWrites counts such writes since the store opened.
	SlowWrite      string    `json:"slow_write,omitempty"`
	SlowWriteSince time.Time `json:"slow_write_since,omitzero"`
	SlowWrites     uint64    `json:"slow_writes,omitempty"`
	// Latency holds the WIP store's latency histograms since it was
	// opened; RecentLatency those of the last one to two minutes.
	Latency       LatencyStatus `json:"latency"`
	RecentLatency LatencyStatus `json:"recent_latency"`
}

// LatencyStatus holds the WIP store's latency histograms (buckets: package
// latency). Which fill depends on the replication role (wip.Latencies):
// Commit (primary) is a group of commits from forming to its writers'
// release; LocalSync the node's own durable write (primary: a group's
// write and fsync; secondary: a received batch's apply and fsync);
// PeerWait (primary, sync mode) the wait for the peer's ack after local
// durability.
type LatencyStatus struct {
	// Bounds are the buckets' upper bounds (latency.Bounds), for clients
	// that read the JSON: counts[i] of each histogram lies in
	// (bounds_ns[i-1], bounds_ns[i]], the last above every bound.
	Bounds    []time.Duration   `json:"bounds_ns"`
	Commit    latency.Histogram `json:"commit"`
	LocalSync latency.Histogram `json:"local_sync"`
	PeerWait  latency.Histogram `json:"peer_wait"`
}

// VIPStatus is the virtual address group.
type VIPStatus struct {
	Addresses  []string  `json:"addresses"`
	Owned      bool      `json:"owned"` // by this node
	VirtualMAC string    `json:"virtual_mac,omitempty"`
	Since      time.Time `json:"since"`
	Conflicts  uint64    `json:"conflicts"`
}

// TieBreakerStatus is the result of the latest outside-reachability probes.
type TieBreakerStatus struct {
	GatewayReachable bool      `json:"gateway_reachable"`
	Witness          string    `json:"witness,omitempty"` // verdict, if configured
	Checked          time.Time `json:"checked"`
}

// RuntimeStatus is the orchestration runtime.
type RuntimeStatus struct {
	State   string `json:"state"` // stopped, running, pausing
	Running int    `json:"running_jobs"`
	// Purged counts the finished jobs the retention purge deleted since
	// the daemon started.
	Purged uint64 `json:"purged_jobs"`
}

// Counters only ever grow while the daemon runs (Prometheus counters).
type Counters struct {
	Promotions  uint64 `json:"promotions"`  // this node became active (failovers and switchovers)
	Demotions   uint64 `json:"demotions"`   // this node stopped being active
	SelfFences  uint64 `json:"self_fences"` // this node fenced itself (lost peer and tie-breaker)
	Switchovers uint64 `json:"switchovers"` // planned handovers completed from this node
}

// Alarm is a condition an operator should know about, raised and cleared by
// the daemon under a stable ID.
type Alarm struct {
	ID       string    `json:"id"`
	Severity string    `json:"severity"` // warning, critical
	Text     string    `json:"text"`
	Since    time.Time `json:"since"`
	// Latched: the alarm records an event and stands until the operator
	// acknowledges it (POST /v1/admin/ack-alarm, tandemctl ack-alarm).
	// Otherwise it clears by itself when its condition ends.
	Latched bool `json:"latched,omitempty"`
}

// AckAlarmRequest is the body of POST /v1/admin/ack-alarm.
type AckAlarmRequest struct {
	Alarm string `json:"alarm"` // the alarm's id, as in Status.Alarms
}

// Event is one entry of the daemon's event log.
type Event struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	Kind string    `json:"kind"` // role, path, peer, heartbeat, alarm, admin, action, vip, replication, runtime, backup, notice
	Text string    `json:"text"`
}

// MaintenanceRequest is the body of POST /v1/admin/maintenance.
type MaintenanceRequest struct {
	On *bool `json:"on"`
}

// ForcePromoteRequest is the body of POST /v1/admin/force-promote.
type ForcePromoteRequest struct {
	AcknowledgeDataLoss bool `json:"acknowledge_data_loss"`
}

// ActionResult answers an admin action.
type ActionResult struct {
	Accepted bool   `json:"accepted"`
	Text     string `json:"text"`
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// BackupStatus is the WIP store's backups on this node.
type BackupStatus struct {
	Dir   string        `json:"dir,omitempty"` // empty: backups are off
	Every time.Duration `json:"every"`         // 0: only on demand; the active takes them
	Keep  int           `json:"keep"`
	// Last is the last backup this run took (nil: none yet).
	Last *BackupInfo `json:"last,omitempty"`
	// LastError is set when the last attempt failed (cleared by a success).
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitempty"`
	Taken       uint64    `json:"taken"`  // since the daemon started
	Failed      uint64    `json:"failed"` // since the daemon started
}

// VerifyResult is a read-back of the WIP store (tandemctl verify): the keys
// read (when it met no fault), how long it took, and the fault it met (""
// when none; corruption is also this node's wip-corrupt alarm).
type VerifyResult struct {
	Keys  int64         `json:"keys"`
	Took  time.Duration `json:"took_ns"`
	Fault string        `json:"fault,omitempty"`
}

// BackupInfo describes one backup.
type BackupInfo struct {
	Path    string        `json:"path"`
	Created time.Time     `json:"created"`
	Node    string        `json:"node,omitempty"`
	Epoch   uint64        `json:"epoch"`
	LSN     uint64        `json:"lsn"`
	Bytes   int64         `json:"bytes"`
	Took    time.Duration `json:"took,omitempty"` // for a backup just taken
}
