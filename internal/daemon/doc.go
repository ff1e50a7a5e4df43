// Package daemon is tandemd: it wires the WIP store, the heartbeats, the
// tie-breaker, the VIP group, the orchestration runtime and the pair state
// machine into one process, and drives the machine.
//
// # Contract
//
// Run starts every component, then hands control to the driver, the only
// goroutine that touches the pair state machine (internal/pair). The driver
// feeds the machine every input (heartbeat verdicts, gateway probes, LAN
// link changes, VIP conflicts, replication state, operator commands,
// clock jumps, SIGTERM) and carries out the actions of each Ready in order,
// one after the other: an ActPersist is fsynced before the next action
// (I1), so the epoch is durable before the VIP is claimed, and the VIP is
// claimed before the data plane listens and the runtime resumes jobs (I3).
// When an action fails the rest of that Ready is dropped and the failure is
// fed back to the machine (ActionFailed), which decides (for a failed claim:
// step down and let the peer try).
//
// Cancelling Run's context begins the orderly stop: the machine pauses the
// runtime, hands over to the peer if it is in sync, releases the VIP, and
// Run returns once the machine says Stopped. A second SIGTERM (see Main)
// exits at once, as a crash would: the peer takes over after dead-after and
// the next start removes the leftover VIP (vip.Manager.Recover).
//
// A node that crashed is recovered at start: the pair state file holds the
// epoch and maintenance flag, the WIP store its own lineage, and any VIP
// the crashed run left configured is removed before anything else, so a
// restarted node is always passive until the machine decides otherwise.
//
// The driver hands the active role over by itself (a switchover, when the
// peer is passive, alive and in sync) when the active's WIP store is
// corrupt, has failed, or its pebble work (flushes, compactions) has
// failed with I/O errors, not a full file system, for
// disk.io-error-handover (storeHandover; the last not in maintenance,
// and once an hour).
//
// The driver stops the node by itself in one case: its WIP store failed
// on a stalled disk, the disk has answered again for
// disk.restart-after-stall, and the node is passive, or active with no
// peer to hand over to, not in maintenance (stallrestart.go).
// It stops in order as above and Run returns errStallRestart, so that
// systemd (Restart=always) starts tandemd again and the store reopens; at
// most config.MaxStallRestarts times an hour (data-dir/stall-restarts.json).
//
// # Goroutines
//
//   - driver (Run's own goroutine): owns the Machine; stops when the machine
//     reports Stopped, or at once when the hard context ends.
//   - heartbeat.Run's senders and receivers: owned by the Heartbeat, stopped
//     by cancelling its context (after the driver returns).
//   - probe goroutines, one per ActProbeGateway, bounded by probe-timeout;
//     pause goroutine, one per graceful ActStopRuntime; both report back on
//     the driver's input channel or give up when the run context ends.
//   - link watcher (LAN carrier), VIP conflict forwarder: run-context owned.
//   - local API server, metrics server, data-plane servers: closed by Run on
//     the way out (the data plane by ActReleaseVIP before that).
//   - systemd watchdog pinger: run-context owned; pings only while the
//     driver loop has turned within the last watchdog interval.
//
// Run waits for every one of them before it returns.
package daemon
