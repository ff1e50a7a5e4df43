package wip

import (
	"errors"
	"time"
)

// PeerState is the replication state of the peer as this node sees it.
type PeerState int

const (
	PeerDisconnected PeerState = iota
	PeerCatchingUp
	PeerSnapshot
	PeerInSync
	PeerOutdated
)

func (p PeerState) String() string {
	switch p {
	case PeerCatchingUp:
		return "catching-up"
	case PeerSnapshot:
		return "snapshot"
	case PeerInSync:
		return "in-sync"
	case PeerOutdated:
		return "outdated"
	}
	return "disconnected"
}

// EventKind names a state change reported through Options.Events.
type EventKind int

const (
	EventPeerOutdated    EventKind = iota + 1 // primary: commits go on without the peer (alarm)
	EventPeerAckTimeout                       // primary, Block: commits wait for the peer (alarm)
	EventPeerInSync                           // primary: the peer holds every commit
	EventOutdated                             // secondary: told it missed commits; not promotable
	EventSnapshotStarted                      // secondary: Inconsistent until EventSnapshotDone
	EventSnapshotDone
	EventDiverged // secondary: the losing suffix went to a quarantine file (alarm)
	EventRejected // a frame or handshake was rejected; Detail names the reason
	// EventModeMismatch: the peer runs the other replication mode (protocol
	// version 2 on); no session until one node's mode is changed (alarm).
	EventModeMismatch
	// EventSessionStarted: a replication session passed its handshake.
	EventSessionStarted
	// EventCorrupt: pebble found on-disk corruption (alarm): the store is
	// not promotable; a secondary resyncs by snapshot (Status.Corruption).
	EventCorrupt
	// EventCorruptRepaired: a snapshot replaced a corrupt store's data and
	// a full read found no corruption.
	EventCorruptRepaired
	// EventSetAside: Open met corruption and set the store aside
	// (Options.SetAsideCorrupt); File is where it went, Detail what was
	// met. The new store follows with EventCorrupt and, once a snapshot
	// has replaced its data, EventCorruptRepaired.
	EventSetAside
	// EventFailed: a local write or sync failed (a full file system, a
	// failing disk; Detail and Err say which): the store commits, applies
	// and acknowledges nothing more until it is reopened (Status.Failed).
	EventFailed
)

func (k EventKind) String() string {
	return [...]string{"?", "peer-outdated", "peer-ack-timeout", "peer-in-sync", "outdated",
		"snapshot-started", "snapshot-done", "diverged", "rejected", "mode-mismatch", "session-started",
		"corrupt", "corrupt-repaired", "set-aside", "failed"}[k]
}

// Event is one state change.
type Event struct {
	Kind   EventKind
	Detail string
	Err    error
	File   string // EventDiverged: the quarantine file; EventSetAside: the set-aside store
}

// Counters are monotonic since Open.
type Counters struct {
	Commits, Groups  uint64
	Degradations     uint64
	GoAloneRefused   uint64 // Degrade mode: MayGoAlone said no (counted per new reason)
	Sessions         uint64 // handshakes completed
	RejectedFrames   uint64 // malformed, bad CRC, unexpected type: nothing applied
	RejectedAuth     uint64 // wrong pair key
	RejectedVersion  uint64 // no common protocol version
	RejectedMode     uint64 // the peer runs the other replication mode
	Snapshots        uint64 // snapshots received (secondary) or sent (primary)
	Divergences      uint64
	EntriesSent      uint64
	EntriesApplied   uint64
	SnapshotBytesIn  uint64
	SnapshotBytesOut uint64
	Corruptions      uint64 // pebble's reports of on-disk corruption
	SlowWrites       uint64 // local writes that took half of StallTimeout
	DiskProbes       uint64 // writes of the disk probe (an idle store's)
	BackgroundErrors uint64 // pebble's background errors (failed flushes, compactions), all runs
}

// Status is a consistent view of the store for the console and the CLI.
type Status struct {
	Role     Role
	Mode     Mode
	PeerLoss PeerLoss
	Epoch    uint64
	// CommittedLSN is the last LSN assigned (primary) or applied
	// (secondary). A failed primary's is its DurableLSN: the group whose
	// write failed was assigned LSNs but never acknowledged.
	CommittedLSN uint64
	DurableLSN   uint64 // last LSN durable on this node
	PeerAckedLSN uint64 // primary: last LSN the peer acked durable
	PrimaryLSN   uint64 // secondary: the primary's LSN as last heard
	PeerState    PeerState
	// Lag of the peer (primary) or of this node (secondary).
	LagBatches uint64
	LagBytes   int64
	LagSeconds float64
	// This node's own flags (I5: not promotable while set).
	Inconsistent bool
	Outdated     bool
	// Corruption is the on-disk corruption pebble found in this store ("" when
	// none): the file, its key bounds and the error. Not promotable while set.
	// A secondary resyncs by snapshot and clears it when a full read of the
	// result is clean; a primary keeps it until it is demoted and resynced.
	// CorruptionRepair says where that stands: "" (not started: a primary),
	// "resync" (the secondary resyncs), or "failed: ..." (the read after
	// the snapshot still failed; not retried).
	Corruption       string
	CorruptionRepair string
	// Failed is the local write or sync error that failed the store ("" when
	// it works): nothing more is committed, applied or acknowledged, and
	// it is not promotable, until it is reopened (EventFailed).
	Failed string
	// FailedStall: Failed is a stalled write (ErrStalled): the disk hung,
	// and may answer again (StallOver).
	FailedStall bool
	// StallOver: the store failed on a stalled write (ErrStalled), every
	// write under way has returned since, and the disk probes complete
	// (the last one in less than half of StallTimeout, and none is under
	// way for that long): the disk answers again, and reopening the store
	// recovers it. A failed store stays failed until then. It turns false
	// again if the disk hangs or fails again.
	StallOver bool
	// BackgroundError is pebble's last failure of its own work on its
	// files (a flush, a compaction, a background read: a full file
	// system, a failing disk) in a run not yet ended ("" when none; a run
	// ends when every kind of job that failed in it has succeeded again),
	// with when the run began and how many there were. While flushes
	// fail, commits go on into the WAL until the memtables are full, then
	// stall: StalledSince (zero when commits do not stall) and
	// StallReason.
	// BackgroundErrorJobs names the jobs that failed in the run
	// ("flushes", "compactions", "flushes and compactions"; "" for
	// pebble's other background reads), BackgroundErrorNoSpace says the
	// error is a full file system (else the disk fails reads or writes).
	// Counters.BackgroundErrors counts the errors of all runs.
	BackgroundError        string
	BackgroundErrorSince   time.Time
	BackgroundErrors       uint64
	BackgroundErrorJobs    string
	BackgroundErrorNoSpace bool
	StalledSince           time.Time
	StallReason            string
	// SlowWrite is the oldest of this store's own writes under way (a
	// commit's WAL write and fsync, a secondary's apply, a record) when it
	// has taken half of Options.StallTimeout or more ("" otherwise), with
	// when it began: the disk is slow, and the store fails if the write
	// reaches StallTimeout. Counters.SlowWrites counts such writes.
	SlowWrite      string
	SlowWriteSince time.Time
	PeerOutdated   bool // primary: commits were acknowledged without the peer
	// AckWaitSince: a sync primary's oldest commit group that is durable
	// here and waits for the peer's ack became durable then (zero when
	// none waits). Past PeerAckTimeout, PeerLoss applies: Block keeps the
	// commits waiting; Degrade goes on alone unless the fence-peer hook
	// (Options.MayGoAlone) refuses, and GoAloneRefusal says why.
	AckWaitSince   time.Time
	GoAloneRefusal string
	// SnapshotPercent is the progress of a running snapshot (0..100).
	// PeerSnapshotPercent is a primary's: of the snapshot it sends, while
	// the peer is PeerSnapshot. Both compare the bytes received or sent
	// with the store's estimated size on disk (see snapshotPercent).
	SnapshotPercent     float64
	PeerSnapshotPercent float64
	// The retained log window: LSNs a peer can still be caught up from
	// without a snapshot. In a pair in sync it holds about a MiB (records
	// the other node holds go early); it grows while the peer is away, up
	// to RetainBytes and RetainAge.
	RetainedFirst uint64
	RetainedLast  uint64
	RetainedBytes int64
	// OtherHoldsLSN is the last LSN of this store's lineage the other node
	// is known to hold durably: as primary, the peer's last ack; as
	// secondary, the primary's durable LSN as last reported (protocol
	// version 3 on). Zero when not known (after Open, after a snapshot,
	// with a version 2 primary).
	OtherHoldsLSN uint64
	// OtherCatchUp says how the other node would be caught up if it
	// reconnected now, from what it is known to hold: CatchUpLog (the
	// window still holds everything after OtherHoldsLSN), CatchUpSnapshot
	// (it was away longer than the window: a full snapshot, Inconsistent
	// until done) or CatchUpUnknown (OtherHoldsLSN is zero). As
	// secondary, the other node is the primary, which would rejoin after
	// this node's promotion.
	OtherCatchUp string
	// SessionLocal and SessionPeer are the current replication session's
	// addresses ("" without a session): which HA link carries it.
	SessionLocal, SessionPeer string
	// LastError is the replication's last error since Open (a frame or a
	// handshake rejected, a refusal by the peer, a snapshot this store
	// could not take, a divergence, the store's failure), and LastErrorAt
	// when it happened. It stays after the problem is over.
	LastError   string
	LastErrorAt time.Time
	// NextDialAt is when a secondary that is waiting to connect (its peer
	// unreachable, or refusing it) tries next, and DialError what ended
	// its last attempt (a refused dial, a reset, a refusal by the peer);
	// zero and "" while it is connected or trying.
	NextDialAt time.Time
	DialError  string
	Counters   Counters
	// Latency holds the latency histograms since Open; RecentLatency those
	// of the last one to two minutes (see Latencies for which fill).
	Latency, RecentLatency Latencies
}

// snapshotPercent is a snapshot's progress: done bytes of about total.
// The total is the store's estimated size on disk, so done may pass it; a
// snapshot is not complete before its end, so the figure stops at 99.9.
func snapshotPercent(done, total int64) float64 {
	return min(100*float64(done)/float64(total), 99.9)
}

// The values of Status.OtherCatchUp.
const (
	CatchUpLog      = "log"
	CatchUpSnapshot = "snapshot"
	CatchUpUnknown  = "unknown"
)

// Status returns the current status.
func (s *Store) Status() Status {
	first, last, rb, holds := s.retainedRange()
	slow, slowSince := s.slowWrite(s.clk.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	committed := s.lsn
	if s.failed != nil {
		// The group that failed (or stalled) was never acknowledged; a
		// failed primary demoted since still holds its LSN in s.lsn.
		committed = s.durable
	}
	st := Status{Role: s.role, Mode: s.o.Mode, PeerLoss: s.o.PeerLoss, Epoch: s.epoch,
		CommittedLSN: committed, DurableLSN: s.durable, PeerAckedLSN: s.peerAcked, PrimaryLSN: s.peerLSN,
		PeerState: s.peerState, Inconsistent: s.inconsistent, Outdated: s.outdated, PeerOutdated: s.peerOutdated,
		RetainedFirst: first, RetainedLast: last, RetainedBytes: rb, OtherHoldsLSN: holds, Counters: s.counters,
		Latency: s.lat.total, RecentLatency: s.lat.recent(s.clk.Now())}
	// planLocked's rule. A secondary may hear of the primary's durable LSN
	// before it holds that LSN itself: it compares what both hold.
	switch {
	case holds == 0:
		st.OtherCatchUp = CatchUpUnknown
	case streamable(min(holds, s.durable), s.durable, first):
		st.OtherCatchUp = CatchUpLog
	default:
		st.OtherCatchUp = CatchUpSnapshot
	}
	if s.peerState == PeerInSync && s.role == Primary && !s.syncShown {
		st.PeerState = PeerCatchingUp // caught up, its ack still to come
	}
	if s.peerState == PeerDisconnected && s.peerOutdated {
		st.PeerState = PeerOutdated
	}
	if s.sess != nil {
		st.SessionLocal, st.SessionPeer = s.sess.conn.LocalAddr().String(), s.sess.conn.RemoteAddr().String()
	}
	if s.snapTotal > 0 && s.inconsistent {
		st.SnapshotPercent = snapshotPercent(s.snapDone, s.snapTotal)
	}
	if s.role == Primary && s.peerState == PeerSnapshot && s.snapOutTotal > 0 {
		st.PeerSnapshotPercent = snapshotPercent(s.snapOutDone, s.snapOutTotal)
	}
	if s.lastErr != nil {
		st.LastError, st.LastErrorAt = s.lastErr.Error(), s.lastErrAt
	}
	if s.role == Secondary {
		st.NextDialAt, st.DialError = s.nextDial, s.dialErr
	}
	if s.role == Primary && len(s.waiting) > 0 && s.needPeerLocked() {
		st.AckWaitSince, st.GoAloneRefusal = s.waiting[0].durable, s.goAloneRefusal
	}
	if s.failed != nil {
		st.Failed = s.failed.Error()
		st.FailedStall = errors.Is(s.failed, ErrStalled)
		st.StallOver = s.stallOver && slow == "" // a probe under way that long: the disk hangs again
	}
	ws := s.ww.state()
	st.BackgroundError, st.BackgroundErrorSince, st.BackgroundErrors = ws.err, ws.since, ws.count
	st.BackgroundErrorJobs, st.BackgroundErrorNoSpace, st.Counters.BackgroundErrors = ws.jobs, ws.noSpace, ws.total
	st.StalledSince, st.StallReason = ws.stalledSince, ws.stallReason
	st.Corruption, st.CorruptionRepair, st.Counters.Corruptions = s.corr.state()
	st.SlowWrite, st.SlowWriteSince = slow, slowSince
	if s.role == Primary {
		if committed > s.peerAcked {
			st.LagBatches = committed - s.peerAcked
		}
		var oldest int64
		for _, g := range s.tail {
			for _, e := range g.entries {
				if e.lsn > s.peerAcked {
					st.LagBytes += int64(len(e.ops) + 24)
					if oldest == 0 {
						oldest = e.unixNano
					}
				}
			}
		}
		if oldest != 0 {
			st.LagSeconds = float64(s.clk.Now().UnixNano()-oldest) / float64(time.Second)
		}
	} else if s.peerLSN > s.lsn {
		st.LagBatches = s.peerLSN - s.lsn
	}
	return st
}

// Term is one promotion in the store's epoch history (the generation
// identifiers): its epoch and the LSNs committed under it, First..Last
// (Last < First when it committed nothing).
type Term struct{ Epoch, First, Last uint64 }

// Terms returns the store's epoch history, oldest first. The history
// travels with the data (handshake lineage, snapshots), so nodes holding
// the same LSNs agree on who wrote them. Callers use it to tell whether a
// term they do not trust wrote since a point they remember (the runtime's
// index of unfinished jobs).
func (s *Store) Terms() []Term {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Term, len(s.history))
	for i, h := range s.history {
		last := s.lsn
		if i+1 < len(s.history) {
			last = s.history[i+1].first - 1
		}
		out[i] = Term{Epoch: h.epoch, First: h.first, Last: last}
	}
	return out
}
