package wip

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// Sentinel errors.
var (
	ErrNotPrimary    = errors.New("wip: store is not primary")
	ErrNotPromotable = errors.New("wip: store is not promotable")
	ErrClosed        = errors.New("wip: store closed")
	ErrFailed        = errors.New("wip: store failed")
	ErrDiverged      = errors.New("wip: histories diverged")
	ErrOptions       = errors.New("wip: bad options")
	ErrRejected      = errors.New("wip: peer rejected")
	ErrAuth          = errors.New("wip: handshake authentication failed")
	ErrModeMismatch  = errors.New("wip: replication modes differ")
	ErrCorrupt       = errors.New("wip: corrupt store")
	// ErrUnacknowledged: the store was demoted while the commit, durable
	// locally, still waited for the peer's ack. It was never acknowledged;
	// whether the new primary holds it is unknown to this node.
	ErrUnacknowledged = errors.New("wip: demoted before the peer acknowledged the commit")
	// ErrFenced, wrapped in a MayGoAlone refusal, says this node is being
	// demoted: the commits waiting for the peer are answered with
	// ErrUnacknowledged at once instead of waiting for Demote.
	ErrFenced = errors.New("wip: fenced")
)

// Mode selects when a commit is acknowledged.
type Mode int

const (
	// Sync acknowledges a commit once it is durable locally and, while the
	// peer is in sync, on the peer (DRBD protocol C).
	Sync Mode = iota
	// Async acknowledges after the local fsync; the peer lags (see Status).
	Async
)

func (m Mode) String() string {
	if m == Async {
		return "async"
	}
	return "sync"
}

// PeerLoss selects what a sync-mode primary does when the peer does not ack
// within PeerAckTimeout.
type PeerLoss int

const (
	// Degrade goes on alone: the peer is marked Outdated (persisted) first.
	Degrade PeerLoss = iota
	// Block keeps commits waiting until the peer is back and has acked.
	Block
)

func (p PeerLoss) String() string {
	if p == Block {
		return "block"
	}
	return "degrade"
}

// Options configure a Store. Zero values take the defaults noted.
type Options struct {
	FS         vfs.FS      // nil: vfs.Default
	Clock      clock.Clock // nil: clock.Real()
	Logger     *zap.Logger // nil: zap.NewNop()
	NodeID     uint8
	PairKey    []byte // HMAC-SHA256 key for the replication handshake (>= 16 bytes when replicating)
	ListenAddr string // replication listener (HA link address:port); "" = none
	PeerAddr   string // peer's replication listener; "" = never dial
	// ExtraListenAddrs are further replication listeners, one per further
	// HA link; ExtraPeerAddrs the peer's, in the same order. A secondary
	// dials the peer's addresses in turn (PeerAddr first): after a session
	// ends, or a dial fails, it tries the next one, so a cut HA link costs
	// one failed session, not the pair's protection.
	ExtraListenAddrs []string
	ExtraPeerAddrs   []string
	// DeadSessionAfter is how long a replication connection may go without
	// a sign of life from the peer's TCP stack before it is dropped (TCP
	// keepalive probes while idle, TCP_USER_TIMEOUT while data is
	// unacknowledged): a cut cable sends no FIN. 0: a third of
	// PeerAckTimeout, within 100 ms..1 s, so that the secondary moves to
	// another HA link before the primary degrades.
	DeadSessionAfter time.Duration
	Mode             Mode          // Sync (default) | Async
	PeerLoss         PeerLoss      // Degrade (default) | Block
	PeerAckTimeout   time.Duration // 0: 5 s
	// StallTimeout is how long a local write (a commit's WAL write and
	// fsync, a batch a secondary applies, a record of the store's own) may
	// take before the store fails with ErrStalled: the disk has stalled,
	// and a primary's pair hands over to a peer whose disk works. A warning
	// is logged at half of it. 0: 20 s (CockroachDB's max_sync_duration:
	// a disk that has not completed a write in that long is not coming
	// back soon, and a healthy one under load is far below it).
	StallTimeout time.Duration
	RetainBytes  int64         // retained log for catch-up; 0: 256 MiB
	RetainAge    time.Duration // 0: 1 h
	Events       func(Event)   // optional; called from store goroutines, must not block
	// MayGoAlone is the fence-peer hook (DRBD's fence-peer handler): in
	// Degrade mode the store calls it when the peer has not acked within
	// PeerAckTimeout, before persisting that the peer is Outdated and
	// acknowledging anything without it. nil allows; an error (naming the
	// reason) keeps the commits waiting, as in Block, and the store asks
	// again every GoAloneRetry. The daemon answers from the pair's verdict:
	// only a current active may go on alone, never a node that was frozen
	// and has not yet learnt whether it was replaced. A refusal that wraps
	// ErrFenced fails the waiting commits with ErrUnacknowledged at once.
	// nil hook: always allowed.
	// It must not block for long and must not call into the store.
	MayGoAlone func() error
	// GoAloneRetry is how often a refused MayGoAlone is asked again; 0: 100 ms.
	GoAloneRetry time.Duration
	// MaxGroupBytes bounds one group commit; 0: 4 MiB.
	MaxGroupBytes int
	// MaxUnackedGroups bounds the pipeline of a sync-mode primary whose
	// peer is in sync: how many locally durable groups may wait for the
	// peer's ack before the committer holds the next group back. Writers
	// that queue meanwhile form one larger group, written with one fsync
	// on each node instead of several. 0: 2 (the next group is committed
	// and sent while the previous one waits for the peer). A link whose
	// round trip is long against an fsync wants more.
	MaxUnackedGroups int
	// PebbleOptions, when set, is used as the base of the pebble options
	// (FS is still taken from Options.FS). Benchmarks and tests tune it.
	PebbleOptions *pebble.Options
	// SetAsideCorrupt: when Open meets on-disk corruption (pebble's
	// checksum error, or a meta record of the store's own that does not
	// decode), it renames dir to dir.corrupt-<UTC time>, keeping every
	// file, moves the quarantine files back, and opens a new store in
	// dir, Inconsistent: the node then receives the primary's data by
	// snapshot. Until a full read of the result is clean, as for
	// corruption found later, Status.Corruption says what was met and
	// where the old store went; EventSetAside reports the move. One
	// set-aside store is kept: if one is there already, Open fails,
	// naming both (a second corruption at open is the disk's, or needs
	// the operator's eyes).
	SetAsideCorrupt bool
	// EmptyIsInconsistent marks a store that holds nothing of a pair (no
	// epoch history and LSN 0: never promoted, never replicated to; a new
	// one, say) Inconsistent when Open opens it: it is not promotable
	// until it has received a snapshot. The daemon sets it on a node that
	// has been in a pair (its pair state holds an epoch), so that a store
	// moved away by hand cannot come back as an empty but promotable one,
	// even if a crash cut the first Open of the new store short.
	EmptyIsInconsistent bool

	// testSnapChunk, when set, is called by a receiving secondary after each
	// snapshot chunk is applied; an error interrupts the snapshot there.
	testSnapChunk func(n int) error
	// testBeforeAck, when set, is called by a secondary before it acks lsn;
	// it may block, holding the ack back.
	testBeforeAck func(lsn uint64)
	// testOutput, when set, is called before every frame that tells the
	// peer what this node holds (Ack) or what the primary holds (Data);
	// false ends the session instead. A test that cuts the power of a
	// running store stops those frames at that instant, as the cut would.
	testOutput func() bool
	// testHolding, when set, is called (with the store's mutex held; it
	// must not block) each time the primary's committer starts to wait in
	// holdPipeline, with the number of groups waiting for the peer.
	testHolding func(unacked int)
	// testMaxVersion, when set, caps the protocol version this store
	// speaks, to pair it as an older build would.
	testMaxVersion byte
	// testVerify, when set, is called after pebble's read-back of a
	// repaired store (verifyRepair) and may replace its result, to script
	// a repair that fails.
	testVerify func(error) error
}

// output reports whether a frame that tells the peer what a node holds
// may be sent (see testOutput; always, outside tests).
func (s *Store) output() bool { return s.o.testOutput == nil || s.o.testOutput() }

// errOutputStopped ends a session whose frames a test stopped (testOutput).
var errOutputStopped = errors.New("wip: test: output stopped")

// maxVersion is the newest protocol version this store speaks.
func (s *Store) maxVersion() byte {
	if v := s.o.testMaxVersion; v != 0 {
		return min(v, ProtocolVersion)
	}
	return ProtocolVersion
}

func (o *Options) fill() error {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.PeerAckTimeout == 0 {
		o.PeerAckTimeout = 5 * time.Second
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = 20 * time.Second
	}
	if o.RetainBytes == 0 {
		o.RetainBytes = 256 << 20
	}
	if o.RetainAge == 0 {
		o.RetainAge = time.Hour
	}
	if o.MaxGroupBytes == 0 {
		o.MaxGroupBytes = 4 << 20
	}
	if o.GoAloneRetry == 0 {
		o.GoAloneRetry = 100 * time.Millisecond
	}
	if o.MaxUnackedGroups == 0 {
		o.MaxUnackedGroups = 2
	}
	if o.DeadSessionAfter == 0 {
		// Finding a dead link takes up to about twice this (a repeated
		// ack's interval, then the kernel's retransmission steps, 200 ms
		// at least), and must end before the primary degrades: measured in
		// the lab with a 1 s PeerAckTimeout, the session was on HA link 2
		// 0.60-0.62 s after the cut with a third (0.94 s with a half).
		o.DeadSessionAfter = min(time.Second, max(o.PeerAckTimeout/3, 100*time.Millisecond))
	}
	switch {
	case o.Mode != Sync && o.Mode != Async:
		return fmt.Errorf("%w: Mode %d", ErrOptions, o.Mode)
	case o.PeerLoss != Degrade && o.PeerLoss != Block:
		return fmt.Errorf("%w: PeerLoss %d", ErrOptions, o.PeerLoss)
	case o.PeerAckTimeout < 0:
		return fmt.Errorf("%w: PeerAckTimeout %v is negative", ErrOptions, o.PeerAckTimeout)
	case o.StallTimeout < 0:
		return fmt.Errorf("%w: StallTimeout %v is negative", ErrOptions, o.StallTimeout)
	case o.GoAloneRetry < 0:
		return fmt.Errorf("%w: GoAloneRetry %v is negative", ErrOptions, o.GoAloneRetry)
	case o.RetainBytes < 0:
		return fmt.Errorf("%w: RetainBytes %d is negative", ErrOptions, o.RetainBytes)
	case o.RetainAge < 0:
		return fmt.Errorf("%w: RetainAge %v is negative", ErrOptions, o.RetainAge)
	case o.MaxUnackedGroups < 0:
		return fmt.Errorf("%w: MaxUnackedGroups %d is negative", ErrOptions, o.MaxUnackedGroups)
	case o.DeadSessionAfter < 0:
		return fmt.Errorf("%w: DeadSessionAfter %v is negative", ErrOptions, o.DeadSessionAfter)
	case o.ListenAddr == "" && len(o.ExtraListenAddrs) > 0:
		return fmt.Errorf("%w: ExtraListenAddrs without ListenAddr", ErrOptions)
	case o.PeerAddr == "" && len(o.ExtraPeerAddrs) > 0:
		return fmt.Errorf("%w: ExtraPeerAddrs without PeerAddr", ErrOptions)
	case (o.ListenAddr != "" || o.PeerAddr != "") && len(o.PairKey) < 16:
		return fmt.Errorf("%w: PairKey has %d bytes, replication needs at least 16", ErrOptions, len(o.PairKey))
	}
	return nil
}

// Key layout (see the package doc).
var (
	keyMarker        = []byte("m/marker")
	keyEpoch         = []byte("m/epoch")
	keyHistPrefix    = []byte("m/hist/")
	keyInconsistent  = []byte("m/inconsistent")
	keyOutdated      = []byte("m/outdated")
	keyPeerOutdated  = []byte("m/peer-outdated")
	keyPruned        = []byte("m/pruned")
	logPrefix        = []byte("l/")
	userPrefix       = []byte("u/")
	userPrefixEnd    = []byte("u0") // '0' follows '/'
	logPrefixEnd     = []byte("l0")
	crcTable         = crc64.MakeTable(crc64.ECMA)
	errCommitterDone = errors.New("wip: committer stopped")
)

func logKey(lsn uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), logPrefix...), lsn)
}
func userKey(k []byte) []byte {
	return append(append(make([]byte, 0, len(userPrefix)+len(k)), userPrefix...), k...)
}

// roll extends the rolling checksum with one entry.
func roll(prev, epoch, lsn uint64, ops []byte) uint64 {
	var h [16]byte
	binary.BigEndian.PutUint64(h[:8], epoch)
	binary.BigEndian.PutUint64(h[8:], lsn)
	c := crc64.Update(prev, crcTable, h[:])
	return crc64.Update(c, crcTable, ops)
}

// Log value: epoch u64, csum u64, unix_nano u64, ops.
func encodeLogValue(e entry) []byte {
	b := make([]byte, 0, 24+len(e.ops))
	b = putU64(b, e.epoch)
	b = putU64(b, e.csum)
	b = putU64(b, uint64(e.unixNano))
	return append(b, e.ops...)
}

func decodeLogValue(lsn uint64, v []byte) (entry, error) {
	if len(v) < 24 {
		return entry{}, fmt.Errorf("%w: log entry %d has %d bytes", ErrCorrupt, lsn, len(v))
	}
	return entry{lsn: lsn, epoch: binary.BigEndian.Uint64(v), csum: binary.BigEndian.Uint64(v[8:]),
		unixNano: int64(binary.BigEndian.Uint64(v[16:])), ops: append([]byte(nil), v[24:]...)}, nil
}

// Batch collects writes that commit atomically under one LSN.
type Batch struct {
	ops []byte
	n   int
}

// NewBatch returns an empty batch.
func (s *Store) NewBatch() *Batch { return &Batch{} }

// Set records key=value.
func (b *Batch) Set(key, value []byte) {
	b.ops = append(b.ops, opSet)
	b.ops = putBytes(b.ops, key)
	b.ops = putBytes(b.ops, value)
	b.n++
}

// Delete records the removal of key.
func (b *Batch) Delete(key []byte) {
	b.ops = append(b.ops, opDelete)
	b.ops = putBytes(b.ops, key)
	b.n++
}

// Len is the number of operations in the batch.
func (b *Batch) Len() int { return b.n }

// applyOps writes ops into a pebble batch under the user prefix.
func applyOps(pb *pebble.Batch, ops []byte) error {
	var err error
	werr := walkOps(ops, func(kind byte, k, v []byte) {
		if err != nil {
			return
		}
		if kind == opSet {
			err = pb.Set(userKey(k), v, nil)
		} else {
			err = pb.Delete(userKey(k), nil)
		}
	})
	if werr != nil {
		return werr
	}
	return err
}

// Role is the replication role of a store.
type Role int

const (
	Secondary Role = iota
	Primary
)

func (r Role) String() string {
	if r == Primary {
		return "primary"
	}
	return "secondary"
}

type commitReq struct {
	ops  []byte
	lsn  uint64
	done chan error
}

// group is one group commit: consecutive entries under one epoch.
type group struct {
	entries []entry
	bytes   int
	formed  time.Time // when the committer formed it (Latencies.Commit)
	durable time.Time // when the local fsync completed (zero until then)
	reqs    []*commitReq
	// answered: a stall failed the store while the group's write was under
	// way, and its callers were told (failStalled); guarded by Store.mu.
	answered bool
}

func (g *group) first() uint64 { return g.entries[0].lsn }
func (g *group) last() uint64  { return g.entries[len(g.entries)-1].lsn }

// Store is the replicated WIP store. See the package doc.
type Store struct {
	o   Options
	log *zap.Logger
	clk clock.Clock
	dir string
	db  *pebble.DB

	backupMu sync.Mutex       // one Backup at a time
	po       *pebble.Options  // as opened, defaults filled; for snapshot sstables
	corr     *corruptWatch    // pebble's corruption reports (corrupt.go)
	bg       *bgBackoff       // paces pebble's retries of failed flushes (bgbackoff.go)
	pacer    *compactionPacer // holds pebble's compactions after a failed one (compactpace.go)
	// markMu orders a promotion's role change and epoch record against the
	// corruption resync's Inconsistent mark (checkCorruption), so that a
	// primary is never marked Inconsistent on disk. Held across their
	// writes, unlike mu: a disk that hangs there must not hold Status or
	// the stall watch, which take mu.
	markMu      sync.Mutex
	stallChecks atomic.Uint64 // the stall loop's timer armed (at start and after each turn), for tests

	queue   chan *commitReq
	closing chan struct{}
	kick    chan struct{} // wakes the supervisor
	redial  chan struct{} // Demote: the dial loop stops backing off and dials now
	wg      sync.WaitGroup

	mu   sync.Mutex
	cond *sync.Cond // broadcast on every change of the fields below
	// Lineage, owned by whoever writes (committer while primary, applier while secondary).
	role         Role
	closed       bool
	failed       error
	epoch        uint64 // promoted epoch (primary) or epoch of the last applied entry
	lsn          uint64 // last LSN assigned (primary) or durably applied (secondary)
	durable      uint64 // last locally durable LSN
	csum         uint64 // rolling checksum after lsn
	history      []histEntry
	inconsistent bool
	outdated     bool // this node knows it missed commits
	peerOutdated bool // persisted: commits were acknowledged without the peer
	stallOver    bool // failed on a stall, and a disk probe has completed since (Status.StallOver)
	aloneLSN     uint64
	inflight     int
	tail         []*group // groups the peer has not acked (at most ~64 MiB once durable)
	tailBytes    int
	waiting      []*group // locally durable or not, not yet released to callers
	// Replication view.
	ww           *writeWatch // pebble's background write errors and stalls
	stall        *stallWatch // local writes under way (stall.go)
	writing      *group      // the committer's group whose local write is under way
	peerAcked    uint64
	peerState    PeerState
	cannotAck    string // why the pair says the peer cannot ack (PeerCannotAck); "" when not
	peerLSN      uint64 // primary's LSN as last seen (secondary) / peer's LSN at handshake (primary)
	snapDone     int64
	snapTotal    int64
	lastErr      error
	lastErrAt    time.Time             // when lastErr was set (setLastErrLocked)
	nextDial     time.Time             // a secondary's dial loop: its next attempt, while it waits
	dialErr      string                // and what ended the last one
	rejectLogs   map[string]*rejectLog // by class: the log of rejections, rate-limited
	peerLastSeen time.Time
	sess         *session
	counters     Counters
	lat          latencies

	// snapFailed is the primary's last snapshot that failed reading its
	// store ("" none), and snapFailedAt the corruption it reported then:
	// while that report stands, no snapshot is sent (snapRefusalLocked).
	// snapRefusals counts the snapshots refused since.
	snapFailed, snapFailedAt string
	snapRefusals             uint64
	// snapOutDone and snapOutTotal: the snapshot this primary sends, bytes
	// sent and its estimated size (Status.PeerSnapshotPercent).
	snapOutDone, snapOutTotal int64

	// goAloneRefusal is the fence-peer hook's refusal while commits wait
	// past PeerAckTimeout in Degrade mode ("" otherwise): the supervisor
	// reports each new one once (log, event, Counters.GoAloneRefused).
	goAloneRefusal string

	// A primary's peer is in sync, for commits, from the moment the stream
	// has caught up (goInSyncLocked). It is shown in sync, and the persisted
	// peer-outdated flag cleared, once the peer has acked syncAckLSN, the
	// last LSN sent then (confirmInSyncLocked): until then it may still be
	// applying (or ingesting a snapshot) and hold less than was sent.
	syncAckLSN uint64
	syncShown  bool

	// Retained log accounting (guarded by retMu).
	retMu    sync.Mutex
	retained []retainedEntry
	retBytes int64
	// peerHolds: every LSN up to it of this store's lineage is durable on
	// the other node as well: as primary, what the peer acked; as
	// secondary, the primary's durable LSN (Data, version 3 on). Zero after
	// Open and a snapshot: nothing is known until the peer says so.
	peerHolds uint64
	// heldN, heldBytes: how many of the oldest retained entries are at or
	// below peerHolds, and their size (so retain never rescans them).
	heldN     int
	heldBytes int64

	lnClosers   []func() error
	conns       map[net.Conn]struct{} // replication connections, closed by Close
	listenAddrs []string
	ctxOnce     sync.Once
	ctxv        context.Context
}

// waitSessionGone waits until no replication session is registered.
func (s *Store) waitSessionGone() {
	s.mu.Lock()
	for s.sess != nil && !s.closed {
		s.cond.Wait()
	}
	s.mu.Unlock()
}

type retainedEntry struct {
	lsn   uint64
	size  int64
	at    int64
	epoch uint64
	csum  uint64
}

// minFormat is the oldest pebble format a store runs with: the first that
// has virtual sstables, which excising a snapshot's span needs.
const minFormat = pebble.FormatVirtualSSTables

// defaultPebbleOptions tunes pebble for the WIP store's load: small values
// written once and soon overwritten or deleted (job state, checkpoints), and
// the retained log, a FIFO window trimmed with range deletions. Pebble's
// defaults (4 MiB memtables, 64 MiB Lbase) flush and recompact that data
// many times over; on the 2-vCPU appliance the compactions of both nodes
// compete with the commit path for CPU (measured: 63 % of the primary's and
// 66 % of the secondary's CPU in compactions under wipbench at 64 writers).
// Larger memtables let most state die in memory, and a larger Lbase keeps
// the LSM shallow. Memory bound: MemTableSize x MemTableStopWritesThreshold
// = 256 MiB per store at most.
//
// Data blocks of 32 KiB (pebble's default is 4 KiB) and index blocks of
// 256 KiB, as CockroachDB runs pebble: pebble writes a flush's or a
// compaction's output one block per write(2), and with 4 KiB blocks those
// system calls, and the per-block index entries, compression calls and
// checksums, were about a sixth of each node's CPU under wipbench.
// Measured at 64 writers (docs/benchmarks.md): CPU per commit -27..-31 %
// and sync throughput +31..+42 % with a new key per commit, -10..-15 %
// and +6..+15 % with keys overwritten. The cost is on reads, which the WIP
// store does at start and resume, not per commit: a point read
// decompresses a 32 KiB block, not a 4 KiB one. It applies to the tables
// written from then on: an older store's tables are rewritten as they are
// compacted, with no format change.
func defaultPebbleOptions() *pebble.Options {
	po := &pebble.Options{
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 4,
		LBaseMaxBytes:               512 << 20,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
	}
	po.TargetFileSizes[0] = 16 << 20
	for i := range po.Levels {
		po.Levels[i].BlockSize = 32 << 10
		po.Levels[i].IndexBlockSize = 256 << 10
	}
	return po
}

// Open opens (creating if needed) the store in dir. It opens as Secondary:
// not writable until Promote. It starts the replication goroutines.
func Open(dir string, o Options) (*Store, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	po := defaultPebbleOptions()
	if o.PebbleOptions != nil {
		po = o.PebbleOptions.Clone()
	}
	bg := newBGBackoff(o.Clock)
	po.FS = withBGBackoff(withEINTRRetry(o.FS), bg) // bgbackoff.go, eintr.go
	if po.FormatMajorVersion < minFormat {
		// Snapshots are ingested with IngestAndExcise (recv.go), which
		// needs virtual sstables. Opening an older store ratchets it up.
		po.FormatMajorVersion = minFormat
	}
	if po.Logger == nil {
		po.Logger = pebbleLogger{o.Logger.Named("pebble").Sugar()}
	}
	s, err := openDB(dir, o, po, o.EmptyIsInconsistent)
	if err != nil && o.SetAsideCorrupt && isCorrupt(err) {
		met := plainCorruption(err).Error()
		aside, aerr := setAside(po.FS, dir, o.Clock.Now())
		if aerr != nil {
			return nil, fmt.Errorf("%w; setting the store aside failed: %v", err, aerr)
		}
		o.Logger.Error("the WIP store met corruption when it was opened; it was set aside and a new, inconsistent store resyncs from the primary by snapshot",
			zap.String("aside", aside), zap.String("corruption", met))
		if s, err = openDB(dir, o, po, true); err != nil {
			return nil, fmt.Errorf("wip: the store set aside at %s after corruption at open (%s): the new store: %w", aside, met, err)
		}
		w := s.corr
		w.mu.Lock()
		w.desc = "met at open: " + met + "; the store was set aside at " + aside
		w.resync = true // openDB marked the new store Inconsistent
		w.mu.Unlock()
		w.poke() // checkCorruption reports it
		s.emit(Event{Kind: EventSetAside, Detail: met, File: aside})
	}
	if err != nil {
		return nil, err
	}
	s.bg = bg
	s.peerState = PeerDisconnected
	// What was loaded, logged below: read now, before the replication
	// goroutines may change it.
	epoch, lsn, inc, outd := s.epoch, s.lsn, s.inconsistent, s.outdated
	s.wg.Add(4)
	go s.committer()
	go s.supervisor()
	go s.stallLoop()
	go s.probeLoop()
	if err := s.startRepl(); err != nil {
		_ = s.Close()
		return nil, err
	}
	s.log.Info("wip store opened", zap.String("dir", dir), zap.Uint64("epoch", epoch),
		zap.Uint64("lsn", lsn), zap.Bool("inconsistent", inc), zap.Bool("outdated", outd))
	return s, nil
}

// openDB opens pebble in dir with po and loads the store's state. A store
// that holds nothing of a pair is marked Inconsistent when
// inconsistentIfEmpty (Options.EmptyIsInconsistent).
func openDB(dir string, o Options, po *pebble.Options, inconsistentIfEmpty bool) (*Store, error) {
	po = po.Clone()
	// Corruption is reported to the store, which goes on (corrupt.go);
	// pebble's default listener would end the process through Fatalf.
	corr := newCorruptWatch()
	el := pebble.EventListener{DataCorruption: corr.report}
	// Background write errors and stalls: bounded in the log, kept for
	// Status (writewatch.go).
	ww := newWriteWatch(o.Logger, o.Clock)
	ww.listener(&el)
	// A compaction (or pebble's read of a table's properties) that the
	// disk fails on a table's block met what a Get would have met: the
	// corruption watch hears of it too.
	wwBackground := el.BackgroundError
	el.BackgroundError = func(err error) {
		corr.unreadable(err)
		wwBackground(err)
	}
	// Pebble's compactions, held for a while after one fails
	// (compactpace.go); one scheduler per pebble.Open.
	pacer := newCompactionPacer(o.Clock)
	pacer.listener(&el)
	po.Experimental.CompactionScheduler = pacer
	if po.EventListener != nil {
		el = pebble.TeeEventListener(*po.EventListener, el)
	}
	po.EventListener = &el
	po.EnsureDefaults()
	db, err := pebble.Open(dir, po)
	if err != nil {
		pacer.Unregister() // pebble may have registered it before it failed
		return nil, fmt.Errorf("wip: open %s: %w", dir, err)
	}
	// An interrupted snapshot's unfinished sstables: the store is still
	// Inconsistent and the next snapshot writes them again. Removing them
	// is tidying: the next snapshot clears the directory again and fails,
	// with the error, if it cannot.
	if err := po.FS.RemoveAll(po.FS.PathJoin(dir, snapTmpDir)); err != nil {
		o.Logger.Warn("leftover snapshot tables not removed", zap.String("dir", dir), zap.Error(err))
	}
	s := &Store{o: o, log: o.Logger, clk: o.Clock, dir: dir, db: db, po: po, corr: corr, ww: ww, pacer: pacer,
		stall: newStallWatch(),
		queue: make(chan *commitReq, 1024), closing: make(chan struct{}), kick: make(chan struct{}, 1), redial: make(chan struct{}, 1)}
	s.cond = sync.NewCond(&s.mu)
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("wip: open %s: %w", dir, err)
	}
	if inconsistentIfEmpty && len(s.history) == 0 && s.lsn == 0 && !s.inconsistent {
		if err := s.setFlag(keyInconsistent, true); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("wip: open %s: marking the empty store inconsistent: %w", dir, err)
		}
		s.inconsistent = true
		o.Logger.Warn("an empty WIP store on a node that has been in a pair: inconsistent, not promotable until it receives a snapshot", zap.String("dir", dir))
	}
	return s, nil
}

// isCorrupt reports whether Open failed on on-disk corruption: a bad
// checksum, or a table the disk cannot read.
func isCorrupt(err error) bool {
	return pebble.IsCorruptionError(err) || errors.Is(err, ErrCorrupt) || unreadableTable(err) != nil
}

// setAside renames the store in dir to dir.corrupt-<now, UTC>, unless a
// store set aside earlier is still there, and moves its quarantine files
// (the losing suffixes of a divergence, which the operator may still
// replay) back into a new dir, where the daemon's alarm says they are.
func setAside(fs vfs.FS, dir string, now time.Time) (string, error) {
	parent, base := fs.PathDir(dir), fs.PathBase(dir)
	names, err := fs.List(parent)
	if err != nil {
		return "", err
	}
	for _, n := range names {
		if strings.HasPrefix(n, base+asideSuffix) {
			return "", fmt.Errorf("a store set aside earlier is still at %s: remove it (or move it off this disk) once it has been looked at, and start again", fs.PathJoin(parent, n))
		}
	}
	aside := dir + asideSuffix + now.UTC().Format("20060102T150405Z")
	if err := fs.Rename(dir, aside); err != nil {
		return "", err
	}
	if err := fs.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	q := fs.PathJoin(aside, "quarantine")
	if _, err := fs.Stat(q); err == nil {
		if err := fs.Rename(q, fs.PathJoin(dir, "quarantine")); err != nil {
			return "", fmt.Errorf("moving the quarantine files back: %w", err)
		}
	}
	if err := syncDir(fs, parent); err != nil {
		return "", err
	}
	return aside, syncDir(fs, dir)
}

// asideSuffix follows the store directory's name in a set-aside store's.
const asideSuffix = ".corrupt-"

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type pebbleLogger struct{ *zap.SugaredLogger }

func (l pebbleLogger) Infof(format string, args ...any)  { l.SugaredLogger.Debugf(format, args...) }
func (l pebbleLogger) Errorf(format string, args ...any) { l.SugaredLogger.Errorf(format, args...) }
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.SugaredLogger.Errorf(format, args...)
	panic(fmt.Sprintf(format, args...))
}

func (s *Store) getMeta(k []byte) ([]byte, bool, error) {
	v, c, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	_ = c.Close()
	return out, true, nil
}

// load reads the lineage and the retained-log index.
func (s *Store) load() error {
	if v, ok, err := s.getMeta(keyMarker); err != nil {
		return err
	} else if ok {
		if len(v) != 24 {
			return fmt.Errorf("%w: marker has %d bytes", ErrCorrupt, len(v))
		}
		s.epoch, s.lsn, s.csum = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), binary.BigEndian.Uint64(v[16:])
	}
	if v, ok, err := s.getMeta(keyEpoch); err != nil {
		return err
	} else if ok && len(v) == 8 && binary.BigEndian.Uint64(v) > s.epoch {
		s.epoch = binary.BigEndian.Uint64(v)
	}
	s.durable = s.lsn
	for _, f := range []struct {
		k []byte
		p *bool
	}{{keyInconsistent, &s.inconsistent}, {keyOutdated, &s.outdated}, {keyPeerOutdated, &s.peerOutdated}} {
		_, ok, err := s.getMeta(f.k)
		if err != nil {
			return err
		}
		*f.p = ok
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: keyHistPrefix, UpperBound: append(append([]byte(nil), keyHistPrefix...), 0xff)})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != len(keyHistPrefix)+8 || len(v) != 8 {
			_ = it.Close()
			return fmt.Errorf("%w: history key %q", ErrCorrupt, k)
		}
		s.history = append(s.history, histEntry{binary.BigEndian.Uint64(k[len(keyHistPrefix):]), binary.BigEndian.Uint64(v)})
	}
	if err := it.Close(); err != nil {
		return err
	}
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: logPrefix, UpperBound: logPrefixEnd})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		lsn := binary.BigEndian.Uint64(k[len(logPrefix):])
		e, err := decodeLogValue(lsn, it.Value())
		if err != nil {
			_ = it.Close()
			return err
		}
		s.retained = append(s.retained, retainedEntry{lsn: lsn, size: int64(len(it.Value())), at: e.unixNano, epoch: e.epoch, csum: e.csum})
		s.retBytes += int64(len(it.Value()))
	}
	return it.Close()
}

// Close stops every goroutine and closes pebble. Commits still waiting fail
// with ErrClosed (their outcome is unknown to the caller).
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	if s.bg != nil {
		s.bg.close() // a retry waiting would hold pebble's Close
	}
	sess := s.sess
	for c := range s.conns {
		_ = c.Close()
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	for _, c := range s.lnClosers {
		_ = c()
	}
	if sess != nil {
		sess.close(ErrClosed)
	}
	s.wg.Wait()
	s.mu.Lock()
	for _, g := range s.waiting {
		for _, r := range g.reqs {
			r.done <- ErrClosed
		}
	}
	s.waiting = nil
	s.mu.Unlock()
	// A Backup that started before closed was set finishes first; one
	// that starts later sees closed and does nothing.
	s.backupMu.Lock()
	defer s.backupMu.Unlock()
	return s.db.Close()
}

// Commit commits b atomically under a new LSN and returns it once durable
// according to the mode (see the package doc). ctx bounds the wait only: a
// commit whose wait was abandoned may still become durable.
func (s *Store) Commit(ctx context.Context, b *Batch) (uint64, error) {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return 0, ErrClosed
	case s.failed != nil:
		err := s.failed
		s.mu.Unlock()
		return 0, err
	case s.role != Primary:
		s.mu.Unlock()
		return 0, ErrNotPrimary
	}
	s.inflight++
	s.mu.Unlock()
	req := &commitReq{ops: append([]byte(nil), b.ops...), done: make(chan error, 1)}
	select {
	case s.queue <- req:
	case <-ctx.Done():
		s.doneInflight(1)
		return 0, ctx.Err()
	case <-s.closing:
		s.doneInflight(1)
		return 0, ErrClosed
	}
	select {
	case err := <-req.done:
		if err != nil {
			return 0, err
		}
		return req.lsn, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	}
}

func (s *Store) doneInflight(n int) {
	s.mu.Lock()
	s.inflight -= n
	s.cond.Broadcast()
	s.mu.Unlock()
}

// committer is the single writer while primary: it forms groups, assigns
// LSNs, hands the group to the sender, commits it with pebble.Sync and
// queues it for release. It does not wait for the peer: the next group is
// formed and written while the previous one waits for its ack.
func (s *Store) committer() {
	defer s.wg.Done()
	for {
		var req *commitReq
		select {
		case req = <-s.queue:
		case <-s.closing:
			s.drainQueue(ErrClosed)
			return
		}
		reqs := []*commitReq{req}
		size := len(req.ops)
	fill:
		for size < s.o.MaxGroupBytes && len(reqs) < 4096 {
			select {
			case r := <-s.queue:
				reqs = append(reqs, r)
				size += len(r.ops)
			default:
				break fill
			}
		}
		s.commitGroup(reqs)
		s.holdPipeline()
	}
}

// holdPipeline waits while MaxUnackedGroups groups wait for the peer's ack
// (sync mode, peer in sync). Every change that may end the wait (an ack,
// degrade, fencing, demotion, a session ending, a failure, Close)
// broadcasts s.cond. Measured at 64 writers on one disk: sync groups of
// twice the size, so half the fsyncs on each node (docs/benchmarks.md).
func (s *Store) holdPipeline() {
	s.mu.Lock()
	for len(s.waiting) >= s.o.MaxUnackedGroups && s.failed == nil && !s.closed &&
		s.role == Primary && s.peerState == PeerInSync && s.needPeerLocked() {
		if s.o.testHolding != nil {
			s.o.testHolding(len(s.waiting))
		}
		s.cond.Wait()
	}
	s.mu.Unlock()
}

func (s *Store) drainQueue(err error) {
	for {
		select {
		case r := <-s.queue:
			r.done <- err
			s.doneInflight(1)
		default:
			return
		}
	}
}

func (s *Store) fail(reqs []*commitReq, err error) {
	for _, r := range reqs {
		r.done <- err
	}
	s.doneInflight(len(reqs))
}

func (s *Store) commitGroup(reqs []*commitReq) {
	formed := s.clk.Now()
	now := formed.UnixNano()
	s.mu.Lock()
	if s.failed != nil || s.role != Primary {
		err := s.failed
		if err == nil {
			err = ErrNotPrimary
		}
		s.mu.Unlock()
		s.fail(reqs, err)
		return
	}
	g := &group{reqs: reqs, formed: formed}
	epoch, lsn, csum := s.epoch, s.lsn, s.csum
	for _, r := range reqs {
		lsn++
		csum = roll(csum, epoch, lsn, r.ops)
		r.lsn = lsn
		g.entries = append(g.entries, entry{lsn: lsn, epoch: epoch, csum: csum, unixNano: now, ops: r.ops})
		g.bytes += len(r.ops) + 24
	}
	s.lsn, s.csum = lsn, csum
	// Publish before the local write: the sender streams the group to the
	// peer while our fsync runs, so the two fsyncs overlap (DRBD does the same).
	s.tail = append(s.tail, g)
	s.tailBytes += g.bytes
	s.writing = g
	s.cond.Broadcast()
	s.mu.Unlock()

	id := s.stall.begin(localWrite{kind: writeCommit, first: g.first(), last: g.last(), since: formed})
	pb := s.db.NewBatchWithSize(2*g.bytes + 4096)
	err := s.writeEntries(pb, g.entries)
	var written time.Time
	if err == nil {
		written = s.clk.Now()
		err = syncCommit(pb)
	}
	_ = pb.Close()
	s.stall.end(id)
	durable := s.clk.Now()
	s.mu.Lock()
	s.writing = nil
	if err != nil {
		s.failLocked(fmt.Errorf("%w: commit of LSN %d..%d: %v", ErrFailed, g.first(), g.last(), err))
		// Drop the unpublished group from the tail so it is never sent.
		s.removeTail(g)
		s.cond.Broadcast()
		answered := g.answered
		s.mu.Unlock()
		if !answered {
			s.fail(reqs, s.failed)
		}
		return
	}
	if g.answered {
		// The write came back after a stall had failed the store and told
		// the callers the outcome is unknown: durable here now, but the
		// store acknowledges nothing more (CommittedLSN stays DurableLSN).
		s.log.Warn("a stalled write came back after the store had failed",
			zap.Uint64("first_lsn", g.first()), zap.Uint64("last_lsn", g.last()), zap.Duration("took", durable.Sub(formed)))
		s.cond.Broadcast()
		s.mu.Unlock()
		return
	}
	s.durable = g.last()
	g.durable = durable
	s.lat.observe(durable, localSyncHist, durable.Sub(written))
	s.waiting = append(s.waiting, g)
	s.counters.Commits += uint64(len(reqs))
	s.counters.Groups++
	s.releaseLocked()
	s.cond.Broadcast()
	s.mu.Unlock()
	s.kickSupervisor()
}

// syncCommit commits pb with pebble.Sync. Pebble panics on a failed WAL
// write or sync ("fatal commit error") because the database cannot go on;
// the store turns that into ErrFailed so waiters get an error, nothing more
// is acknowledged, and the daemon can stop cleanly.
func syncCommit(pb *pebble.Batch) error { return commitWith(pb, pebble.Sync) }

func commitWith(pb *pebble.Batch, o *pebble.WriteOptions) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = recovered(r)
		}
	}()
	return pb.Commit(o)
}

// recovered turns the value of a pebble panic into an error, prefixed
// "pebble: " once (pebble's own fatal messages carry it already).
func recovered(r any) error {
	msg := fmt.Sprint(r)
	if strings.HasPrefix(msg, "pebble: ") {
		return errors.New(msg)
	}
	return errors.New("pebble: " + msg)
}

// applyNoSyncWait applies pb with pebble.Sync without waiting for the WAL
// sync (see syncWait); panics are turned into errors as in commitWith.
func applyNoSyncWait(db *pebble.DB, pb *pebble.Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = recovered(r)
		}
	}()
	return db.ApplyNoSyncWait(pb, pebble.Sync)
}

func syncWait(pb *pebble.Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = recovered(r)
		}
	}()
	return pb.SyncWait()
}

func (s *Store) removeTail(g *group) {
	for i, t := range s.tail {
		if t == g {
			s.tailBytes -= g.bytes
			s.tail = append(s.tail[:i], s.tail[i+1:]...)
			return
		}
	}
}

// writeEntries adds entries, their log records, the marker and retention
// pruning to pb. The caller commits pb with pebble.Sync.
func (s *Store) writeEntries(pb *pebble.Batch, es []entry) error {
	for _, e := range es {
		if err := applyOps(pb, e.ops); err != nil {
			return fmt.Errorf("entry %d: %w", e.lsn, err)
		}
		if err := pb.Set(logKey(e.lsn), encodeLogValue(e), nil); err != nil {
			return err
		}
	}
	last := es[len(es)-1]
	var m [24]byte
	binary.BigEndian.PutUint64(m[:], last.epoch)
	binary.BigEndian.PutUint64(m[8:], last.lsn)
	binary.BigEndian.PutUint64(m[16:], last.csum)
	if err := pb.Set(keyMarker, m[:], nil); err != nil {
		return err
	}
	return s.retain(pb, es)
}

// notePeerHolds records that the other node holds every LSN up to lsn of
// this store's lineage durably (see peerHolds).
func (s *Store) notePeerHolds(lsn uint64) {
	s.retMu.Lock()
	s.peerHolds = max(s.peerHolds, lsn)
	s.retMu.Unlock()
}

// earlyPruneBytes is how much log the other node holds before it is
// pruned: small enough that the records are still in the memtable, whose
// flush then drops them with the range deletion, large enough that a range
// deletion is written about once per MiB of log, not in every group.
func (s *Store) earlyPruneBytes() int64 { return min(1<<20, s.o.RetainBytes/8) }

// retain records es in the retained-log index and deletes, in the same
// batch, the oldest entries that no one can need:
//   - early, those the other node holds durably (peerHolds), once they
//     amount to earlyPruneBytes. They are what a peer that disconnects
//     resumes after, and what a promoted secondary's old primary rejoins
//     from. So in a pair in sync each node's window is about a MiB, and
//     the log records die in the memtable instead of being flushed and
//     compacted: the log is half of what the LSM would take in (measured
//     in docs/benchmarks.md);
//   - when the window has outgrown RetainBytes or RetainAge, its oldest
//     entries (below): a peer away that long is caught up by snapshot.
//
// The current batch's own entries are never pruned. The last pruned entry's
// (epoch, LSN, checksum) is kept so lineage comparison still works at the
// window's edge.
//
// Pruning cuts the window back to 7/8 of the limit, so a range deletion is
// written about once per RetainBytes/8 of log (or RetainAge/8 of time), not
// in every group commit. One range deletion per group made every commit
// after the first RetainBytes of log pay for thousands of range tombstones:
// measured, a store's commit rate at 64 writers fell from ~25k/s to ~3.5k/s
// once 256 MiB had been written, and stayed there.
func (s *Store) retain(pb *pebble.Batch, es []entry) error {
	s.retMu.Lock()
	defer s.retMu.Unlock()
	for _, e := range es {
		sz := int64(24 + len(e.ops))
		s.retained = append(s.retained, retainedEntry{lsn: e.lsn, size: sz, at: e.unixNano, epoch: e.epoch, csum: e.csum})
		s.retBytes += sz
	}
	// n entries of gone bytes go.
	n, gone := 0, int64(0)
	for old := len(s.retained) - len(es); s.heldN < old && s.retained[s.heldN].lsn <= s.peerHolds; s.heldN++ {
		s.heldBytes += s.retained[s.heldN].size
	}
	if s.heldBytes >= s.earlyPruneBytes() {
		n, gone = s.heldN, s.heldBytes
	}
	now := es[len(es)-1].unixNano
	if s.retBytes > s.o.RetainBytes || now-s.retained[0].at > int64(s.o.RetainAge) {
		keepBytes := s.o.RetainBytes - s.o.RetainBytes/8
		keepAge := int64(s.o.RetainAge - s.o.RetainAge/8)
		for n < len(s.retained)-1 && (s.retBytes-gone > keepBytes || now-s.retained[n].at > keepAge) {
			gone += s.retained[n].size
			n++
		}
	}
	if n == 0 {
		return nil
	}
	s.retBytes -= gone
	if n >= s.heldN {
		s.heldN, s.heldBytes = 0, 0
	} else {
		s.heldN, s.heldBytes = s.heldN-n, s.heldBytes-gone
	}
	last := s.retained[n-1]
	if err := pb.DeleteRange(logKey(s.retained[0].lsn), logKey(last.lsn+1), nil); err != nil {
		return err
	}
	var p [24]byte
	binary.BigEndian.PutUint64(p[:], last.epoch)
	binary.BigEndian.PutUint64(p[8:], last.lsn)
	binary.BigEndian.PutUint64(p[16:], last.csum)
	if err := pb.Set(keyPruned, p[:], nil); err != nil {
		return err
	}
	s.retained = append(s.retained[:0:0], s.retained[n:]...)
	return nil
}

// retainedRange returns the first and last LSN held in the log (0,0 if
// none), its size, and what the other node is known to hold (peerHolds).
func (s *Store) retainedRange() (first, last uint64, bytes int64, holds uint64) {
	s.retMu.Lock()
	defer s.retMu.Unlock()
	if len(s.retained) == 0 {
		return 0, 0, 0, s.peerHolds
	}
	return s.retained[0].lsn, s.retained[len(s.retained)-1].lsn, s.retBytes, s.peerHolds
}

// needPeerLocked: must commits wait for the peer's ack?
func (s *Store) needPeerLocked() bool {
	return s.o.Mode == Sync && !s.peerOutdated
}

// releaseLocked acknowledges waiting groups, in LSN order, whose conditions
// hold, and trims the sender's tail.
func (s *Store) releaseLocked() {
	n := 0
	var now time.Time
	for _, g := range s.waiting {
		needPeer := s.needPeerLocked()
		if needPeer && s.peerAcked < g.last() {
			break
		}
		if now.IsZero() {
			now = s.clk.Now()
		}
		s.lat.observe(now, commitHist, now.Sub(g.formed))
		if needPeer {
			s.lat.observe(now, peerWaitHist, now.Sub(g.durable))
		}
		if !needPeer && s.o.Mode == Sync && g.last() > s.aloneLSN {
			s.aloneLSN = g.last()
		}
		for _, r := range g.reqs {
			r.done <- nil
		}
		s.inflight -= len(g.reqs)
		n++
	}
	if n > 0 {
		s.waiting = append(s.waiting[:0:0], s.waiting[n:]...)
	}
	// Keep up to 64 MiB of durable groups for a lagging sender; older ones
	// are read back from the log.
	// Groups the peer acked are no longer needed by the sender either.
	n = 0
	for n < len(s.tail) && s.tail[n].last() <= s.durable && (s.tail[n].last() <= s.peerAcked || s.tailBytes > 64<<20) {
		s.tailBytes -= s.tail[n].bytes
		n++
	}
	for i := 0; i < n; i++ {
		s.tail[i] = nil // let the group be collected
	}
	s.tail = s.tail[n:]
}

func (s *Store) kickSupervisor() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// supervisor enforces PeerAckTimeout: when the oldest locally durable group
// has waited that long for the peer, Degrade persists that the peer is
// Outdated and releases the waiters; Block raises an event and keeps waiting.
func (s *Store) supervisor() {
	defer s.wg.Done()
	var timer clock.Timer
	blockedReported := false
	cannotAck := "" // the last PeerCannotAck logged
	for {
		var tc <-chan time.Time
		s.mu.Lock()
		active := len(s.waiting) > 0 && s.needPeerLocked()
		if !active {
			s.goAloneRefusal = "" // nothing waits: the next refusal is news
		}
		var wait time.Duration
		if active {
			wait = s.o.PeerAckTimeout - s.clk.Since(s.waiting[0].durable)
			if s.cannotAck != "" && s.peerState != PeerInSync && s.role == Primary && wait > 0 {
				if s.cannotAck != cannotAck {
					cannotAck = s.cannotAck
					s.log.Info("the peer cannot ack (the pair says so): on-peer-loss applies now, not after peer-ack-timeout",
						zap.String("why", cannotAck), zap.Duration("waited", s.clk.Since(s.waiting[0].durable)))
				}
				wait = 0
			}
		}
		if active && wait <= 0 && (s.role != Primary || s.failed != nil) {
			// Demoted, or failed, while groups wait for a peer that does
			// not ack: they are never acknowledged (not even alone: a
			// failed store cannot persist that the peer is Outdated), and
			// Demote need not wait for them. Durable here, they may be on
			// the peer too.
			err := ErrUnacknowledged
			if s.role == Primary {
				err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, s.failed)
			}
			s.failWaitingLocked(err)
			s.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		if wait <= 0 && active && s.o.PeerLoss == Degrade {
			err := s.mayGoAlone()
			if err == nil {
				s.mu.Lock()
				s.goAloneRefusal = ""
				s.mu.Unlock()
				s.degrade()
				continue
			}
			if errors.Is(err, ErrFenced) {
				s.mu.Lock()
				s.failWaitingLocked(ErrUnacknowledged)
				s.mu.Unlock()
			}
			// Not allowed to go on alone (yet): keep the commits waiting
			// and ask again shortly.
			s.mu.Lock()
			isNew := s.goAloneRefusal != err.Error()
			if isNew { // reported once per reason
				s.goAloneRefusal = err.Error()
				s.counters.GoAloneRefused++
			}
			s.mu.Unlock()
			if isNew {
				s.log.Warn("peer did not ack within peer-ack-timeout; not going on alone", zap.Error(err))
				s.emit(Event{Kind: EventPeerAckTimeout, Detail: "commits wait for the peer: not going on alone: " + err.Error()})
			}
			wait = s.o.GoAloneRetry
		}
		switch {
		case !active:
			blockedReported = false
		case wait <= 0:
			if !blockedReported {
				blockedReported = true
				s.log.Warn("peer did not ack within peer-ack-timeout; commits block", zap.Duration("timeout", s.o.PeerAckTimeout))
				s.emit(Event{Kind: EventPeerAckTimeout, Detail: "commits block until the peer acks"})
			}
		default:
			if timer != nil {
				timer.Stop()
			}
			timer = s.clk.NewTimer(wait)
			tc = timer.C()
		}
		select {
		case <-s.kick:
		case <-s.corr.kick:
			// Not on s.kick, which every commit group sends.
			s.checkCorruption()
		case <-tc:
		case <-s.closing:
			if timer != nil {
				timer.Stop()
			}
			return
		}
	}
}

// failWaitingLocked answers every group waiting for the peer with err.
func (s *Store) failWaitingLocked(err error) {
	n := 0
	for _, g := range s.waiting {
		for _, r := range g.reqs {
			r.done <- err
		}
		n += len(g.reqs)
	}
	s.waiting = nil
	s.inflight -= n
	s.cond.Broadcast()
	if n > 0 {
		s.log.Warn("commits the peer never acknowledged answered with an error (fenced, demoted or failed)", zap.Int("commits", n), zap.Error(err))
	}
}

// mayGoAlone asks the fence-peer hook, turning a panic into a refusal.
func (s *Store) mayGoAlone() (err error) {
	if s.o.MayGoAlone == nil {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("MayGoAlone panicked: %v", r)
		}
	}()
	return s.o.MayGoAlone()
}

// degrade marks the peer Outdated durably, then releases the waiters.
func (s *Store) degrade() {
	pb := s.db.NewBatch()
	_ = pb.Set(keyPeerOutdated, nil, nil)
	err := s.syncCommitMeta("peer-outdated", pb)
	_ = pb.Close()
	if err != nil {
		s.mu.Lock()
		s.failLocked(fmt.Errorf("%w: persisting peer-outdated: %v", ErrFailed, err))
		s.cond.Broadcast()
		s.mu.Unlock()
		return
	}
	// The alarm goes out before the first commit is acknowledged alone.
	s.log.Warn("peer marked outdated; continuing alone", zap.Duration("peer_ack_timeout", s.o.PeerAckTimeout))
	s.emit(Event{Kind: EventPeerOutdated, Detail: "peer did not ack within peer-ack-timeout; commits go on without it"})
	s.mu.Lock()
	s.peerOutdated = true
	s.counters.Degradations++
	sess := s.sess
	s.releaseLocked()
	s.cond.Broadcast()
	s.mu.Unlock()
	if sess != nil {
		// A peer that is connected but does not ack is dropped: it will learn
		// that it is Outdated when it reconnects.
		sess.close(errors.New("wip: peer did not ack within peer-ack-timeout"))
	}
}

// failLocked fails the store with err, a local write or sync that did not
// succeed (the first failure stays): nothing more is committed, applied or
// acknowledged, Status.Failed says why and EventFailed reports it once.
// Pebble's commit pipeline does not come back from a failed WAL write or
// sync, so only a new Open (a restart, once the cause is dealt with: a
// full file system, a failing disk) clears it.
func (s *Store) failLocked(err error) {
	if s.failed != nil {
		return
	}
	s.failed = err
	s.setLastErrLocked(err)
	s.log.Error("the store has failed: it commits and acknowledges nothing more until it is reopened", zap.Error(err))
	s.emit(Event{Kind: EventFailed, Detail: err.Error(), Err: err})
}

func (s *Store) emit(e Event) {
	if s.o.Events != nil {
		s.o.Events(e)
	}
}

// Get returns the value of a user key.
func (s *Store) Get(key []byte) ([]byte, bool, error) {
	v, c, err := s.db.Get(userKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.readErr(err)
	}
	out := append([]byte(nil), v...)
	return out, true, c.Close()
}

// Scan calls fn for every user key with the prefix, in key order. The slices
// are valid only during the call. An error from fn ends the scan and is
// returned.
func (s *Store) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return s.scan(prefix, false, fn)
}

// ScanReverse is Scan in descending key order.
func (s *Store) ScanReverse(prefix []byte, fn func(key, value []byte) error) error {
	return s.scan(prefix, true, fn)
}

func (s *Store) scan(prefix []byte, reverse bool, fn func(key, value []byte) error) error {
	lo := userKey(prefix)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return s.readErr(err)
	}
	first, next := it.First, it.Next
	if reverse {
		first, next = it.Last, it.Prev
	}
	for first(); it.Valid(); next() {
		if err := fn(it.Key()[len(userPrefix):], it.Value()); err != nil {
			_ = it.Close()
			return err
		}
	}
	return s.readErr(it.Close())
}

func prefixEnd(p []byte) []byte {
	e := bytes.Clone(p)
	for i := len(e) - 1; i >= 0; i-- {
		if e[i] != 0xff {
			e[i]++
			return e[:i+1]
		}
	}
	return nil
}

// PromoteOption modifies Promote.
type PromoteOption func(*promoteCfg)

type promoteCfg struct{ force, peerGone, peerFollows bool }

// PeerGone tells Promote that the pair has judged the old primary dead
// (silent on every heartbeat path, tie-breaker confirmed): a replication
// session that still looks open (a frozen or powered-off primary sends no
// FIN, and TCP notices only after its own timeouts) is closed instead of
// vetoing the promotion. Every other I5 check still holds: an Outdated or
// Inconsistent store is refused unless Force is given too. A store that is
// merely behind (the primary had LSNs this node had not applied yet) is
// promotable with PeerGone in Sync mode: a sync primary acknowledges a commit
// only once this node holds it durable, or after persisting that this node
// is Outdated, which this node learns at its next handshake, before any
// catching up. What it lacks was therefore never acknowledged; the old
// primary quarantines it when it returns. In Async mode behind means lost
// acknowledged commits, and the refusal stands. (Both nodes must run the
// same mode, as docs/configuration.md says.)
func PeerGone() PromoteOption { return func(c *promoteCfg) { c.peerGone = true } }

// PeerFollows, with PeerGone, says the peer is not dead: it handed the
// role over (a switchover) or is alive as a secondary (the pair's
// election at start), and connects as secondary. A PeerGone
// promotion in Sync mode with Degrade marks the peer Outdated at once, so
// that the new primary's commits do not each wait peer-ack-timeout for a
// node that is gone; with PeerFollows it does not. The commits wait for
// the peer's acknowledgement as in any session (it reconnects within the
// dial backoff), and the peer stays promotable: a new primary that dies
// right after the handover leaves the old one able to take the role back
// with nothing acknowledged missing. A peer that does not come back within
// PeerAckTimeout is marked Outdated then, as on any peer loss.
func PeerFollows() PromoteOption { return func(c *promoteCfg) { c.peerFollows = true } }

// Force promotes even an Outdated, Inconsistent or behind store (the operator
// accepts the loss named in the warning).
func Force() PromoteOption { return func(c *promoteCfg) { c.force = true } }

// Promote makes the store primary under epoch, which must exceed every epoch
// it has seen. The epoch and the history entry are durable before Promote
// returns (I1, I3).
func (s *Store) Promote(ctx context.Context, epoch uint64, opts ...PromoteOption) error {
	var cfg promoteCfg
	for _, o := range opts {
		o(&cfg)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.role == Primary {
		s.mu.Unlock()
		return fmt.Errorf("%w: already primary in epoch %d", ErrNotPromotable, s.epoch)
	}
	if epoch <= s.epoch {
		s.mu.Unlock()
		return fmt.Errorf("%w: epoch %d is not above the highest seen, %d", ErrNotPromotable, epoch, s.epoch)
	}
	if s.failed != nil {
		// Not even forced: pebble would refuse to persist the epoch.
		err := s.failed
		s.mu.Unlock()
		return fmt.Errorf("%w: %v (reopen the store once the cause is dealt with)", ErrNotPromotable, err)
	}
	var why []string
	if s.inconsistent {
		why = append(why, fmt.Sprintf("inconsistent (snapshot %d/%d bytes)", s.snapDone, s.snapTotal))
	}
	if s.outdated {
		why = append(why, fmt.Sprintf("outdated (local LSN %d, primary was at least at %d)", s.lsn, s.peerLSN))
	}
	if c := s.corr.promoteRefusal(); c != "" {
		why = append(why, c)
	}
	if s.peerLSN > s.lsn && !s.outdated && !(cfg.peerGone && s.o.Mode == Sync) {
		why = append(why, fmt.Sprintf("behind (local LSN %d, primary at %d)", s.lsn, s.peerLSN))
	}
	stale := s.sess != nil && cfg.peerGone && len(why) == 0
	if s.sess != nil && !stale {
		why = append(why, "connected to a live primary")
	}
	if len(why) > 0 && !cfg.force {
		s.mu.Unlock()
		return fmt.Errorf("%w: %v", ErrNotPromotable, why)
	}
	sess := s.sess
	s.mu.Unlock()
	if stale {
		s.log.Info("closing the session of a primary the pair judged dead")
		sess.close(errors.New("wip: promoted: the primary is gone"))
		s.waitSessionGone()
	}
	if len(why) > 0 {
		s.log.Warn("forced promotion; commits of the old primary may be lost", zap.Strings("reasons", why))
		if sess != nil {
			sess.close(errors.New("wip: forced promotion"))
			s.waitSessionGone()
		}
	}
	// Stop the secondary loop before writing as primary.
	s.markMu.Lock()
	defer s.markMu.Unlock()
	s.mu.Lock()
	// What may have changed since the checks above, while a session
	// closed: a failure, Close, or a corruption report and its mark.
	var late string
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.failed != nil:
		late = s.failed.Error()
	case cfg.force:
	case s.inconsistent:
		late = "inconsistent (marked for a resync)"
	default:
		late = s.corr.promoteRefusal()
	}
	if late != "" {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotPromotable, late)
	}
	s.role = Primary // the dialer stops; a session still applying was closed above
	first := s.lsn + 1
	s.mu.Unlock()
	pb := s.db.NewBatch()
	var e8, f8 [8]byte
	binary.BigEndian.PutUint64(e8[:], epoch)
	binary.BigEndian.PutUint64(f8[:], first)
	_ = pb.Set(keyEpoch, e8[:], nil)
	_ = pb.Set(append(append([]byte(nil), keyHistPrefix...), e8[:]...), f8[:], nil)
	_ = pb.Delete(keyInconsistent, nil)
	_ = pb.Delete(keyOutdated, nil)
	// Promoted because the old primary is gone: the peer cannot ack
	// anything, so in Degrade mode it is Outdated from the first commit
	// on, durably, instead of after a peer-ack-timeout stall of every
	// commit of the new primary (the resumed jobs' first checkpoints).
	aloneAtOnce := cfg.peerGone && !cfg.peerFollows && s.o.Mode == Sync && s.o.PeerLoss == Degrade
	if aloneAtOnce {
		_ = pb.Set(keyPeerOutdated, nil, nil)
	}
	err := s.syncCommitMeta("epoch", pb)
	_ = pb.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.role = Secondary
		return fmt.Errorf("wip: persisting epoch %d: %w", epoch, err)
	}
	if aloneAtOnce && !s.peerOutdated {
		s.peerOutdated = true
		s.counters.Degradations++
		s.log.Warn("promoted with the old primary gone: peer marked outdated; commits go on alone")
		s.emit(Event{Kind: EventPeerOutdated, Detail: "promoted with the old primary gone; commits go on without it"})
	}
	s.epoch = epoch
	s.history = append(s.history, histEntry{epoch, first})
	s.inconsistent, s.outdated = false, false
	s.peerAcked, s.cannotAck = 0, ""
	s.peerState = PeerDisconnected
	s.cond.Broadcast()
	s.log.Info("promoted", zap.Uint64("epoch", epoch), zap.Uint64("first_lsn", first))
	return nil
}

// PeerCannotAck tells a primary what the pair knows and its replication
// session cannot: the peer will not ack (its store has failed, and its
// heartbeat says so). Commits waiting for a peer that is not in sync then
// meet on-peer-loss at once instead of after PeerAckTimeout: Degrade asks
// MayGoAlone and goes on alone, Block keeps them waiting and says so. It
// changes nothing while the peer is in sync, or on a secondary; the peer
// going in sync, Promote and Demote clear it. why is logged.
func (s *Store) PeerCannotAck(why string) {
	s.mu.Lock()
	if s.role != Primary || s.peerState == PeerInSync || s.cannotAck != "" {
		s.mu.Unlock()
		return
	}
	s.cannotAck = why
	s.mu.Unlock()
	s.kickSupervisor()
}

// Redial makes a secondary that is backing off between dial attempts dial
// the peer now. The pair calls it when the peer's heartbeat says it has
// just become active: a primary that waits for this node (PeerFollows)
// then waits one heartbeat, not the rest of a backoff of up to 2 s. It
// does nothing on a primary, or when the dial loop is not backing off.
func (s *Store) Redial() {
	select {
	case s.redial <- struct{}{}:
	default:
	}
}

// Demote makes the store secondary again: new commits fail with
// ErrNotPrimary, in-flight ones are waited for (or ctx ends the wait), the
// peer session is dropped and the store dials the peer as a secondary.
func (s *Store) Demote(ctx context.Context) error {
	s.mu.Lock()
	if s.role != Primary {
		s.mu.Unlock()
		return nil
	}
	s.role, s.cannotAck = Secondary, ""
	s.cond.Broadcast() // a committer held by the pipeline bound fails the queue at once
	s.Redial()         // a dial loop in a backoff from before the promotion
	s.kickSupervisor() // groups past PeerAckTimeout are failed at once
	s.corr.poke()      // a corrupt store resyncs as a secondary
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	for s.inflight > 0 && ctx.Err() == nil && !s.closed {
		s.cond.Wait()
	}
	sess := s.sess
	n := s.inflight
	s.cond.Broadcast()
	s.mu.Unlock()
	if sess != nil {
		sess.close(errors.New("wip: demoted"))
	}
	if n > 0 {
		return fmt.Errorf("wip: demote: %d commits still in flight: %w", n, ctx.Err())
	}
	s.log.Info("demoted")
	return nil
}
