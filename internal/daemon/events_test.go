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
		checkAlarmStep(t, d.ev, "wip-peer-needs-snapshot", s.what, raised, cleared, s.raised, s.cleared, s.active,
			"warning", "holds LSN 4000; the retained log starts at LSN 9100")
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
		checkAlarmStep(t, d.ev, "wip-slow-acks", s.what, raised, cleared, s.raised, s.cleared, s.active, "warning", s.text)
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

// checkAlarmStep checks one step of a condition alarm's script: what the
// poll returned (raised, cleared; want the same as wantRaised,
// wantCleared), whether alarm id stands (wantActive), and, standing, that
// it has severity, is not latched and that its text holds text.
func checkAlarmStep(t *testing.T, ev *eventLog, id, what string, raised, cleared, wantRaised, wantCleared, wantActive bool, severity, text string) {
	t.Helper()
	a, active := ev.alarm(id)
	if raised != wantRaised || cleared != wantCleared || active != wantActive {
		t.Fatalf("%s: raised %t cleared %t active %t; want %t %t %t", what, raised, cleared, active, wantRaised, wantCleared, wantActive)
	}
	if active && (a.Severity != severity || a.Latched || !strings.Contains(a.Text, text)) {
		t.Fatalf("%s: alarm %+v; want a %s condition whose text holds %q", what, a, severity, text)
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

// The primary warns while it acknowledges commits without its peer (the
// peer is outdated: it went on alone, or took over without it), until
// the peer is in sync again or it stops being primary.
func TestPeerOutdatedAlarm(t *testing.T) {
	now := time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC)
	d := &driver{ev: newEventLog(10), clk: clock.NewManual(now), log: zap.NewNop(), ackTimeout: 5 * time.Second}
	b := &backend{d: d}
	r := func(role, peer string) api.ReplicationStatus {
		return api.ReplicationStatus{Role: role, PeerState: peer, PeerOutdated: peer == "outdated"}
	}
	for _, s := range []struct {
		what                    string
		r                       api.ReplicationStatus
		raised, cleared, active bool
	}{
		{"in sync", r("primary", "in-sync"), false, false, false},
		{"disconnected, within peer-ack-timeout", r("primary", "disconnected"), false, false, false},
		{"gone on alone", r("primary", "outdated"), true, false, true},
		{"still alone", r("primary", "outdated"), false, false, true},
		{"the peer is back and catching up: still outdated", r("primary", "outdated"), false, false, true},
		{"in sync again", r("primary", "in-sync"), false, true, false},
		{"alone again", r("primary", "outdated"), true, false, true},
		{"demoted", r("secondary", "disconnected"), false, true, false},
		{"a secondary never raises it", r("secondary", "outdated"), false, false, false},
	} {
		raised, cleared := d.peerOutdatedAlarm(s.r)
		checkAlarmStep(t, d.ev, "wip-peer-outdated", s.what, raised, cleared, s.raised, s.cleared, s.active, "warning", "without the peer")
	}
	d.peerOutdatedAlarm(r("primary", "outdated"))
	if _, err := b.AckAlarm(context.Background(), "wip-peer-outdated"); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "in sync again") {
		t.Errorf("ack: %v, want a conflict naming what clears it", err)
	}
	if n := countEvents(d.ev, "wip-peer-outdated: commits are acknowledged without the peer"); n != 3 {
		t.Errorf("%d events of the alarm raised, want one per raise (3)", n)
	}
}

// Commits that wait for the peer's ack past peer-ack-timeout raise a
// critical alarm: in block mode after the timeout; in degrade mode only
// while the store says why it may not go on alone (before that it goes
// on alone at the timeout, and the poll may see the moment between).
func TestCommitsWaitAlarm(t *testing.T) {
	now := time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC)
	clk := clock.NewManual(now)
	d := &driver{ev: newEventLog(10), clk: clk, log: zap.NewNop(), ackTimeout: 5 * time.Second}
	wait := func(role string, ago time.Duration, refusal string) api.ReplicationStatus {
		r := api.ReplicationStatus{Role: role, GoAloneRefusal: refusal}
		if ago >= 0 {
			r.AckWaitSince = clk.Now().Add(-ago)
		}
		return r
	}
	const none = -1
	refused := "the pair driver last ran 3s ago (frozen or starved?): waiting for its verdict"
	for _, s := range []struct {
		what                    string
		block                   bool
		r                       api.ReplicationStatus
		raised, cleared, active bool
		text                    string
	}{
		{"block: nothing waits", true, wait("primary", none, ""), false, false, false, ""},
		{"block: within the timeout", true, wait("primary", 5*time.Second, ""), false, false, false, ""},
		{"block: past it", true, wait("primary", 5*time.Second+time.Millisecond, ""), true, false, true, "on-peer-loss is block"},
		{"block: still waiting", true, wait("primary", time.Minute, ""), false, false, true, "on-peer-loss is block"},
		{"block: acknowledged", true, wait("primary", none, ""), false, true, false, ""},
		{"block: a secondary", true, wait("secondary", time.Minute, ""), false, false, false, ""},
		{"degrade: past the timeout, about to go on alone", false, wait("primary", 6*time.Second, ""), false, false, false, ""},
		{"degrade: refused", false, wait("primary", 7*time.Second, refused), true, false, true, "may not go on alone: " + refused},
		{"degrade: gone on alone", false, wait("primary", none, ""), false, true, false, ""},
		{"degrade: refused again", false, wait("primary", 7*time.Second, refused), true, false, true, refused},
		{"degrade: demoted", false, wait("secondary", none, ""), false, true, false, ""},
	} {
		d.blockOnPeerLoss = s.block
		raised, cleared := d.commitsWaitAlarm(s.r)
		checkAlarmStep(t, d.ev, "wip-commits-wait", s.what, raised, cleared, s.raised, s.cleared, s.active, "critical", s.text)
		if a, active := d.ev.alarm("wip-commits-wait"); active && !strings.Contains(a.Text, "peer-ack-timeout (5s)") {
			t.Fatalf("%s: alarm %+v does not name the timeout", s.what, a)
		}
	}
	d.ackTimeout = 0 // not configured (tests): never raised
	d.blockOnPeerLoss = true
	if raised, _ := d.commitsWaitAlarm(wait("primary", time.Hour, "")); raised {
		t.Error("raised without a peer-ack-timeout")
	}
}
