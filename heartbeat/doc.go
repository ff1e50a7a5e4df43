// Package heartbeat sends the pair's authenticated heartbeat datagrams on
// every path (HA link 1, HA link 2, data LAN), measures each path
// (liveness, RTT, loss, last seen) and runs the failure detector whose
// verdicts the daemon feeds to the pair state machine as events.
//
// # Contract
//
//   - A Heartbeat never decides a role. It reports PeerAlive (with the
//     peer's latest Payload), PeerSilent, PathDown, PathUp and
//     PeerRestarted, in order, on Events, and BootRaised when it raised
//     its own boot id past the one the peer last accepted (see Freshness).
//
//   - PeerAlive comes once per round the peer sends (the first datagram
//     of the round, on whichever path it arrives), whether or not the
//     payload changed. The pair state machine counts the peer's silence,
//     and the active its lease, from the last PeerAlive; reporting only
//     payload changes left both running on stale hearings in an idle
//     pair (up to 250 ms at a 100 ms interval) and the active leaning on
//     its tie-breaker for the lease.
//
//   - The peer is silent when no valid heartbeat arrived on ANY path for
//     Config.DeadAfter (or none at all within DeadAfter of Run's start). A
//     single path that falls silent for Config.PathDeadAfter (default
//     DeadAfter) is a PathDown: an alarm, not a failover.
//
//   - Only authenticated, fresh datagrams count. A datagram that is
//     malformed, comes from a stranger (another pair id, our own node id, a
//     source other than the path's Remote), fails its HMAC, or replays a
//     sequence number or an older boot id is dropped and counted per path
//     (Stats) and changes no verdict.
//
//   - The detector (detector.go) is pure: it takes receive times and is
//     ticked at the deadlines it announces, so it is tested on the manual
//     clock; the I/O around it uses the injected Clock for every timer.
//
//   - Send and receive run on their own goroutines and never wait for
//     disk or replication: Publish only stores the payload (and wakes the
//     sender for a state change), Events is fed through an internal queue
//     so a slow reader never stalls a receiver. The one exception is a
//     boot id raise (Config.PersistBootID), which the sender persists
//     before using, while the peer drops everything it sends anyway.
//
//   - A process that was stopped or starved (SIGSTOP, paused VM) wakes up
//     with the peer's datagrams still queued in its sockets: when the
//     detector's timer fires more than an Interval late, verdicts wait one
//     more Interval so the receivers read them first (LateWakeups counts
//     it). The frozen node itself must still learn the peer's epoch from
//     those datagrams before acting: that is the state machine's part.
//
// # Goroutines
//
// Run starts and owns all of them and returns after every one has ended:
//
//   - sender: one; sends a round on every path each Interval and at once
//     when Publish changes anything but the LSNs. Stops when Run's
//     context ends.
//   - receiver: one per path, blocked in the socket's read. Stops when
//     Run closes the sockets after its context ended.
//   - watch: one; sleeps on the clock until the detector's next deadline
//     and turns it into verdicts. Stops with the context.
//   - pump: one; moves queued events to the Events channel. Stops with
//     the context; Run then closes Events.
//
// # Wire format (version 2)
//
// One UDP datagram per path per round, all integers big-endian:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    magic "THB1" 0x54484231                    |  0
//	+---------------+---------------+---------------+---------------+
//	|    version    | flags (0)     |    node id    |     role      |  4
//	+---------------+---------------+---------------+---------------+
//	|                            pair id                            |  8
//	+---------------------------------------------------------------+
//	|                        boot id (64 bits)                      | 12
//	+---------------------------------------------------------------+
//	|                 path sequence number (64 bits)                | 20
//	+---------------------------------------------------------------+
//	|                          epoch (64)                           | 28
//	+---------------------------------------------------------------+
//	|                      committed LSN (64)                       | 36
//	+---------------------------------------------------------------+
//	|                       applied LSN (64)                        | 44
//	+---------------------------------------------------------------+
//	|                        health bits (32)                       | 52
//	+---------------+---------------+-------------------------------+
//	|   handover    |    path id    |         reserved (0)          | 56
//	+---------------+---------------+-------------------------------+
//	|                       generation (64)                         | 60
//	+---------------------------------------------------------------+
//	|               sender's send time, ns (64)                     | 68
//	+---------------------------------------------------------------+
//	|          echo: last send time received from us, ns (64)       | 76
//	+---------------------------------------------------------------+
//	|          hold: ns between that receipt and this send (64)     | 84
//	+---------------------------------------------------------------+
//	|                       round number (64)                       | 92
//	+---------------------------------------------------------------+
//	|      peer boot id: the receiver's, as last accepted (64)      | 100
//	+---------------------------------------------------------------+
//	|          HMAC-SHA256 (256 bits) over bytes 0-107 || dest      | 108
//	+---------------------------------------------------------------+  140
//
// dest is the destination of the datagram as the sender addresses it (the
// receiver's Path.Local): 16 bytes of address (IPv4 in its IPv4-mapped
// form) and 2 bytes of port. It is authenticated but not sent, so a
// datagram copied to another path fails verification.
//
// Magic, Version, BodyLen, BodyLenV2, MACLen, FrameLen, FrameLenV2 and
// MaxFrameLen are part of the format. A receiver accepts any version >= 1
// whose datagram is at least FrameLen bytes: a later version may only
// append fields before the MAC, which the MAC covers and an older receiver
// ignores, so versions N and N+1 interoperate during a rolling upgrade.
// Version 1 is the layout above without the peer boot id (FrameLen, 132
// bytes, MAC over bytes 0-99); a version-2 datagram is exactly FrameLenV2
// bytes; a later one at least FrameLenV2. Boot id, sequence and round are
// never zero; the peer boot id is 0 until the sender has accepted a
// datagram from the receiver.
//
// Freshness: each sender numbers the datagrams of each path from 1 within
// a run (boot id). A receiver keeps, per path, the highest sequence and a
// 64-entry window behind it (RFC 4303 style): a sequence seen before or
// older than the window is a replay. A larger boot id means the peer
// restarted (PeerRestarted; windows reset); a smaller one is a replay.
// Boot ids must therefore grow across restarts (Config.BootID). A node
// that lost the record of its last boot id and whose clock is behind
// (a re-imaged appliance before NTP) would be refused for as long; the
// peer boot id field heals it: a node that receives, in an authenticated
// and fresh datagram, a peer boot id above its own raises its own to one
// more (after Config.PersistBootID) and restarts its sequences, and the
// peer sees a restart. A replayed or forged floor can only raise a boot
// id, never lower one, and only the pair key makes one.
//
// Payload order: the paths have different delays, so an older round can
// arrive on a slow path after a newer one on a fast path. Every datagram
// of one round carries the sender's round number (it grows with every
// round, periodic or published); a receiver takes the payload of a round
// newer than the newest it has, and counts an older one for liveness only,
// so the peer's announced epoch or role never steps back.
//
// RTT is measured without synchronised clocks, as NTP does: the peer echoes
// our last send time with how long it held it, and RTT = now - echo - hold,
// all on our own monotonic clock; Stats smooths it (gain 1/8).
//
// Datagrams are sent with DSCP CS6 (network control) so a congested queue
// that honours DSCP keeps them ahead of replication traffic.
//
// # Limits
//
// The detector cannot tell a dead peer from a partition: that is the
// tie-breaker's job (internal/tiebreak), and the state machine's. A peer
// restarted with its wall clock stepped back and no persisted BootID is
// refused as a replay (Stats.Dropped.Replay) until its own heartbeat has
// read this node's floor and raised its boot id: one round trip. A peer of
// version 1 sends no floor, so it heals only if both run version 2.
package heartbeat
