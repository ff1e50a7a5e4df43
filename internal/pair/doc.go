// Package pair is the pair state machine: it decides when a node promotes,
// when it steps down, and how the pair never runs two actives.
//
// # Contract
//
// The machine is pure, like etcd raft's RawNode: no I/O, no goroutines, no
// clock reads. The daemon's event loop owns one *Machine and calls
//
//	New(cfg, persisted, now) (*Machine, Ready, error)
//	Step(now, event) (Ready, error)   // bad or impossible input: an error naming it, no state change
//	Tick(now) Ready                    // at Ready.Wake at the latest
//	Status() Status
//
// and carries out Ready.Actions in order. An ActPersist must be durable
// (fsynced) before the action after it starts: that is how I1 (the epoch is
// durable before any outward act) and I3 (persist, then claim; stop, release,
// then persist) hold. When an action fails the daemon drops the rest of the
// list and reports ActionFailed. Ready.Advert is what every heartbeat carries
// from now on; when it changes the daemon sends one at once (a handover or a
// new epoch must not wait for the next interval). When Ready.Stopped is set
// the daemon sends one last heartbeat with the Advert and exits.
//
// Goroutines: none. The machine is not safe for concurrent use.
//
// # States
//
//	starting  after boot; passive until the peer is heard or startup-wait expires
//	          (a node alone at boot promotes only after startup-wait, with the
//	          tie-breaker's confirmation, and never when it knows it is outdated)
//	passive   substates syncing, in-sync, outdated, inconsistent (replication)
//	active    substates paired, alone, handing-over
//	stopping  orderly stop without handover: runtime pausing
//	stopped   the daemon may exit
//
// Maintenance is a persisted flag across states, shared through the advert
// with a generation number (the higher generation wins; two changes from the
// same generation resolve to on): no automatic promotion, no health switchover, no election. The
// self-fence still applies in maintenance: it is what keeps a node that was
// not told about maintenance from meeting a second active.
//
// # Rules
//
// Promotion (I1, I5): epoch = the smallest epoch above every epoch seen that
// this node owns (node 1 odd, node 2 even), so two nodes promoting at once
// never share an epoch and "higher epoch wins" always leaves one. Actions:
// persist, set replication primary, claim the VIP, start the runtime. It
// happens when (a) the peer is silent (nothing on any path for dead-after),
// the tie-breaker confirms (a gateway answered a probe started after the
// silence began, nobody else answers ARP for the VIP, the witness granted if
// configured) and this node is not outdated, inconsistent or in maintenance;
// (b) the peer hands over (planned switchover); (c) both nodes are passive,
// hear each other (fresh adverts, newer than suspect-after, HearPeer set), no
// commits streamed in for dead-after, and this node ranks first (eligible,
// more data, owner of the newest epoch, lower node id: both compute the same
// answer from the same adverts);
// (d) the operator forces it with an explicit data-loss acknowledgement.
//
// Demotion: an active that hears an active peer in a higher epoch stops the
// runtime, releases the VIP, persists, at once. A passive peer's higher epoch is
// only remembered (it may come from a fenced term).
//
// Self-fence: an active that has not heard, for fence-after, a peer that
// hears it (every advert carries HearPeer: the sender heard the receiver
// within suspect-after) and holds no fresh confirmation of its tie-breaker
// steps down. Timing.Validate enforces
//
//	suspect-after + fence-after + fence-margin <= dead-after
//	suspect-after + probe-timeout <= fence-after
//
// Let t0 be the passive's last hearing of the active. The passive's
// heartbeats stop saying HearPeer at t0 + suspect-after, so the active's lease
// stops being renewed then and it is fenced by t0 + suspect-after +
// fence-after + fence-margin; the passive promotes at t0 + dead-after at the
// earliest. That holds for a symmetric cut and for one-way loss (the active
// still hears the passive) alike. The second line lets a healthy active have
// its answer before it must fence. An election between two passives also
// needs both to hear each other. The network delay of the last heartbeat must
// fit in fence-margin.
//
// Split heartbeats: when every heartbeat path is cut but both nodes still
// reach the gateway, the passive's ARP probe for the VIP finds it answered and
// it does not promote (alarm split-heartbeat). If the data LAN is partitioned
// between the nodes as well, only a witness can decide; without one both may
// become active (the same limit as any two-node cluster without a quorum
// device: see etcd raft's doc.go on two-member clusters).
//
// A daemon that dies while its host lives (SIGKILL, panic) leaves the VIP in
// its kernel, which keeps answering ARP: the passive then does not promote
// either (it cannot tell that from split heartbeats) and raises
// split-heartbeat. The takeover waits for the restarted daemon, which
// releases a leftover VIP in New before anything else (run tandemd with
// systemd Restart=always), or for the watchdog, which resets the host once
// nobody kicks it. We prefer that to two hosts answering for the VIP.
//
// VIP conflict: an ARP answer for the VIP from another MAC while we hold it is
// re-announced and alarmed. If at the same time the peer has not been heard
// for suspect-after, it is most likely the peer, promoted in the instant
// between our claim and its last ARP probe; without heartbeats the two
// cannot compare epochs, so node 2 steps down and node 1 keeps the role.
//
// Freeze/thaw: ClockJump forward by fence-after or more makes an active step
// down before acting again (its lease may have run out while frozen); if the
// peer did not promote, the election gives the role back at once in a new
// epoch. All tie-breaker answers older than the jump are discarded.
//
// Health failover: the active's data LAN (carrier, or every gateway
// unreachable) down for health-hold while the peer advertises a healthy LAN
// for as long starts a switchover, unless either node took the role within
// health-cooldown (a flapping link does not bounce the role).
//
// Planned switchover (operator, health, or Stop on an active with an in-sync
// peer): graceful stop of the runtime, wait for RuntimePaused, wait until the
// peer acked every commit (ActAwaitPeerAck, Replication{PeerAckedAll}), release
// the VIP, persist passive, advertise Handover; the peer promotes on the first
// heartbeat carrying it, with the store told that the old active follows
// (ActSetReplication.PeerFollows), unless the old active's advert says
// NoFollow (its store failed: Replication.Failed), when it goes on alone at
// once. If the peer goes silent or the timeout passes before
// the VIP is released, the runtime restarts where it was; if the handover is
// not taken within switchover-timeout, the old active takes the role back in a
// new epoch (higher than anything the peer may have picked meanwhile, or lower
// and then it demotes when it hears the peer): exactly one active either way.
//
// A switchover asked for on the passive (AdminSwitchover there): when this
// node is in sync and the peer is heard active, it advertises WantActive.
// The active answers each request once: with the planned switchover above
// as soon as switchoverBlocked allows it (its view of the peer may trail
// the peer's own by a few ms), or, still blocked after half of
// switchover-timeout, with switchover-failed naming the reason and the
// Refused bit in its adverts while the request stands. Promotion withdraws
// a served request; so do Refused, switchover-timeout, the peer going
// silent or leaving the active role, and this node falling out of sync,
// each with switchover-failed (a peer that predates the bits ignores the
// request, and only the timeout ends it). Either node can thus start the
// drill's legs.
//
// Alarms: a condition alarm (outdated, maintenance, path-down:<path>,
// lan-down, peer-lost, no-failover, split-heartbeat) stands while its
// condition holds and the machine clears it when it ends. An event alarm
// (forced, switchover-failed, handover-refused, vip-conflict, same-epoch,
// persist-failed, takeover-failed, release-failed, action-failed:<kind>)
// records something that happened; it stands until the operator
// acknowledges it (Admin AdminAckAlarm; refused for a condition alarm) and
// is raised again if the event recurs. AlarmLatched tells the daemon which
// is which; the acknowledgement changes nothing but the alarm.
//
// Timing profiles are in Profile; Timing.Set applies config overrides by
// their YAML names; Timing.Validate names each field.
//
// # Tests
//
// testdata/scenarios/*.txt are scripts run against two machines on a
// simulated network, clock, gateway, witness and replication link
// (sim_test.go plays the daemon); the harness fails any instant at which both
// nodes act as active unless the script says allow-dual. Rewrite the expected
// output with go test -run TestScenarios -rewrite and review the diff.
// TestSafetyRandom runs random fault sequences; FuzzStep feeds arbitrary
// events; BenchmarkHostLossDetection reports simulated detection p50/p99.
package pair
