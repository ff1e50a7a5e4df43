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

const diskFull = "wip: store failed: commit of LSN 11..11: pebble: fatal commit error: write /var/lib/tandem/wip/000005.log: no space left on device"

// An active whose WIP store has failed (a full disk) raises wip-failed at
// once, from the store's event, and stays active while the peer cannot
// take over, saying so; once the peer is in sync it hands the role over,
// and the alarm then says what the operator must do.
func TestFailedStoreActiveHandsOver(t *testing.T) {
	r := newDriverRig(t, true)
	r.activate()
	// The store's view says failed before its event comes, as in the
	// store: a driver tick in between must not see a working store and
	// clear the alarm (seen on a starved CI machine).
	var peerInSync atomic.Bool
	r.store.setView(func() (pair.Replication, api.ReplicationStatus) {
		in := peerInSync.Load()
		return pair.Replication{State: pair.ReplInSync, PeerInSync: in, PeerAckedAll: in, LSN: 10},
			api.ReplicationStatus{Role: "primary", Failed: diskFull}
	})
	storeEvents(r.d.ev, r.clk)(wip.Event{Kind: wip.EventFailed, Detail: diskFull})
	if a, ok := r.d.ev.alarm("wip-failed"); !ok || a.Severity != "critical" || a.Latched || !strings.Contains(a.Text, "no space left on device") {
		t.Fatalf("after the store's event: alarm %+v (raised %t)", a, ok)
	}
	for range 20 {
		r.step()
	}
	a, _ := r.d.ev.alarm("wip-failed")
	if !strings.Contains(a.Text, diskFull) || !strings.Contains(a.Text, "staying active without committing") || !strings.Contains(a.Text, "not in sync") {
		t.Fatalf("peer not in sync: alarm text %q", a.Text)
	}
	if st := r.status(); st.Role != pair.RoleActive || st.Substate == "handing-over" {
		t.Fatalf("peer not in sync: %s/%s, want active and no handover", st.Role, st.Substate)
	}

	peerInSync.Store(true)
	for range 20 {
		r.step()
	}
	if st := r.status(); st.Role != pair.RolePassive || !strings.Contains(st.Reason, "the WIP store has failed") {
		t.Fatalf("peer in sync: %s/%s (%s), want handed over for the failed store", st.Role, st.Substate, st.Reason)
	}
	found := false
	for _, e := range r.d.ev.last(50) {
		found = found || strings.Contains(e.Text, "switchover started: the WIP store has failed")
	}
	if !found {
		t.Fatalf("no event for the handover in %+v", r.d.ev.last(50))
	}
	// The change of substate says its own reason, not the role's last one
	// (the start's).
	for _, e := range r.d.ev.last(50) {
		if e.Kind == "role" && strings.Contains(e.Text, "-> active/handing-over") && !strings.HasSuffix(e.Text, "): handing over to the peer: the WIP store has failed") {
			t.Errorf("role event %q, want the handover's reason", e.Text)
		}
	}
	if countEvents(r.d.ev, "-> active/handing-over") != 1 {
		t.Errorf("no role event for the handover's start in %+v", r.d.ev.last(50))
	}
}

// The passive's wip-failed: not promotable, and what to do. The wire
// marks a failed secondary Inconsistent for the machine (I5), and the
// alarm clears once the store works (a restarted tandemd).
func TestFailedStoreOnThePassive(t *testing.T) {
	d := &driver{ev: newEventLog(10), clk: clock.NewManual(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)), log: zap.NewNop()}
	d.failedAlarm(api.ReplicationStatus{Role: "secondary", Failed: diskFull}, pair.Status{Role: pair.RolePassive})
	a, ok := d.ev.alarm("wip-failed")
	if !ok || !strings.Contains(a.Text, diskFull) || !strings.Contains(a.Text, "not promotable; free the space or replace the disk, then restart tandemd") {
		t.Fatalf("alarm %+v (raised %t)", a, ok)
	}
	if _, cleared := d.failedAlarm(api.ReplicationStatus{Role: "secondary"}, pair.Status{Role: pair.RolePassive}); !cleared {
		t.Fatal("not cleared when the store works")
	}

	// A store failed on a stall whose disk answers again: the alarm says
	// a restart recovers it, and one event says so.
	stalled := "wip: store failed: the disk probe of /var/lib/tandem/wip/tandem-disk-probe has not completed in 20.1s: the disk has stalled (wip: local write stalled)"
	d.failedAlarm(api.ReplicationStatus{Role: "secondary", Failed: stalled}, pair.Status{Role: pair.RolePassive})
	for range 3 {
		d.failedAlarm(api.ReplicationStatus{Role: "secondary", Failed: stalled, StallOver: true}, pair.Status{Role: pair.RolePassive})
	}
	if a, _ := d.ev.alarm("wip-failed"); !strings.Contains(a.Text, stalled) || !strings.Contains(a.Text, "not promotable; the disk answers again (a probe write completed since): restart tandemd to reopen the store") {
		t.Fatalf("stall over: alarm text %q", a.Text)
	}
	if n := countEvents(d.ev, "the disk under the failed WIP store answers again"); n != 1 {
		t.Fatalf("%d events say the disk answers again, want 1: %+v", n, d.ev.after(0))
	}
}

// An active whose passive says no-follow (its store failed) tells its own
// store at once that the peer cannot ack, and only then.
func TestPassiveNoFollowTellsTheStore(t *testing.T) {
	r := newDriverRig(t, true)
	r.activate()
	calls := func() []string {
		r.store.mu.Lock()
		defer r.store.mu.Unlock()
		return append([]string(nil), r.store.cannotAck...)
	}
	for range 10 {
		r.step()
	}
	if c := calls(); len(c) != 0 {
		t.Fatalf("PeerCannotAck with a healthy peer: %q", c)
	}
	r.peerNoFollow = true
	for range 10 {
		r.step()
	}
	if c := calls(); len(c) == 0 || !strings.Contains(c[0], "no-follow") {
		t.Fatalf("PeerCannotAck calls with a no-follow peer: %q", c)
	}
}

// pebble's write errors raise wip-write-error (naming the failing jobs,
// the consequence for the commits, the stall once commits wait, and the
// remedy: space for a full file system, the disk otherwise), a long
// stall alone raises wip-stall, and both clear when pebble writes again.
// A write slow for no reason pebble gives raises wip-slow-write.
func TestWriteAlarms(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC))
	d := &driver{ev: newEventLog(20), clk: clk, log: zap.NewNop()}
	since := clk.Now()
	werr := "write /var/lib/tandem/wip/000014.sst: no space left on device"
	full := api.ReplicationStatus{WriteError: werr, WriteErrorSince: since, WriteErrors: 7, WriteErrorJobs: "flushes", WriteErrorNoSpace: true}
	d.writeAlarms(full)
	a, ok := d.ev.alarm("wip-write-error")
	if !ok || a.Severity != "critical" || !strings.Contains(a.Text, "pebble's flushes of the WIP store fail since 2026-12-07T02:00:00Z (7 failures): "+werr) ||
		!strings.Contains(a.Text, "commits stall once the memtables are full") || !strings.HasSuffix(a.Text, "the file system is full: free space (disk-space)") {
		t.Fatalf("write error: alarm %+v (raised %t)", a, ok)
	}
	clk.Advance(3 * time.Second)
	full.WriteErrors, full.StalledSince, full.StallReason = 900, since.Add(time.Second), "memtable count limit reached"
	d.writeAlarms(full)
	if a, _ := d.ev.alarm("wip-write-error"); !strings.Contains(a.Text, "commits have waited since 2026-12-07T02:00:01Z (2s: memtable count limit reached)") {
		t.Fatalf("write error and stall: %q", a.Text)
	}
	// Compactions failing on reads: the disk, not the space.
	rerr := "read /var/lib/tandem/wip/000007.sst: input/output error"
	d.writeAlarms(api.ReplicationStatus{WriteError: rerr, WriteErrorSince: since, WriteErrors: 3, WriteErrorJobs: "compactions"})
	if a, _ := d.ev.alarm("wip-write-error"); !strings.Contains(a.Text, "pebble's compactions of the WIP store fail since 2026-12-07T02:00:00Z (3 failures): "+rerr+"; commits stall if level 0 grows to its limit; the disk fails reads or writes") ||
		strings.Contains(a.Text, "free space") {
		t.Fatalf("compactions failing on reads: %q", a.Text)
	}
	d.writeAlarms(api.ReplicationStatus{WriteError: rerr, WriteErrorSince: since, WriteErrors: 1})
	if a, _ := d.ev.alarm("wip-write-error"); !strings.Contains(a.Text, "pebble's background reads of the WIP store's files fail") || !strings.Contains(a.Text, "commits go on; the disk fails") {
		t.Fatalf("a background read failing: %q", a.Text)
	}
	if _, ok := d.ev.alarm("wip-stall"); ok {
		t.Fatal("wip-stall beside wip-write-error")
	}
	d.writeAlarms(api.ReplicationStatus{})
	if _, ok := d.ev.alarm("wip-write-error"); ok {
		t.Fatal("wip-write-error not cleared")
	}

	// A stall with no error: a warning only after stallAlarmAfter.
	stall := api.ReplicationStatus{StalledSince: clk.Now(), StallReason: "L0 file count limit exceeded"}
	clk.Advance(stallAlarmAfter - time.Second)
	d.writeAlarms(stall)
	if _, ok := d.ev.alarm("wip-stall"); ok {
		t.Fatal("wip-stall before stallAlarmAfter")
	}
	clk.Advance(time.Second)
	d.writeAlarms(stall)
	if a, ok := d.ev.alarm("wip-stall"); !ok || a.Severity != "warning" || !strings.Contains(a.Text, "L0 file count limit exceeded") {
		t.Fatalf("long stall: alarm %+v (raised %t)", a, ok)
	}
	d.writeAlarms(api.ReplicationStatus{})
	if _, ok := d.ev.alarm("wip-stall"); ok {
		t.Fatal("wip-stall not cleared")
	}

	// A slow write with no reason from pebble raises wip-slow-write; not
	// beside the alarms that explain it, nor on a failed store.
	slowSince := clk.Now().Add(-11 * time.Second)
	slow := api.ReplicationStatus{SlowWrite: "the commit of LSN 611..614, under way 11s of the 20s stall-timeout", SlowWriteSince: slowSince}
	d.writeAlarms(slow)
	if a, ok := d.ev.alarm("wip-slow-write"); !ok || a.Severity != "warning" || !strings.Contains(a.Text, "the commit of LSN 611..614, under way 11s") ||
		!strings.Contains(a.Text, slowSince.UTC().Format(time.RFC3339)) || !strings.Contains(a.Text, "disk.stall-timeout") {
		t.Fatalf("slow write: alarm %+v (raised %t)", a, ok)
	}
	for _, also := range []func(*api.ReplicationStatus){
		func(r *api.ReplicationStatus) { r.WriteError = werr },
		func(r *api.ReplicationStatus) {
			r.StalledSince, r.StallReason = slowSince, "memtable count limit reached"
		},
		func(r *api.ReplicationStatus) {
			r.Failed = "wip: store failed: the commit of LSN 611..614 has not completed in 20s"
		},
		func(r *api.ReplicationStatus) { r.SlowWrite = "" },
	} {
		d.writeAlarms(slow)
		r := slow
		also(&r)
		d.writeAlarms(r)
		if a, ok := d.ev.alarm("wip-slow-write"); ok {
			t.Fatalf("wip-slow-write stands with %+v: %q", r, a.Text)
		}
	}
}

// The peer's data in the status says when the peer's store has failed
// (its heartbeat's no-follow), beside outdated.
func TestPeerDataSaysFailed(t *testing.T) {
	for _, c := range []struct {
		a    pair.Advert
		want string
	}{
		{pair.Advert{}, "ok"},
		{pair.Advert{Outdated: true}, "outdated"},
		{pair.Advert{NoFollow: true}, "failed"},
		{pair.Advert{Outdated: true, NoFollow: true}, "outdated, failed"},
	} {
		if got := peerData(c.a); got != c.want {
			t.Errorf("peerData(%v) = %q, want %q", c.a, got, c.want)
		}
	}
}
