// Package wip is the replicated work-in-progress store of a Tandem pair: a
// pebble database on each node, written only by the primary and replicated
// batch by batch to the secondary (DRBD protocol C at the level of pebble
// batches; ARCHITECTURE.md sections 4 and 5).
//
// # Contract
//
//   - Open opens the store as Secondary: reads work, Commit fails with
//     ErrNotPrimary. Promote(epoch) makes it Primary after the epoch and the
//     history entry (epoch, first LSN) are durable (I1, I3); it refuses with
//     ErrNotPromotable, naming why, a store that is Inconsistent (mid-snapshot),
//     Outdated (told by the primary that it missed commits), corrupt (below),
//     failed (below; even with Force()),
//     behind the primary it last heard, or still connected to a live
//     primary, unless Force() is given (I5). Demote waits for in-flight
//     commits.
//   - A single committer goroutine takes queued batches, assigns each an LSN,
//     extends the rolling checksum (CRC-64/ECMA over epoch, LSN, operations),
//     and writes the user operations, one log record per LSN, and the marker
//     (epoch, LSN, checksum) in one pebble batch committed with pebble.Sync: a
//     group commit. The group is handed to the replication sender before the
//     local fsync starts, so the local and the remote fsync overlap, and the
//     committer commits and sends the next group while this one waits for
//     the peer's ack. The pipeline is bounded (MaxUnackedGroups, default 2
//     groups waiting for the peer): beyond it the committer holds the next
//     group back, and the writers queueing meanwhile form one larger group,
//     one fsync on each node. Unbounded, 64 writers made many small groups
//     and twice the fsyncs; bounded, sync throughput rose by about a fifth
//     and sync p99 fell by about a third (docs/benchmarks.md).
//   - Commit returns (I2) when the batch is durable locally and, in Sync mode
//     while the peer is not Outdated, when the peer acked it durable. Async
//     returns after the local fsync. In Sync mode, when the oldest waiting
//     group has waited PeerAckTimeout: Degrade asks the fence-peer hook
//     (Options.MayGoAlone) and, if it agrees, persists "peer outdated",
//     raises EventPeerOutdated, and then releases the waiters (commits go on
//     alone); if it refuses, the commits keep waiting and it is asked again.
//     Block raises EventPeerAckTimeout and keeps them waiting. The hook is
//     what stops a primary that was frozen, and replaced meanwhile, from
//     acknowledging a commit alone that its successor never saw. A peer
//     that catches up again is told (InSync frame) the LSN that ends the part
//     it missed, and clears its own Outdated flag once it holds it. The
//     primary's commits wait for the peer again from the moment its stream
//     has caught up; Status shows the peer in sync (EventPeerInSync), and
//     the primary clears its persisted "peer outdated", only once the peer
//     has acked the last LSN sent then: until that ack the peer may still be
//     applying it, or ingesting a snapshot, and Status says catching-up.
//   - A local write or sync that fails (a full file system, a failing
//     disk) fails the store: pebble's commit pipeline does not come back
//     from a failed WAL write. The waiting commits get ErrFailed, nothing
//     more is committed, applied or acknowledged, and Promote refuses the
//     store even with Force(). Status.Failed says why and EventFailed
//     reports it once. A failed primary's CommittedLSN is its DurableLSN:
//     the group whose write failed was never acknowledged, so the peer's
//     ack of DurableLSN means it holds every commit, and the daemon hands
//     the role to it. Only a new Open, once the cause is dealt with,
//     clears the failure; what was synced before it is all there. A
//     primary told by the pair that its peer's store failed
//     (PeerCannotAck) does not wait PeerAckTimeout for that peer's acks:
//     Degrade goes on alone at once (MayGoAlone permitting). A failed
//     primary never goes on alone (it cannot persist that the peer is
//     Outdated): commits that waited PeerAckTimeout for the peer get
//     ErrOutcomeUnknown.
//   - A local write that does not return is a failure too: a hung disk
//     or path blocks the writer in the kernel, and nothing but the clock
//     tells it from a slow one. Every local write (a primary's group, a
//     batch a secondary applies, a record of the store's own) is under a
//     stall watch; one that has taken StallTimeout (20 s by default; from
//     half of it on, Status.SlowWrite names it, and Counters.SlowWrites
//     counts it, with a warning in the log) fails the store with
//     ErrStalled (wrapped in ErrFailed), as above. Time the process did
//     not run (the watch's loop, which does no I/O, a poll or more late:
//     a paused VM) is not counted. A store that writes nothing of its
//     own (an idle pair) probes its disk every half of StallTimeout
//     (1..10 s; probe.go): 8 bytes written in place into
//     tandem-disk-probe in its directory and synced, under the same
//     watch, so a disk that hangs under an idle store fails it too
//     (Counters.DiskProbes counts the probes). The callers of the group whose write is
//     stuck get ErrOutcomeUnknown at once (the group went to the peer
//     before the local write, so the peer may hold it), the commits
//     queued behind it and every later one get the failure, and Demote is
//     not held by them. The stuck goroutine stays in its write until the
//     kernel returns it (then nothing is acknowledged: the store stays
//     failed), and Close waits for it: only the process's exit ends a
//     write the kernel never completes. A pebble write stall (memtables
//     full while flushes fail or lag) holds commits the same way, so it
//     fails the store after StallTimeout too.
//   - A sync interrupted by a signal is made again (eintr.go). Pebble's
//     vfs calls fdatasync(2), sync_file_range(2), fallocate(2) and
//     readahead(2) straight from golang.org/x/sys/unix, which, unlike
//     package os, return EINTR; a local disk's file system does not, but
//     an interruptible one (FUSE, NFS mounted intr, Lustre) does when the
//     thread gets a signal while it waits, and pebble takes it for a
//     fatal commit error. The store's file system retries these on EINTR
//     (never on another error: a failed fsync is not retried). Close is
//     not retried (Linux frees the descriptor anyway).
//   - Pebble's own writes (flushes, compactions) that fail are not a
//     failed store: a full file system whose WAL still has room fails
//     them first, pebble retries, and commits stall once the memtables
//     are full, until a flush succeeds. Pebble retries a failed flush at
//     once, thousands of times a second; the store's file system paces
//     the retries (bgbackoff.go: a flush's or a compaction's next file
//     waits 50 ms after a failure, doubling to 1 s, until one syncs).
//     A compaction that fails reading its inputs (EIO, a corrupt block)
//     fails before it writes a file and is picked again at once too; the
//     store's compaction scheduler holds compactions after any failure
//     (compactpace.go: none starts for 50 ms, doubling to 1 s, until one
//     succeeds). Status carries the run of errors (BackgroundError, since when, how
//     many, which jobs fail, whether the file system is full) and the
//     stall (StalledSince, StallReason); a run ends when every kind of
//     job that failed in it has succeeded again (a flush does not end a
//     run of failed compactions). Counters.BackgroundErrors counts the
//     errors of all runs. The log holds the first error of a run and then
//     at most a line a minute, and a line when pebble writes again.
//   - Replication: the secondary dials the peer's listener (PeerAddr) with
//     exponential backoff (20 ms .. 2 s); the primary accepts on ListenAddr
//     and serves one session at a time (a new one replaces the old). With
//     one address per HA link (ExtraListenAddrs, ExtraPeerAddrs) the
//     secondary moves to the next address whenever a session ends or a
//     dial fails, and backs off only when every address has failed in a
//     row. A session that ran and was not refused starts the backoff again
//     from 20 ms; a refusal (a reject frame, or a snapshot this store could
//     not take) counts as a failure however far the session ran (the
//     schedule: dialSchedule in repl.go). While it waits, Status.NextDialAt
//     says when it tries next and DialError what ended the last attempt;
//     Status.LastError and LastErrorAt keep the last refusal or rejection. A cut cable sends no FIN: the secondary's connections carry
//     TCP_USER_TIMEOUT and keepalive probes set from DeadSessionAfter, and
//     an idle secondary repeats its last ack every DeadSessionAfter/4, so
//     its TCP notices a dead link within about DeadSessionAfter (acks are
//     cumulative: a repeated one changes nothing, for any version). The
//     dialing side is the secondary because it is the one that needs data;
//     a primary never dials, so two primaries never replicate to each other.
//     After the handshake the primary compares lineages and sends a plan:
//     stream from the peer's LSN+1 if it is in the retained log; a snapshot
//     if the peer is Inconsistent or behind the retained window; diverged if
//     the peer committed in an epoch the primary never had at that LSN, holds
//     LSNs the primary never committed, or its checksum differs. LSNs the
//     primary has sent and is still writing (a group goes to the peer
//     before the local fsync) are not a divergence: if the peer's checksum
//     is the one in the primary's tail, the stream goes on after them. On
//     divergence the secondary exports the losing suffix (its retained log
//     records from the fork on) to dir/quarantine/q-<time>-lsn<a>-<b>.jsonl,
//     reports ErrDiverged naming the epochs and LSN ranges (EventDiverged),
//     marks itself Inconsistent and resyncs by snapshot (I4).
//   - A snapshot is a pebble snapshot of the user keys at a marker LSN, sent
//     in key order. A primary that cannot read a block of its store (a
//     snapshot's or the log's) ends the session with a reject frame that
//     says so, rather than send what it read before as the whole: the
//     secondary stays Inconsistent (Status.LastError says why) and asks
//     again after the dial backoff, as after any reject. A primary whose
//     snapshot failed that way refuses the next ones at once, without
//     reading its store, while the corruption it reported then stands. The receiver persists Inconsistent and wipes its data
//     before the first pair (range deletions, then an excise of the log and
//     user key spans, which takes their files out of the LSM); it writes the pairs into sstables in
//     dir/snapshot.tmp (each synced when full), ingests them after the last
//     pair with one IngestAndExcise of the user key span, and then clears
//     the flag with the marker. An interrupted snapshot leaves an
//     Inconsistent store, whose leftover tables are removed at Open and at
//     the next snapshot, which starts again. A stream whose keys do not
//     ascend is rejected (ErrFrameMalformed). Stores run pebble format
//     FormatVirtualSSTables or later (excising needs it); opening an older
//     store ratchets it up, irreversibly.
//   - The log is retained for the other node, by what it holds, by size
//     (RetainBytes) and by age (RetainAge). Records the other node holds
//     durably go first: as primary, those the peer acked; as secondary,
//     those the primary reported durable (Data, version 3 on). No one can
//     need them: a peer resumes after what it holds, and the old primary of
//     a promoted secondary rejoins from what it held. They go in chunks of
//     about a MiB (RetainBytes/8 if smaller), so in a pair in sync each
//     window holds about a MiB and the records die in the memtable, never
//     flushed or compacted. While the other node is away or behind, the
//     window grows, and it never holds more than RetainBytes or entries
//     older than RetainAge once a commit has seen them: then it is cut back
//     to 7/8 of the limit, so a range deletion is written once per eighth of
//     the window, not in every group, and the peer is caught up by
//     snapshot. Pruning happens in the commit batches, and the last pruned
//     (epoch, LSN, checksum) is kept so the window's edge still compares.
//     A node that was out of the pair (restored from a backup, a rebuilt
//     disk) is usually behind the window, so it is caught up by snapshot.
//   - On-disk corruption (a block or file whose checksum does not match,
//     or a table's block that the disk cannot read: a read(2) of a *.sst
//     file failing with EIO, or EBADMSG/EILSEQ from a file system or
//     dm-integrity that checks data, reported as "<file>: unreadable:
//     <error>" whether a read the store serves or one of pebble's
//     compactions met it) is an error of the read that meets it, not the
//     end of the process (pebble's default): the store records the first report
//     (Status.Corruption: the file, its key bounds, the error; counted in
//     Counters.Corruptions), raises EventCorrupt, and is not promotable. A
//     secondary then persists Inconsistent, drops its session and resyncs
//     by snapshot; after it, pebble reads every level back (CheckLevels),
//     and a clean read clears the corruption (EventCorruptRepaired). A
//     repair that fails is reported and not retried: the operator moves
//     the store away. A primary stays primary, as its store may be the
//     only copy and commits read no old file; demoted (the daemon hands
//     the role to an in-sync peer), it resyncs as a secondary. Pebble reads
//     a block only when something needs it: Verify reads every block of
//     every level at full speed (the passive's read-back), Scrub every
//     live key at a given rate (the primary's, beside its commits).
//     A report about a table file the store no longer holds whole (a
//     compaction the snapshot's excise cancelled, still reading the old
//     file) is confirmed by a full read-back, on its own goroutine, before
//     anything is done: a clean read drops it.
//     A table the disk cannot read at all cannot be excised (the excise
//     reads its bounds): the snapshot's ingest fails, and the secondary
//     stays Inconsistent and asks again after the dial backoff, as after
//     any snapshot that fails on its own store (Status.LastError says
//     why), until it is reopened: Open meets the table, below.
//     Corruption met by Open itself (the meta keys, the log window; a bad
//     checksum or a table the disk cannot read) fails Open with
//     pebble's error naming the file, unless Options.SetAsideCorrupt: then
//     Open renames the store to dir.corrupt-<time> with every file (the
//     quarantine files come back), opens a new store Inconsistent in its
//     place and reports it corrupt ("met at open", naming where the old
//     one went) until a snapshot has repaired it as above (EventSetAside,
//     then EventCorrupt). One set-aside store is kept: with one there,
//     Open fails. Options.EmptyIsInconsistent makes Open mark a store that
//     holds nothing of a pair (no epoch history, LSN 0) Inconsistent: on
//     a node that has been in a pair, an empty store is not a promotable
//     one.
//   - Every rejected frame or handshake is counted (Status.Counters) and
//     reported with its reason as EventRejected (EventModeMismatch for a
//     mode refusal), and nothing of it is applied. It is logged with its
//     reason too, at most once a minute per class (kind and root cause):
//     a peer refused at every reconnect would otherwise fill the log; the
//     next line of the class counts those not logged. A data frame whose
//     checksum chain breaks ends the session. A frame cut by the peer's
//     close (EOF inside it) is a truncated frame, a rejection; a connection
//     reset or timed out inside a frame is a transport failure, like one
//     between frames: the session ends and nothing is counted. So is a
//     handshake whose first frame never begins (the peer closed or reset
//     the connection first, or stayed silent past the handshake timeout):
//     a peer that restarted or was killed, or a port scan, is not a
//     rejection on either side.
//   - Status carries latency histograms (Latencies), since Open and for the
//     last one to two minutes: per group, the commit as its writers see it
//     once grouped, the local write with its fsync (on the secondary, each
//     received batch's apply and fsync), and the wait for the peer's ack
//     after local durability. Buckets double from 50 µs (package latency), so
//     a quantile read from them is within a factor of two. A slow passive
//     disk shows as the active's PeerWait and the passive's LocalSync.
//
// # Key layout (pebble keys)
//
//	m/marker          epoch u64 | lsn u64 | csum u64   written in every commit batch
//	m/epoch           u64: the promoted epoch
//	m/hist/<epoch u64> first LSN u64 of that epoch (generation identifiers)
//	m/pruned          epoch | lsn | csum of the last pruned log record
//	m/inconsistent    present while a snapshot is incomplete (node-local)
//	m/outdated        present while this node knows it missed commits (node-local)
//	m/peer-outdated   present while the primary acknowledged commits alone (node-local)
//	l/<lsn u64>       log record: epoch u64 | csum u64 | unix_nano u64 | ops
//	u/<user key>      user data; Get/Scan/Batch work on the part after "u/"
//
// Integers are big-endian. The typed helpers (jobs, checkpoints,
// deployments, settings) keep JSON records under user keys beginning
// "job/<id>", "ckpt/<job id>/<step>", "dep/<name>" and "set/<name>"; the
// runtime keeps any other key space under its own prefix.
//
// Ops (a batch's operations; the body of log records and Data entries) are a
// sequence of
//
//	kind u8 (1 set, 2 delete) | key len u32 | key | [value len u32 | value]  (set only)
//
// # Wire format
//
// Every message is one frame:
//
//	 0               4               8       9       10
//	+---------------+---------------+-------+-------+----------------------+
//	| body length   | CRC-32C       | ver   | type  | body (length bytes)  |
//	| u32 BE        | u32 BE        | u8    | u8    |                      |
//	+---------------+---------------+-------+-------+----------------------+
//
// The CRC-32C (Castagnoli) covers ver, type and body, not the length: a
// corrupted length shows up as a checksum failure or a truncation. Bodies
// are at most 64 MiB. These constants and the type numbers are part of the
// format and never change meaning:
//
//	1 Hello     S->P  node u8 | min ver u8 | max ver u8 | nonce [32] | lineage
//	2 Welcome   P->S  node u8 | ver u8 | ver u8 | nonce [32] | lineage |
//	                  [mode u8, version 2 on] | mac [32]
//	3 Auth      S->P  [mode u8, version 2 on] | mac [32]
//	4 Plan      P->S  kind u8 (1 stream, 2 snapshot, 3 diverged) | from u64 |
//	                  primary lsn u64 | peer outdated u8 | detail (u32 len + text)
//	5 Data      P->S  first lsn u64 | count u32 | count x (epoch u64 | csum u64 |
//	                  unix_nano u64 | ops (u32 len + bytes)) |
//	                  [primary durable lsn u64, version 3 on]
//	6 SnapBegin P->S  lineage | total bytes u64 (estimate, for progress)
//	7 SnapChunk P->S  count u32 | count x (key (u32 len + bytes) | value (u32 len + bytes))
//	8 SnapEnd   P->S  pairs u64
//	9 Ack       S->P  lsn u64: every LSN up to it is durable on the secondary
//	10 InSync   P->S  lsn u64: the last LSN acknowledged without this peer
//	11 Reject   both  reason text; the sender closes the connection
//
//	lineage = epoch u64 | lsn u64 | csum u64 | flags u8 (1 inconsistent, 2 outdated) |
//	          history count u32 | count x (epoch u64 | first lsn u64)
//
// Handshake: Welcome's mac is HMAC-SHA256(pair key, "tandem-wip welcome",
// Hello body, Welcome body without mac) and Auth's is HMAC-SHA256(pair key,
// "tandem-wip auth", Hello body, whole Welcome body[, Auth's mode byte from
// version 2 on]), each part prefixed by its u32 length. Both sides
// contribute a random nonce, so neither message can be replayed into
// another session. A peer without the key is rejected with ErrAuth before
// any lineage is acted on, and counted on both sides (Counters.RejectedAuth):
// the secondary checks the Welcome first and sends a Reject that says so
// before it closes. (A secondary of an earlier build closes without a word;
// its primary counts that as a rejected frame, naming the likely cause.)
//
// Mode (version 2 on; 1 sync, 2 async): each side sends its replication
// mode, and a session between nodes of different modes is refused on both
// sides (ErrModeMismatch, EventModeMismatch, Counters.RejectedMode): a
// secondary's promotion rules assume the primary's mode (a sync secondary
// that is behind may promote, as nothing it lacks was acknowledged; under an
// async primary that would drop acknowledged commits). The secondary sends
// Auth before it refuses, so the primary learns the mode and reports too.
//
// Versions: Hello is always framed as version 1 and carries the range the
// secondary speaks; the primary picks min(both maxima) if it is not below
// both minima, else rejects naming both ranges. Every later frame carries
// the chosen version. A decoder accepts header versions up to its own N+1 so
// that a version N+1 peer's Hello is read and answered at N: versions N and
// N+1 interoperate (rolling upgrade). A version may add frame types and
// append fields to a body; a version-N decoder rejects frame types it does
// not know and a body with trailing bytes, so new types and fields are only
// sent in frames of the version that defines them (Hello, framed before the
// version is chosen, never changes).
//
// # Backups (disaster recovery, ARCHITECTURE.md section 8)
//
// A backup is a pebble checkpoint of the whole store in a directory of its
// own, wip-<UTC time>-e<epoch>-l<LSN>, with a manifest, BACKUP.json, that
// names the lineage it holds (epoch, LSN, rolling checksum, read back from
// the checkpoint itself, so it is exactly what a restore brings back). It
// is built under .partial-<name> and renamed when complete and synced: a
// directory named wip-* is always a whole backup. Every commit acknowledged
// before Backup was called is in it.
//
// On the same file system as the store, pebble hard-links the sstables: such
// a backup costs little space but survives no loss of the disk. For disaster
// recovery the directory is on another disk or a mount of the DR site, where
// the files are copied.
//
// Restore copies a backup into an empty store directory and reads every
// block of it (pebble checks each block's checksum) before renaming it into
// place; the store opened there continues the backup's lineage. A node
// restored into a running pair is behind its peer and catches up from it
// (incrementally or by snapshot) like any node that was down.
//
// # Goroutines
//
// Open starts, and Close stops (closing the listener and the session's
// connection, then waiting on a WaitGroup):
//   - committer: forms and writes groups; stops on Close.
//   - supervisor: enforces PeerAckTimeout; stops on Close.
//   - acceptLoop, one per listener (ListenAddr, ExtraListenAddrs): accepts
//     connections; each runs servePeer
//     (handshake, then the sender loop) and a readAcks goroutine; they stop
//     when the connection is closed (Close, Demote, replacement, degrade).
//   - dialLoop (PeerAddr set): while Secondary, runSecondary per session: a
//     frame reader goroutine, the applier and the acker (which also repeats
//     the last ack while idle); stop on connection close.
//   - a short-lived goroutine persisting "peer no longer outdated".
//   - ctx watcher: cancels the store's context on Close.
//
// Events are delivered synchronously from these goroutines: the callback
// must not block or call back into the Store.
package wip
