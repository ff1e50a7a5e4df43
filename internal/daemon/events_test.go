package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/latency"
	"github.com/tandem-ha/tandem/internal/pair"
	"github.com/tandem-ha/tandem/wip"
)

func TestStoreEventsRaiseQuarantineAlarm(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC))
	ev := newEventLog(10)
	f := storeEvents(ev, clk)
	f(wip.Event{Kind: wip.EventRejected, Detail: "bad crc"})
	if n := len(ev.last(10)); n != 0 {
		t.Fatalf("a rejected frame reached the event log (%d events)", n)
	}
	f(wip.Event{Kind: wip.EventPeerOutdated, Detail: "peer did not ack"})
	f(wip.Event{Kind: wip.EventDiverged, Detail: "epochs [2] vs [3]", File: "/var/lib/tandem/wip/quarantine/q-1.jsonl"})
	evs := ev.last(10)
	if len(evs) != 2 || !strings.Contains(evs[0].Text, "peer-outdated: peer did not ack") || !strings.Contains(evs[1].Text, "q-1.jsonl") {
		t.Fatalf("events: %+v", evs)
	}
	al := ev.activeAlarms()
	if len(al) != 1 || al[0].ID != "wip-quarantine" || al[0].Severity != "critical" || !strings.Contains(al[0].Text, "q-1.jsonl") {
		t.Fatalf("alarms: %+v", al)
	}
}

// A mode mismatch, refused at every reconnect, is one critical alarm and
// one event; the next session that starts clears it.
func TestStoreEventsModeMismatchAlarm(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC))
	ev := newEventLog(10)
	f := storeEvents(ev, clk)
	detail := "wip: replication modes differ: this primary runs sync, the secondary 192.0.2.2:7402 (node 2) runs async; set the same replication mode on both nodes"
	for i := 0; i < 3; i++ {
		f(wip.Event{Kind: wip.EventModeMismatch, Detail: detail})
	}
	evs := ev.last(10)
	if len(evs) != 1 || !strings.Contains(evs[0].Text, "mode-mismatch") || !strings.Contains(evs[0].Text, "runs async") {
		t.Fatalf("events after three refusals: %+v", evs)
	}
	al := ev.activeAlarms()
	if len(al) != 1 || al[0].ID != "wip-mode-mismatch" || al[0].Severity != "critical" || !strings.Contains(al[0].Text, "same replication mode") {
		t.Fatalf("alarms: %+v", al)
	}
	f(wip.Event{Kind: wip.EventSessionStarted, Detail: "secondary node 2 at LSN 7, protocol version 2"})
	if al := ev.activeAlarms(); len(al) != 0 {
		t.Fatalf("alarms after a session started: %+v", al)
	}
	if evs := ev.last(10); len(evs) != 2 || !strings.Contains(evs[1].Text, "session-started") {
		t.Fatalf("events: %+v", evs)
	}
}

// The quarantine alarm is the daemon's own and latched: the operator's
// acknowledgement clears it (no restart, which on the active would be a
// failover) and the event log keeps what it said. The mode-mismatch alarm
// is a condition: refused, with what clears it.
func TestAckDaemonAlarms(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC))
	d := &driver{ev: newEventLog(10), clk: clk, log: zap.NewNop()}
	b := &backend{d: d}
	f := storeEvents(d.ev, clk)
	f(wip.Event{Kind: wip.EventDiverged, Detail: "epochs [2] vs [3]", File: "/var/lib/tandem/wip/quarantine/q-1.jsonl"})
	f(wip.Event{Kind: wip.EventModeMismatch, Detail: "modes differ"})
	for _, a := range d.ev.activeAlarms() {
		if want := a.ID == "wip-quarantine"; a.Latched != want {
			t.Errorf("alarm %s latched=%t, want %t", a.ID, a.Latched, want)
		}
	}
	ctx := context.Background()
	if _, err := b.AckAlarm(ctx, "wip-mode-mismatch"); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "clears when replication connects") {
		t.Errorf("ack of the mode mismatch: %v, want a conflict naming what clears it", err)
	}
	r, err := b.AckAlarm(ctx, "wip-quarantine")
	if err != nil || !r.Accepted {
		t.Fatalf("ack of the quarantine alarm: %+v, %v", r, err)
	}
	al := d.ev.activeAlarms()
	if len(al) != 1 || al[0].ID != "wip-mode-mismatch" {
		t.Errorf("alarms after the acknowledgement: %+v", al)
	}
	evs := d.ev.last(1)
	if len(evs) != 1 || !strings.Contains(evs[0].Text, "wip-quarantine acknowledged by the operator") || !strings.Contains(evs[0].Text, "q-1.jsonl") {
		t.Errorf("last event %+v: want the acknowledgement with the file it named", evs)
	}
	if _, err := b.AckAlarm(ctx, "wip-quarantine"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("second ack: %v, want not found", err)
	}
}

func TestReconcileEpoch(t *testing.T) {
	for _, tc := range []struct {
		in      pair.Persisted
		store   uint64
		want    pair.Persisted
		changed bool
	}{
		{pair.Persisted{}, 0, pair.Persisted{}, false},                                                               // a new node
		{pair.Persisted{}, 3, pair.Persisted{Epoch: 3}, true},                                                        // a DR node restored from a backup
		{pair.Persisted{Epoch: 5, Role: pair.RoleActive}, 5, pair.Persisted{Epoch: 5, Role: pair.RoleActive}, false}, // the usual restart
		{pair.Persisted{Epoch: 6, Role: pair.RolePassive}, 5, pair.Persisted{Epoch: 6, Role: pair.RolePassive}, false},
		{pair.Persisted{Epoch: 3, Role: pair.RoleActive, Maintenance: true}, 4, pair.Persisted{Epoch: 4, Role: pair.RolePassive, Maintenance: true}, true},
	} {
		got, changed := reconcileEpoch(tc.in, tc.store)
		if got != tc.want || changed != tc.changed {
			t.Errorf("reconcileEpoch(%v, %d) = %v, %t; want %v, %t", tc.in, tc.store, got, changed, tc.want, tc.changed)
		}
	}
}

// The primary warns while its peer, coming back, would need a full
// snapshot; the warning is a condition (not acknowledged away) and clears
// when the peer holds what the log starts from again.
func TestPeerSnapshotAlarm(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	d := &driver{ev: newEventLog(10), clk: clock.NewManual(now), log: zap.NewNop()}
	b := &backend{d: d}
	away := api.ReplicationStatus{Role: "primary", PeerCatchUp: wip.CatchUpSnapshot, PeerHoldsLSN: 4000, RetainedFirst: 9100, RetainedLast: 12000}
	steps := []struct {
		what            string
		r               api.ReplicationStatus
		raised, cleared bool
		active          bool
	}{
		{"a secondary's view", api.ReplicationStatus{Role: "secondary", PeerCatchUp: wip.CatchUpSnapshot}, false, false, false},
		{"a primary whose peer would rejoin from the log", api.ReplicationStatus{Role: "primary", PeerCatchUp: wip.CatchUpLog}, false, false, false},
		{"the peer away past the log", away, true, false, true},
		{"still away", away, false, false, true},
		{"what the peer holds not known", api.ReplicationStatus{Role: "primary", PeerCatchUp: wip.CatchUpUnknown}, false, true, false},
		{"away again", away, true, false, true},
	}
	for _, s := range steps {
		raised, cleared := d.peerSnapshotAlarm(s.r)
		a, active := d.ev.alarm("wip-peer-needs-snapshot")
		if raised != s.raised || cleared != s.cleared || active != s.active {
			t.Fatalf("%s: raised %t cleared %t active %t; want %t %t %t", s.what, raised, cleared, active, s.raised, s.cleared, s.active)
		}
		if active && (a.Severity != "warning" || a.Latched || !strings.Contains(a.Text, "holds LSN 4000; the retained log starts at LSN 9100")) {
			t.Fatalf("%s: alarm %+v", s.what, a)
		}
	}
	if _, err := b.AckAlarm(context.Background(), "wip-peer-needs-snapshot"); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "retained log starts from") {
		t.Errorf("ack: %v, want a conflict naming what clears it", err)
	}
	if _, cleared := d.peerSnapshotAlarm(api.ReplicationStatus{Role: "primary", PeerCatchUp: wip.CatchUpLog, PeerHoldsLSN: 12000}); !cleared {
		t.Error("the peer caught up (after its snapshot) and the alarm stayed")
	}
}

// The primary warns while 1 % of its recent groups (at least 5) waited for
// the peer longer than the first bucket bound at or above a quarter of
// peer-ack-timeout (1.6384 s of 5 s); the warning is a condition.
func TestSlowAcksAlarm(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	d := &driver{ev: newEventLog(10), clk: clock.NewManual(now), log: zap.NewNop(), ackTimeout: 5 * time.Second}
	b := &backend{d: d}
	waits := func(role string, n map[time.Duration]int) api.ReplicationStatus {
		var h latency.Histogram
		for w, k := range n {
			for i := 0; i < k; i++ {
				h.Observe(w)
			}
		}
		return api.ReplicationStatus{Role: role, RecentLatency: api.LatencyStatus{PeerWait: h}}
	}
	ms := time.Millisecond
	steps := []struct {
		what            string
		r               api.ReplicationStatus
		raised, cleared bool
		active          bool
		text            string
	}{
		{"a secondary's view", waits("secondary", map[time.Duration]int{2 * time.Second: 50}), false, false, false, ""},
		{"fast acks", waits("primary", map[time.Duration]int{ms: 100}), false, false, false, ""},
		{"four slow ones", waits("primary", map[time.Duration]int{ms: 100, 2 * time.Second: 4}), false, false, false, ""},
		{"waits in the bucket across the threshold do not count", waits("primary", map[time.Duration]int{1500 * ms: 50}), false, false, false, ""},
		{"five slow of 105", waits("primary", map[time.Duration]int{ms: 100, 2 * time.Second: 5}), true, false, true,
			"5 of the last 105 commit groups waited more than 1.6384s for the peer's ack after their own fsync (peer-ack-timeout 5s)"},
		{"still slow", waits("primary", map[time.Duration]int{ms: 200, 3 * time.Second: 6}), false, false, true, "6 of the last 206"},
		{"under 1 %", waits("primary", map[time.Duration]int{ms: 600, 2 * time.Second: 5}), false, true, false, ""},
		{"slow again", waits("primary", map[time.Duration]int{10 * time.Second: 5}), true, false, true, "5 of the last 5"},
		{"no longer primary", waits("secondary", map[time.Duration]int{10 * time.Second: 5}), false, true, false, ""},
	}
	for _, s := range steps {
		raised, cleared := d.slowAcksAlarm(s.r)
		a, active := d.ev.alarm("wip-slow-acks")
		if raised != s.raised || cleared != s.cleared || active != s.active {
			t.Fatalf("%s: raised %t cleared %t active %t; want %t %t %t", s.what, raised, cleared, active, s.raised, s.cleared, s.active)
		}
		if active && (a.Severity != "warning" || a.Latched || !strings.Contains(a.Text, s.text)) {
			t.Fatalf("%s: alarm %+v, want its text to hold %q", s.what, a, s.text)
		}
	}
	d.slowAcksAlarm(waits("primary", map[time.Duration]int{2 * time.Second: 5}))
	if _, err := b.AckAlarm(context.Background(), "wip-slow-acks"); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "quarter to a half of peer-ack-timeout") {
		t.Errorf("ack: %v, want a conflict naming what clears it", err)
	}
	d.ackTimeout = 0 // not configured (tests): never raised
	if _, cleared := d.slowAcksAlarm(waits("primary", map[time.Duration]int{2 * time.Second: 5})); !cleared {
		t.Error("without a peer-ack-timeout the alarm stayed")
	}
}

// countEvents counts the events whose text holds s.
func countEvents(ev *eventLog, s string) int {
	n := 0
	for _, e := range ev.after(0) {
		if strings.Contains(e.Text, s) {
			n++
		}
	}
	return n
}
