package daemon

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/latency"
	"github.com/tandem-ha/tandem/internal/pair"
	"github.com/tandem-ha/tandem/wip"
)

// eventLog keeps the most recent events and the active alarms for the API.
// It is written by the driver, the runtime and the WIP store (under mu,
// never blocking) and read by API handlers.
type eventLog struct {
	mu     sync.Mutex
	seq    uint64
	ring   []api.Event // oldest first, at most max
	max    int
	alarms map[string]api.Alarm
}

func newEventLog(max int) *eventLog {
	return &eventLog{max: max, alarms: map[string]api.Alarm{}}
}

// add records an event and returns it.
func (l *eventLog) add(now time.Time, kind, text string) api.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e := api.Event{Seq: l.seq, Time: now, Kind: kind, Text: text}
	if len(l.ring) == l.max {
		copy(l.ring, l.ring[1:])
		l.ring = l.ring[:l.max-1]
	}
	l.ring = append(l.ring, e)
	return e
}

// after returns the events with a sequence number above seq.
func (l *eventLog) after(seq uint64) []api.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := sort.Search(len(l.ring), func(i int) bool { return l.ring[i].Seq > seq })
	return append([]api.Event(nil), l.ring[i:]...)
}

// last returns the n most recent events.
func (l *eventLog) last(n int) []api.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n > len(l.ring) {
		n = len(l.ring)
	}
	return append([]api.Event(nil), l.ring[len(l.ring)-n:]...)
}

// raise sets an alarm (keeping its original time if it was already raised)
// and reports whether it is new.
func (l *eventLog) raise(now time.Time, id, severity, text string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.alarms[id]
	if !ok {
		a.Since = now
	}
	a.ID, a.Severity, a.Text, a.Latched = id, severity, text, alarmLatched(id)
	l.alarms[id] = a
	return !ok
}

// daemonAlarms are the alarms the daemon raises itself (the machine's are
// in package pair): "" for one that records an event and stands until the
// operator acknowledges it, else what clears the condition it stands for.
var daemonAlarms = map[string]string{
	"wip-quarantine":          "", // the file stays; the operator replays or discards it
	"wip-set-aside":           "", // the set-aside store stays; the operator inspects and deletes it
	"wip-mode-mismatch":       "replication connects (both nodes in the same replication mode)",
	"backup-failed":           "a backup succeeds",
	"wip-peer-needs-snapshot": "the peer holds what the retained log starts from (after its snapshot) or this node stops being primary",
	"wip-peer-outdated":       "the peer is in sync again, or this node stops being primary",
	"wip-commits-wait":        "the waiting commits are acknowledged (the peer acks them, or the store goes on alone), or this node stops being primary",
	"wip-slow-acks":           "fewer than 1 % of the last one to two minutes' commit groups wait long for the peer (a quarter to a half of peer-ack-timeout), or this node stops being primary",
	"wip-corrupt":             "a snapshot from the active has replaced this node's WIP data and a full read of the store finds no corruption",
	"disk-space":              "the WIP store's file system has a point more free than the warning level (disk.warn-free-percent)",
	"wip-write-error":         "pebble's failed jobs on the WIP store's files succeed again",
	"wip-stall":               "commits no longer wait for pebble's flushes",
	"wip-slow-write":          "the slow write completes (or the store fails: wip-failed)",
	"wip-failed":              "tandemd is restarted once the cause (a full file system, a failing disk) is dealt with: a failed store commits nothing more until it is reopened",
}

// alarmLatched reports whether the alarm id stands until acknowledged.
func alarmLatched(id string) bool {
	if clears, ok := daemonAlarms[id]; ok {
		return clears == ""
	}
	return pair.AlarmLatched(id)
}

// alarm returns the raised alarm id.
func (l *eventLog) alarm(id string) (api.Alarm, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.alarms[id]
	return a, ok
}

// take removes an alarm and returns it.
func (l *eventLog) take(id string) (api.Alarm, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.alarms[id]
	delete(l.alarms, id)
	return a, ok
}

// clear removes an alarm and reports whether it was raised.
func (l *eventLog) clear(id string) bool {
	_, ok := l.take(id)
	return ok
}

// activeAlarms returns the raised alarms, oldest first.
func (l *eventLog) activeAlarms() []api.Alarm {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]api.Alarm, 0, len(l.alarms))
	for _, a := range l.alarms {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// storeEvents turns the WIP store's events into the operator's event log
// (tandemctl status, the console) and raises the I4 alarm when a losing
// suffix was quarantined: the alarm names the file and stands until the
// operator, having dealt with it, acknowledges it (tandemctl ack-alarm
// wip-quarantine; the file holds a header line and one JSON line per lost
// batch, for replay by hand). Before acknowledgements existed only a
// restart cleared it, which on the active meant a failover.
// Rejected frames are counted in the status, not logged here: a peer or
// an attacker sending garbage must not flood the event log.
func storeEvents(ev *eventLog, clk clock.Clock) func(wip.Event) {
	return func(e wip.Event) {
		now := clk.Now()
		text := e.Kind.String()
		if e.Detail != "" {
			text += ": " + e.Detail
		}
		switch e.Kind {
		case wip.EventRejected:
			return
		case wip.EventDiverged:
			ev.raise(now, "wip-quarantine", "critical", fmt.Sprintf("histories diverged (%s); this node's losing commits are in %s", e.Detail, e.File))
			text += "; quarantined to " + e.File
		case wip.EventModeMismatch:
			// Refused at every reconnect (every 2 s at most): one event
			// while the alarm stands, not one per attempt.
			if !ev.raise(now, "wip-mode-mismatch", "critical", "no replication: "+e.Detail) {
				return
			}
		case wip.EventCorrupt:
			// Raised here, as the store reports it, and not only by the
			// driver's poll (corruptAlarm, which then says what happens
			// next and clears it): a small store's repair can be over
			// between two polls (under 20 ms in CI), and an alarm that
			// never stood would leave the operator no trace of it.
			if ev.raise(now, "wip-corrupt", "critical", "the WIP store has a corrupt file, "+e.Detail) {
				ev.add(now, "alarm", "wip-corrupt: the WIP store has a corrupt file, "+e.Detail)
			}
		case wip.EventFailed:
			// Raised as the store reports it, like wip-corrupt; the
			// driver's poll (failedAlarm) then says what happens next.
			if ev.raise(now, "wip-failed", "critical", "the WIP store has failed: "+e.Detail) {
				ev.add(now, "alarm", "wip-failed: the WIP store has failed: "+e.Detail)
			}
		case wip.EventSessionStarted:
			ev.clear("wip-mode-mismatch")
		case wip.EventSetAside:
			ev.raise(now, "wip-set-aside", "warning", fmt.Sprintf("the WIP store met corruption when tandemd opened it (%s); it was moved to %s with every file, and this node resyncs from the active by snapshot (wip-corrupt stands until then). Keep it for inspection, then delete it: while it is there, another corruption at open stops tandemd", e.Detail, e.File))
			text += "; set aside at " + e.File
		}
		ev.add(now, "replication", text)
	}
}

// slowAcksAlarm raises wip-slow-acks (a warning) while this node is the
// primary and at least 1 % of its recent groups (the last one to two
// minutes, and at least slowAcksMin of them) waited longer than a quarter
// to a half of peer-ack-timeout for the peer's ack after their own fsync:
// the margin before the active goes on alone (degrade) or stops
// committing (block) is being eaten, and a little more will cost the pair
// its second copy. The threshold is the first bucket bound at or above a
// quarter of the timeout, and only buckets wholly above it count, so every
// counted wait was longer than the text says. A slow passive disk is the
// usual cause (the passive's status shows its local sync). It clears when
// that no longer holds, at the latest two minutes after the slow acks
// stopped. It returns whether the alarm was raised or cleared.
func (d *driver) slowAcksAlarm(r api.ReplicationStatus) (raised, cleared bool) {
	const id = "wip-slow-acks"
	h := r.RecentLatency.PeerWait
	edge := -1
	for i, b := range latency.Bounds {
		if b >= d.ackTimeout/4 {
			edge = i
			break
		}
	}
	var slow uint64
	if edge >= 0 {
		for _, c := range h.Counts[edge+1:] {
			slow += c
		}
	}
	if r.Role == wip.Primary.String() && d.ackTimeout > 0 && slow >= slowAcksMin && slow*100 >= h.Count {
		text := fmt.Sprintf("%d of the last %d commit groups waited more than %v for the peer's ack after their own fsync (peer-ack-timeout %v); is the peer's disk slow (its local sync latency)?",
			slow, h.Count, latency.Bounds[edge], d.ackTimeout)
		return d.raiseAlarm(id, "warning", text), false
	}
	return false, d.clearAlarm(id)
}

// slowAcksMin is the fewest slow groups that raise wip-slow-acks: one
// stall of the peer is not a trend.
const slowAcksMin = 5

// peerOutdatedAlarm raises wip-peer-outdated (a warning) while this node is
// the primary and acknowledges commits without its peer: it went on alone
// (on-peer-loss degrade, after peer-ack-timeout) or took over with the old
// active gone, and the peer has not caught up since. The pair then holds
// one copy of those commits, this node's, and the peer cannot take over
// until it has caught up (I5): the peer's own alarm says "outdated" only
// while it runs and hears this node. It clears when the peer is in sync
// again or this node is no longer primary. It returns whether the alarm
// was raised or cleared.
func (d *driver) peerOutdatedAlarm(r api.ReplicationStatus) (raised, cleared bool) {
	const id = "wip-peer-outdated"
	if r.Role == wip.Primary.String() && r.PeerOutdated {
		text := "commits are acknowledged without the peer (it did not ack within peer-ack-timeout, or this node took over without it): this node's WIP store holds the only copy of them, and the peer cannot take over until it has caught up"
		return d.raiseAlarm(id, "warning", text), false
	}
	return false, d.clearAlarm(id)
}

// commitsWaitAlarm raises wip-commits-wait (critical) while this node is
// the primary and commits durable here have waited for the peer's ack past
// peer-ack-timeout: with on-peer-loss block they wait until the peer acks;
// with degrade the store may not go on alone yet (the pair driver does not
// confirm that this node is the active: a freeze, a demotion under way),
// and the store says why. The orchestrations that made those commits wait
// with them. It clears when the commits are acknowledged, or this node is
// no longer primary. It returns whether the alarm was raised or cleared.
func (d *driver) commitsWaitAlarm(r api.ReplicationStatus) (raised, cleared bool) {
	const id = "wip-commits-wait"
	if r.Role == wip.Primary.String() && d.ackTimeout > 0 && !r.AckWaitSince.IsZero() {
		waited := d.clk.Now().Sub(r.AckWaitSince)
		switch {
		case d.blockOnPeerLoss && waited > d.ackTimeout:
			text := fmt.Sprintf("commits have waited longer than peer-ack-timeout (%v) for the peer's ack; on-peer-loss is block: they wait until the peer acks, and the orchestrations that made them wait too", d.ackTimeout)
			return d.raiseAlarm(id, "critical", text), false
		case !d.blockOnPeerLoss && r.GoAloneRefusal != "":
			text := fmt.Sprintf("commits have waited longer than peer-ack-timeout (%v) for the peer's ack and may not go on alone: %s", d.ackTimeout, r.GoAloneRefusal)
			return d.raiseAlarm(id, "critical", text), false
		}
	}
	return false, d.clearAlarm(id)
}

// peerSnapshotAlarm raises wip-peer-needs-snapshot (a warning) while this
// node is the primary and its peer, if it came back now, would be resynced
// by a full snapshot: it has been away longer than the retained log keeps
// (retain-bytes, retain-age). Until that snapshot completes the pair holds
// one copy of the data and the peer cannot take over, so the operator
// should know before the peer returns, not when it does. It clears when
// that no longer holds (the peer holds what the log starts from, after its
// snapshot, or this node is no longer primary). It returns whether the
// alarm was raised or cleared by this call.
func (d *driver) peerSnapshotAlarm(r api.ReplicationStatus) (raised, cleared bool) {
	const id = "wip-peer-needs-snapshot"
	if r.Role == wip.Primary.String() && r.PeerCatchUp == wip.CatchUpSnapshot {
		text := fmt.Sprintf("the peer holds LSN %d; the retained log starts at LSN %d: when it returns it is resynced by a full snapshot, and cannot take over until that completes",
			r.PeerHoldsLSN, r.RetainedFirst)
		return d.raiseAlarm(id, "warning", text), false
	}
	return false, d.clearAlarm(id)
}

// handsOver reports whether a primary whose store cannot go on (corrupt,
// failed) is handing the role over or will at the next tick
// (storeHandover): not active any more, handing over, or the peer can
// take over now.
func handsOver(st pair.Status) bool {
	return st.Role != pair.RoleActive || st.Substate == "handing-over" || st.SwitchoverBlocked == ""
}

// failedAlarm raises wip-failed (critical) while this node's WIP store has
// failed (a local write or sync error: a full file system, a failing
// disk), and says what happens next: an active hands the role over to its
// peer when the peer is in sync (storeHandover; the peer holds every
// acknowledged commit), and otherwise stays active without committing,
// since its store may then hold commits the peer lacks; a passive is not
// promotable. Either way the store works again only after a restart, once
// the cause is dealt with; for a hung disk (FailedStall) it says whether
// tandemd makes that restart itself once the disk answers
// (stallRestartPlan), and when. It clears when the store no longer reports it
// (a restarted process starts without it). It returns whether the alarm
// was raised or cleared.
func (d *driver) failedAlarm(r api.ReplicationStatus, st pair.Status) (raised, cleared bool) {
	const id = "wip-failed"
	if r.Failed == "" {
		d.stallOverAt = time.Time{}
		return false, d.clearAlarm(id)
	}
	restart := "free the space or replace the disk, then restart tandemd"
	if !r.StallOver && !d.stallOverAt.IsZero() {
		// The disk hangs or fails again before the store was reopened:
		// the time it answered no longer counts (disk.restart-after-stall).
		d.stallOverAt = time.Time{}
		d.ev.add(d.clk.Now(), "replication", "the disk under the failed WIP store hangs or fails again")
	}
	if r.StallOver && d.stallOverAt.IsZero() {
		d.stallOverAt = d.clk.Now()
		d.ev.add(d.stallOverAt, "replication", "the disk under the failed WIP store answers again")
	}
	if r.FailedStall || r.StallOver {
		// A hung disk: what becomes of the store once the disk answers.
		// An active that hands over restarts as the passive it becomes.
		plan := st
		if st.Role == pair.RoleActive && handsOver(st) {
			plan.Role = pair.RolePassive
		}
		then := "restart tandemd to reopen the store"
		at, refused := d.stallRestartPlan(plan)
		switch {
		case refused == "" && r.StallOver:
			then = "tandemd restarts itself to reopen the store at " + at.UTC().Format(time.RFC3339) + " (disk.restart-after-stall)"
		case refused == "":
			then = "once it has answered for " + d.restartAfter.String() + ", tandemd restarts itself to reopen the store (disk.restart-after-stall)"
		case d.restartRefused != "":
			then = d.restartRefused + ": " + then
		case st.Role == pair.RoleActive && st.Maintenance:
			then = "no automatic restart (" + refused + "): " + then
		}
		if r.StallOver {
			restart = "the disk answers again (a probe write completed since): " + then
		} else {
			restart = "the disk does not answer yet; " + then
		}
	}
	var next string
	switch {
	case r.Role != wip.Primary.String():
		next = "not promotable; " + restart
	case handsOver(st):
		next = "handing the active role over to the in-sync peer; then " + restart
	default:
		next = "staying active without committing, as the peer cannot take over (" + st.SwitchoverBlocked + "); " + restart
	}
	return d.raiseAlarm(id, "critical", "the WIP store has failed: "+r.Failed+": "+next), false
}

// writeErrorWhat names what fails in r's run of write errors.
func writeErrorWhat(r api.ReplicationStatus) string {
	if r.WriteErrorJobs == "" {
		return "pebble's background reads of the WIP store's files fail"
	}
	return "pebble's " + r.WriteErrorJobs + " of the WIP store fail"
}

// stallAlarmAfter is how long commits may wait for pebble's flushes
// before wip-stall says so: a loaded disk stalls them for moments.
const stallAlarmAfter = 10 * time.Second

// writeAlarms raises wip-write-error (critical) while pebble's own work
// on the WIP store's files fails: its flushes (a full file system whose
// WAL still had room, a failing disk; commits go on into the WAL until
// the memtables are full, then stall), its compactions (a disk that fails
// reads or writes; commits go on until level 0 reaches its limit) or its
// other background reads. The alarm names the jobs and the remedy: free
// space for a full file system, otherwise the disk itself. wip-stall (a
// warning) is raised while commits have waited for a flush longer than
// stallAlarmAfter without such an error (a disk that does not keep up).
// Each clears when its condition ends: the store works again as soon as
// the failed jobs succeed (free space). Commits held that way for
// disk.stall-timeout fail the store as a stalled disk (wip-failed), and
// the active hands over then.
func (d *driver) writeAlarms(r api.ReplicationStatus) {
	now := d.clk.Now()
	stalled := ""
	if !r.StalledSince.IsZero() {
		stalled = fmt.Sprintf("commits have waited since %s (%v: %s)", r.StalledSince.UTC().Format(time.RFC3339), now.Sub(r.StalledSince).Round(time.Second), r.StallReason)
	}
	if r.WriteError != "" {
		next := "commits go on"
		switch {
		case strings.Contains(r.WriteErrorJobs, "flushes"):
			next = "commits stall once the memtables are full"
		case r.WriteErrorJobs != "":
			next = "commits stall if level 0 grows to its limit"
		}
		if stalled != "" {
			next = stalled
		}
		remedy := "the disk fails reads or writes: check it (the kernel log) and replace it; the failed jobs are retried, and the alarm clears once they succeed"
		switch {
		case r.WriteErrorNoSpace:
			remedy = "the file system is full: free space (disk-space)"
		case r.Role == wip.Primary.String() && d.ioErrorHandover > 0:
			remedy += "; the active hands over to an in-sync passive once they have failed for " + d.ioErrorHandover.String() + " (disk.io-error-handover; not in maintenance, once an hour)"
		}
		d.raiseAlarm("wip-write-error", "critical", fmt.Sprintf("%s since %s (%d failures): %s; %s; %s",
			writeErrorWhat(r), r.WriteErrorSince.UTC().Format(time.RFC3339), r.WriteErrors, r.WriteError, next, remedy))
	} else {
		d.clearAlarm("wip-write-error")
	}
	if r.WriteError == "" && stalled != "" && now.Sub(r.StalledSince) >= stallAlarmAfter {
		d.raiseAlarm("wip-stall", "warning", stalled+": the disk does not keep up with the commits")
	} else {
		d.clearAlarm("wip-stall")
	}
	// A write slow for no reason pebble gives: the disk itself. The two
	// alarms above already explain a commit that waits for a flush, and a
	// failed store has its own.
	if r.SlowWrite != "" && r.WriteError == "" && stalled == "" && r.Failed == "" {
		d.raiseAlarm("wip-slow-write", "warning", fmt.Sprintf("%s, since %s: the disk is slow or hangs (at disk.stall-timeout the store fails, and an active hands over)",
			r.SlowWrite, r.SlowWriteSince.UTC().Format(time.RFC3339)))
	} else {
		d.clearAlarm("wip-slow-write")
	}
}

// corruptAlarm raises wip-corrupt (critical) while this node's WIP store
// reports on-disk corruption, and says what happens next: a secondary
// resyncs from the active by snapshot, and is not promotable until a full
// read of the result is clean; an active hands the role over to its peer
// when the peer is in sync (storeHandover), and otherwise stays active,
// since its store may then be the only copy. It clears when the store no
// longer reports it. It returns whether the alarm was raised or cleared.
func (d *driver) corruptAlarm(r api.ReplicationStatus, st pair.Status) (raised, cleared bool) {
	const id = "wip-corrupt"
	if r.Corruption == "" {
		return false, d.clearAlarm(id)
	}
	var next string
	switch {
	case strings.HasPrefix(r.CorruptionRepair, "failed"):
		next = "not promotable; repair " + r.CorruptionRepair + ": stop tandemd, move data-dir/wip away and start it (docs/configuration.md)"
	case r.Role != wip.Primary.String():
		next = "not promotable; resyncing from the active by snapshot"
	case handsOver(st):
		next = "handing the active role over to the in-sync peer"
	default:
		next = "staying active, as the peer cannot take over (" + st.SwitchoverBlocked + "): reads of that file fail; bring the peer in sync, then switch over"
	}
	return d.raiseAlarm(id, "critical", "the WIP store has a corrupt file, "+r.Corruption+": "+next), false
}
