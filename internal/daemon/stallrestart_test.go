package daemon

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/pair"
)

const stalledProbe = "wip: store failed: the disk probe of /var/lib/tandem/wip/tandem-disk-probe has not completed in 20.1s: the disk has stalled (wip: local write stalled)"

// A passive whose store failed on a stall restarts itself once the disk
// has answered for disk.restart-after-stall, recording the restart; the
// alarm says when before. At most config.MaxStallRestarts an hour: then
// the alarm and one event say that a restart by hand is needed. An active
// that hands the role over does not (it restarts as the passive it
// becomes), nor one in maintenance (the alarm says why), nor any node
// with the setting 0.
func TestStallOverRestartPlan(t *testing.T) {
	start := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	clk := clock.NewManual(start)
	dir := t.TempDir()
	d := &driver{ev: newEventLog(100), clk: clk, log: zap.NewNop(), dir: dir, restartAfter: time.Minute}
	passive := pair.Status{Role: pair.RolePassive}
	failed := api.ReplicationStatus{Role: "secondary", Failed: stalledProbe, FailedStall: true}
	over := api.ReplicationStatus{Role: "secondary", Failed: stalledProbe, FailedStall: true, StallOver: true}
	tick := func(rs api.ReplicationStatus, st pair.Status) bool {
		t.Helper()
		d.failedAlarm(rs, st)
		return d.stallRestart(rs, st)
	}

	if tick(failed, passive) {
		t.Fatal("restart while the disk still hangs")
	}
	want := "not promotable; the disk does not answer yet; once it has answered for 1m0s, tandemd restarts itself to reopen the store (disk.restart-after-stall)"
	if a, _ := d.ev.alarm("wip-failed"); !strings.Contains(a.Text, want) {
		t.Fatalf("alarm %q, want %q in it", a.Text, want)
	}
	// An active that hands over restarts as the passive it becomes.
	failedPrimary := api.ReplicationStatus{Role: "primary", Failed: stalledProbe, FailedStall: true}
	d.failedAlarm(failedPrimary, pair.Status{Role: pair.RoleActive, Substate: "paired"})
	want = "handing the active role over to the in-sync peer; then the disk does not answer yet; once it has answered for 1m0s, tandemd restarts itself"
	if a, _ := d.ev.alarm("wip-failed"); !strings.Contains(a.Text, want) {
		t.Fatalf("handing over: alarm %q, want %q in it", a.Text, want)
	}
	clk.Advance(10 * time.Second)
	if tick(over, passive) {
		t.Fatal("restart as soon as the disk answers")
	}
	want = "not promotable; the disk answers again (a probe write completed since): tandemd restarts itself to reopen the store at 2026-12-07T10:01:10Z (disk.restart-after-stall)"
	if a, _ := d.ev.alarm("wip-failed"); !strings.Contains(a.Text, want) {
		t.Fatalf("alarm %q, want %q in it", a.Text, want)
	}
	clk.Advance(59 * time.Second)
	if tick(over, passive) {
		t.Fatal("restart before disk.restart-after-stall")
	}
	clk.Advance(time.Second)
	if tick(over, pair.Status{Role: pair.RoleActive, Substate: "paired"}) {
		t.Fatal("an active restarted itself where its peer can take over")
	}
	maint := pair.Status{Role: pair.RoleActive, Substate: "alone", Maintenance: true, SwitchoverBlocked: "the peer is not heard"}
	overPrimary := api.ReplicationStatus{Role: "primary", Failed: stalledProbe, FailedStall: true, StallOver: true}
	if tick(overPrimary, maint) {
		t.Fatal("an active in maintenance restarted itself")
	}
	want = "staying active without committing, as the peer cannot take over (the peer is not heard); the disk answers again (a probe write completed since): no automatic restart (this node is active in maintenance, where nothing would promote it after a restart): restart tandemd to reopen the store"
	if a, _ := d.ev.alarm("wip-failed"); !strings.Contains(a.Text, want) {
		t.Fatalf("in maintenance: alarm %q, want %q in it", a.Text, want)
	}
	if !tick(over, passive) {
		t.Fatal("no restart after disk.restart-after-stall")
	}
	if tick(over, passive) {
		t.Fatal("a second restart from the same run")
	}
	l, err := loadStallRestarts(dir)
	if err != nil || len(l.At) != 1 || !l.At[0].Equal(start.Add(70*time.Second)) {
		t.Fatalf("the record: %+v, %v; want the one restart at 10:01:10", l, err)
	}
	if n := countEvents(d.ev, "stopping to restart (systemd starts tandemd again) and reopen the store; restart 1 of at most 3 in 1h0m0s"); n != 1 {
		t.Fatalf("%d events of the restart, want 1: %+v", n, d.ev.after(0))
	}

	// The next runs (a driver per run, the record kept): two more within
	// the hour, then none; an hour after the first, one again.
	run := func(at time.Time) (*driver, bool) {
		clk.Set(at)
		d := &driver{ev: newEventLog(100), clk: clk, log: zap.NewNop(), dir: dir, restartAfter: time.Minute}
		d.failedAlarm(over, passive)
		clk.Advance(time.Minute)
		d.failedAlarm(over, passive)
		return d, d.stallRestart(over, passive)
	}
	for _, m := range []int{10, 20} {
		if _, ok := run(start.Add(time.Duration(m) * time.Minute)); !ok {
			t.Fatalf("no restart at +%dm", m)
		}
	}
	d, ok := run(start.Add(30 * time.Minute))
	if ok {
		t.Fatal("a fourth restart within the hour")
	}
	d.failedAlarm(over, passive)
	d.stallRestart(over, passive)
	want = "no automatic restart: tandemd restarted itself for a stalled disk 3 times in the last 1h0m0s, the most it does: restart tandemd to reopen the store"
	if a, _ := d.ev.alarm("wip-failed"); !strings.Contains(a.Text, want) {
		t.Fatalf("over the limit: alarm %q, want %q in it", a.Text, want)
	}
	if n := countEvents(d.ev, "restart tandemd by hand"); n != 1 {
		t.Fatalf("%d events of the refusal, want 1: %+v", n, d.ev.after(0))
	}
	// The same run, once the first restart (10:01:10) has left the hour.
	clk.Set(start.Add(time.Hour + 70*time.Second - time.Millisecond))
	if d.stallRestart(over, passive) {
		t.Fatal("a restart before the first has left the hour")
	}
	clk.Advance(time.Millisecond)
	if !d.stallRestart(over, passive) {
		t.Fatal("no restart once the first has left the hour")
	}
	if l, _ := loadStallRestarts(dir); len(l.At) != 3 || !l.At[0].Equal(start.Add(11*time.Minute)) || !l.At[2].Equal(start.Add(time.Hour+70*time.Second)) {
		t.Fatalf("the record: %+v; want the three restarts of the last hour (10:11, 10:21, 11:01:10)", l)
	}

	// An unreadable record refuses (and names the file); the setting 0
	// never restarts and says what to do.
	if err := os.WriteFile(filepath.Join(dir, stallRestartsFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, ok = run(start.Add(3 * time.Hour))
	if ok || !strings.Contains(d.restartRefused, "its record cannot be read") || !strings.Contains(d.restartRefused, stallRestartsFile) {
		t.Fatalf("corrupt record: restart %t, refused %q", ok, d.restartRefused)
	}
	d = &driver{ev: newEventLog(100), clk: clk, log: zap.NewNop(), dir: t.TempDir()}
	for range 2 {
		d.failedAlarm(over, passive)
		clk.Advance(time.Hour)
		if d.stallRestart(over, passive) {
			t.Fatal("restarted with disk.restart-after-stall 0")
		}
	}
	if a, _ := d.ev.alarm("wip-failed"); !strings.Contains(a.Text, "not promotable; the disk answers again (a probe write completed since): restart tandemd to reopen the store") {
		t.Fatalf("setting 0: alarm %q", a.Text)
	}
}

// The driver stops the node to restart it (the loop ends, as on SIGTERM,
// and Run then returns errStallRestart) after disk.restart-after-stall:
// an active whose store failed on a stall hands over to its in-sync peer,
// the disk answers again, and the passive it now is stops in order; an
// active whose peer is not in sync cannot hand over, and stops in order
// itself (it boots passive, and the pair's rules give it the role again).
func TestStallOverRestartStopsTheDriver(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inSync bool
		want   pair.Role // when the disk answers again
	}{
		{"handed over", true, pair.RolePassive},
		{"active, no peer to take over", false, pair.RoleActive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newDriverRig(t, true, func(d *driver) { d.restartAfter = time.Second })
			r.activate()
			var over atomic.Bool
			r.store.setView(func() (pair.Replication, api.ReplicationStatus) {
				return pair.Replication{State: pair.ReplInSync, PeerInSync: tc.inSync, PeerAckedAll: tc.inSync, LSN: 10},
					api.ReplicationStatus{Role: "primary", Failed: stalledProbe, FailedStall: true, StallOver: over.Load()}
			})
			for range 20 {
				r.step()
			}
			st := r.status()
			if st.Role != tc.want {
				t.Fatalf("%s/%s (%s), want %s", st.Role, st.Substate, st.SwitchoverBlocked, tc.want)
			}
			if a, _ := r.d.ev.alarm("wip-failed"); tc.want == pair.RoleActive && !strings.Contains(a.Text, "staying active without committing, as the peer cannot take over (the peer is not in sync); the disk does not answer yet; once it has answered for 1s, tandemd restarts itself to reopen the store") {
				t.Fatalf("alarm %q", a.Text)
			}
			over.Store(true)
			// Steps as r.step, but the loop may end: wait for it to settle or to
			// end (the restart record's I/O counts in answering, so the clock does
			// not move on while the disk writes it).
			var stopErr error
			stopped := false
			for i := 0; i < 1000 && !stopped; i++ {
				r.peerAlive()
				r.clk.Advance(r.period)
				for !stopped && (r.clk.Pending() < 2 || r.d.answering.Load() > 0 || len(r.d.in) > 0) {
					select {
					case stopErr = <-r.done:
						stopped = true
					default:
						runtime.Gosched()
					}
				}
			}
			if !stopped {
				t.Fatalf("the driver did not stop in 1000 steps (%v): status %+v", 1000*r.period, r.status())
			}
			r.done <- stopErr // for the rig's cleanup
			if stopErr != nil || !r.d.restarting {
				t.Fatalf("the loop ended with %v, restarting %t; want nil and true", stopErr, r.d.restarting)
			}
			if l, err := loadStallRestarts(r.d.dir); err != nil || len(l.At) != 1 {
				t.Fatalf("the record: %+v, %v; want one restart", l, err)
			}
			restart, stop := -1, -1
			for i, ev := range r.d.ev.after(0) {
				if strings.Contains(ev.Text, "stopping to restart") {
					restart = i
				}
				if strings.Contains(ev.Text, "): orderly stop") && stop < 0 {
					stop = i
				}
			}
			if countEvents(r.d.ev, "stopping to restart") != 1 || restart < 0 || stop < restart {
				t.Fatalf("want one event of the restart, then the orderly stop: %+v", r.d.ev.after(0))
			}
			if st := r.status(); st.Role != pair.RoleStopped {
				t.Fatalf("%s/%s after the stop, want stopped", st.Role, st.Substate)
			}
		})
	}
}

// A disk that hangs again before disk.restart-after-stall has passed
// (the store's StallOver turns false) restarts the count: one event says
// so, and the restart comes restart-after-stall after the disk answers
// once more, not after it first did.
func TestStallOverClearedByAFlap(t *testing.T) {
	start := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	clk := clock.NewManual(start)
	d := &driver{ev: newEventLog(100), clk: clk, log: zap.NewNop(), dir: t.TempDir(), restartAfter: time.Minute}
	passive := pair.Status{Role: pair.RolePassive}
	failed := api.ReplicationStatus{Role: "secondary", Failed: stalledProbe, FailedStall: true}
	over := api.ReplicationStatus{Role: "secondary", Failed: stalledProbe, FailedStall: true, StallOver: true}
	tick := func(rs api.ReplicationStatus) bool {
		t.Helper()
		d.failedAlarm(rs, passive)
		return d.stallRestart(rs, passive)
	}
	tick(over) // answers from 10:00:00
	clk.Advance(50 * time.Second)
	if tick(failed) {
		t.Fatal("restart while the disk hangs again")
	}
	if n := countEvents(d.ev, "the disk under the failed WIP store hangs or fails again"); n != 1 {
		t.Fatalf("%d events of the new hang, want 1: %+v", n, d.ev.after(0))
	}
	if a, _ := d.ev.alarm("wip-failed"); strings.Contains(a.Text, "answers again") {
		t.Fatalf("alarm %q while the disk hangs again", a.Text)
	}
	clk.Advance(10 * time.Second) // 10:01:00, the first plan's restart time
	if tick(over) {
		t.Fatal("restart at the first answer's plan: the time before the new hang counted")
	}
	want := "restarts itself to reopen the store at 2026-12-07T10:02:00Z"
	if a, _ := d.ev.alarm("wip-failed"); !strings.Contains(a.Text, want) {
		t.Fatalf("alarm %q, want %q in it", a.Text, want)
	}
	clk.Advance(time.Minute)
	if !tick(over) {
		t.Fatal("no restart a restart-after-stall after the disk answered again")
	}
	if n := countEvents(d.ev, "the disk under the failed WIP store answers again"); n != 2 {
		t.Fatalf("%d events of the disk answering, want 2", n)
	}
}
