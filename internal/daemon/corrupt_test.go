package daemon

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/pair"
	"github.com/tandem-ha/tandem/wip"
)

// activate steps the rig until its node is promoted, and lets the
// promotion finish.
func (r *driverRig) activate() {
	r.t.Helper()
	promoted := false
	for i := 0; i < 3000 && !promoted; i++ {
		promoted = r.step()
	}
	if !promoted {
		r.t.Fatalf("no promotion in 3000 steps; status %+v", r.status())
	}
	r.release()
}

// An active whose WIP store reports corruption raises wip-corrupt and,
// while the peer is not in sync, stays active and says why; once the peer
// is in sync it hands the role over by itself. The alarm clears when the
// store no longer reports the corruption.
func TestCorruptActiveHandsOver(t *testing.T) {
	r := newDriverRig(t, true)
	r.activate()
	const bad = "/var/lib/tandem/wip/000009.sst (keys \"l/\"..\"u/k\"): crc32c checksum mismatch"
	var peerInSync, clean atomic.Bool
	r.store.setView(func() (pair.Replication, api.ReplicationStatus) {
		rs := api.ReplicationStatus{Role: "primary"}
		if !clean.Load() {
			rs.Corruption = bad
		}
		in := peerInSync.Load()
		return pair.Replication{State: pair.ReplInSync, PeerInSync: in, PeerAckedAll: in, LSN: 10}, rs
	})
	for range 20 {
		r.step()
	}
	a, ok := r.d.ev.alarm("wip-corrupt")
	if !ok || a.Severity != "critical" || a.Latched || !strings.Contains(a.Text, bad) ||
		!strings.Contains(a.Text, "staying active") || !strings.Contains(a.Text, "not in sync") {
		t.Fatalf("peer not in sync: alarm %+v (raised %t)", a, ok)
	}
	if st := r.status(); st.Role != pair.RoleActive || st.Substate == "handing-over" {
		t.Fatalf("peer not in sync: %s/%s, want active and no handover", st.Role, st.Substate)
	}

	peerInSync.Store(true)
	for range 20 {
		r.step()
	}
	a, _ = r.d.ev.alarm("wip-corrupt")
	if !strings.Contains(a.Text, "handing the active role over") {
		t.Fatalf("peer in sync: alarm text %q", a.Text)
	}
	// The rig's runtime pauses at once: the handover completes.
	if st := r.status(); st.Role != pair.RolePassive || !strings.Contains(st.Reason, "the WIP store is corrupt") {
		t.Fatalf("peer in sync: %s/%s (%s), want handed over for the corruption", st.Role, st.Substate, st.Reason)
	}
	found := false
	for _, e := range r.d.ev.last(50) {
		found = found || strings.Contains(e.Text, "switchover started: the WIP store is corrupt")
	}
	if !found {
		t.Fatalf("no event for the handover in %+v", r.d.ev.last(50))
	}

	clean.Store(true)
	for range 5 {
		r.step()
	}
	if a, ok := r.d.ev.alarm("wip-corrupt"); ok {
		t.Fatalf("alarm still raised with no corruption: %+v", a)
	}
}

// The passive's wip-corrupt says what the store does about it, and what
// the operator must do when the store's own repair failed.
func TestCorruptAlarmOnThePassive(t *testing.T) {
	d := &driver{ev: newEventLog(10), clk: clock.NewManual(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)), log: zap.NewNop()}
	passive := pair.Status{Role: pair.RolePassive}
	for _, c := range []struct {
		repair, want string
	}{
		{"resync", "not promotable; resyncing from the active by snapshot"},
		{"failed: a snapshot from the primary did not clear it (block 7)", "repair failed: a snapshot from the primary did not clear it (block 7): stop tandemd, move data-dir/wip away"},
	} {
		d.corruptAlarm(api.ReplicationStatus{Role: "secondary", Corruption: "000009.sst: bad", CorruptionRepair: c.repair}, passive)
		a, ok := d.ev.alarm("wip-corrupt")
		if !ok || !strings.Contains(a.Text, "000009.sst: bad") || !strings.Contains(a.Text, c.want) {
			t.Fatalf("repair %q: alarm %+v (raised %t), want %q", c.repair, a, ok, c.want)
		}
	}
	if _, cleared := d.corruptAlarm(api.ReplicationStatus{Role: "secondary"}, passive); !cleared {
		t.Fatal("not cleared when the store no longer reports corruption")
	}
}

// A repair can be over between two of the driver's polls (the lab's
// small store: under 20 ms). The alarm is raised as the store reports the
// corruption, so it stands at least until the next poll and the event log
// keeps both its raise and its clearing.
func TestCorruptAlarmRaisedByTheStoreEvent(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC))
	d := &driver{ev: newEventLog(10), clk: clk, log: zap.NewNop()}
	storeEvents(d.ev, clk)(wip.Event{Kind: wip.EventCorrupt, Detail: "000008.sst: crc32c checksum mismatch"})
	if a, ok := d.ev.alarm("wip-corrupt"); !ok || a.Severity != "critical" || !strings.Contains(a.Text, "000008.sst") {
		t.Fatalf("after the store's event: alarm %+v (raised %t)", a, ok)
	}
	// The next poll finds the store repaired.
	if _, cleared := d.corruptAlarm(api.ReplicationStatus{Role: "secondary"}, pair.Status{Role: pair.RolePassive}); !cleared {
		t.Fatal("not cleared by the poll that finds the store repaired")
	}
	var texts []string
	for _, e := range d.ev.last(10) {
		if e.Kind == "alarm" {
			texts = append(texts, e.Text)
		}
	}
	if len(texts) != 2 || !strings.HasPrefix(texts[0], "wip-corrupt: ") || !strings.Contains(texts[0], "000008.sst") || texts[1] != "wip-corrupt cleared" {
		t.Fatalf("alarm events %q, want the raise naming the file, then the clearing", texts)
	}
}

// A handover for a corrupt store that does not complete (the peer never
// acks the last commits, so the switchover times out) is not started
// again at the next tick, each try pausing the runtime: only a
// switchover-timeout after it ended.
func TestCorruptHandoverRetriesAfterATimeout(t *testing.T) {
	r := newDriverRig(t, true)
	r.activate()
	r.store.setView(func() (pair.Replication, api.ReplicationStatus) {
		return pair.Replication{State: pair.ReplInSync, PeerInSync: true, LSN: 10},
			api.ReplicationStatus{Role: "primary", Corruption: "000009.sst: bad"}
	})
	starts := func() int {
		n := 0
		for _, e := range r.d.ev.last(1000) {
			if strings.Contains(e.Text, "switchover started: the WIP store is corrupt") {
				n++
			}
		}
		return n
	}
	timeout := r.d.timing.SwitchoverTimeout
	var aborted time.Time
	for el := time.Duration(0); el < 3*timeout; el += r.period {
		r.step()
		if _, ok := r.d.ev.alarm("switchover-failed"); ok && aborted.IsZero() {
			aborted = r.clk.Now()
			if n := starts(); n != 1 {
				t.Fatalf("%d handovers started before the first timed out", n)
			}
		}
		if !aborted.IsZero() && r.clk.Now().Sub(aborted) < timeout-2*r.period && starts() != 1 {
			t.Fatalf("a second handover %v after the first timed out", r.clk.Now().Sub(aborted))
		}
	}
	if aborted.IsZero() {
		t.Fatalf("the handover never timed out; status %+v", r.status())
	}
	if n := starts(); n != 2 {
		t.Fatalf("%d handovers started in 3 switchover-timeouts, want 2 (one timed out, one a timeout later)", n)
	}
}
