package pairlab

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/test/lab"
	"github.com/tandem-ha/tandem/test/lab/hangfs"
)

// labStallTimeout is disk.stall-timeout in the stall tests: short, so the
// lab's bounded runs see the failure, long against the lab's fsyncs.
const labStallTimeout = "2s"

// TestE2EActiveDiskStallsHandsOver: the disk under the active's WIP store
// hangs (a FUSE pass-through over data-dir/wip whose writes and syncs are
// frozen: they block in the kernel and never fail) while clients start
// jobs through the VIP. Nothing fails on its own: the heartbeats, which do
// not touch the disk, would keep the passive from taking over for as long
// as the disk hangs. At half of disk.stall-timeout the active warns
// (wip-slow-write); after disk.stall-timeout its store fails,
// naming the write that stalled; the active raises wip-failed, hands the
// role over to the in-sync passive and stays passive, not promotable.
// Every job acknowledged before, during and after is on the new active,
// and no trigger became two jobs. The disk back and a restarted, a
// catches up and, when b dies, takes over with every acknowledged job.
func TestE2EActiveDiskStallsHandsOver(t *testing.T) {
	e, fsys := stallingPair(t, "a", "wip", 0)
	a, b := e.pair.A, e.pair.B
	const total = 900
	load := freezeUnderLoad(t, e, fsys, "a", total)
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	slow, err := waitEvent(ctx, a, func(ev api.Event) bool { return ev.Kind == "alarm" && strings.HasPrefix(ev.Text, "wip-slow-write: ") })
	if err != nil {
		t.Fatalf("waiting for wip-slow-write on a: %v", err)
	}
	if !strings.Contains(slow.Text, "the commit of LSN") || !strings.Contains(slow.Text, "disk.stall-timeout") {
		t.Errorf("alarm event %q does not name the slow write", slow.Text)
	}
	ev, err := waitEvent(ctx, a, func(ev api.Event) bool { return ev.Kind == "alarm" && strings.HasPrefix(ev.Text, "wip-failed: ") })
	if err != nil {
		t.Fatalf("waiting for wip-failed on a: %v", err)
	}
	if !strings.Contains(ev.Text, "the disk has stalled") || !strings.Contains(ev.Text, "has not completed in") {
		t.Errorf("alarm event %q does not name the stall", ev.Text)
	}
	t.Logf("a warned %v before it failed: %s", ev.Time.Sub(slow.Time).Round(time.Millisecond), slow.Text)
	if slow.Seq > ev.Seq {
		t.Errorf("wip-slow-write (event %d) came after wip-failed (event %d)", slow.Seq, ev.Seq)
	}
	if fsys.Held() == 0 {
		t.Error("no write is held by the frozen disk: the failure was not the stall")
	}
	e.role(b, "active", "")
	acked := load.wait(t)
	t.Logf("%d jobs acknowledged in all", len(acked))
	if len(acked) != total {
		t.Errorf("%d jobs acknowledged, want %d", len(acked), total)
	}
	if _, err := a.WaitFor(ctx, "a passive, failed, not promotable", func(s api.Status) bool {
		return s.Role == "passive" && s.SubState == "inconsistent" && strings.Contains(s.Replication.Failed, "the disk has stalled")
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.Log(), "promoted with the old primary gone: peer marked outdated") {
		t.Error("b did not go on alone at its promotion")
	}
	// The disk comes back: the stuck writes return, acknowledging nothing.
	handedOverThenRecovers(t, e, ctx, acked, total, fsys)
}

// TestE2EPassiveDiskStallsActiveGoesOn: the passive's WIP disk hangs under
// load. The active stops getting acks and goes on alone after
// peer-ack-timeout; after disk.stall-timeout the passive's store fails,
// naming the apply that stalled, and it is not promotable (its heartbeat
// says no-follow). Every acknowledged job is on the active; the disk back
// and b restarted, b catches up and takes over with all of them when a
// dies.
func TestE2EPassiveDiskStallsActiveGoesOn(t *testing.T) {
	e, fsys := stallingPair(t, "b", "wip", 0)
	a, b := e.pair.A, e.pair.B
	const total = 900
	load := freezeUnderLoad(t, e, fsys, "b", total)
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	if _, err := b.WaitFor(ctx, "b passive, failed on the stall, not promotable", func(s api.Status) bool {
		return s.Role == "passive" && s.SubState == "inconsistent" && strings.Contains(s.Replication.Failed, "the disk has stalled") && hasAlarm(s, "wip-failed")
	}); err != nil {
		t.Fatal(err)
	}
	acked := load.wait(t)
	t.Logf("%d jobs acknowledged in all", len(acked))
	if len(acked) != total {
		t.Errorf("%d jobs acknowledged, want %d", len(acked), total)
	}
	if st := e.status(a); st.Role != "active" {
		t.Fatalf("a is %s/%s", st.Role, st.SubState)
	}
	if !strings.Contains(a.Log(), "peer marked outdated; continuing alone") {
		t.Error("a did not go on alone")
	}
	recoverFailedNode(t, e, ctx, b, a, "the disk has stalled", acked, total, fsys.Thaw)
}

// freezeUnderLoad starts total jobs through the VIP from 16 clients and
// freezes fsys (node n's WIP disk) once a third are in.
func freezeUnderLoad(t *testing.T, e *e2e, fsys *hangfs.FS, n string, total int) *jobLoad {
	t.Helper()
	deployIngest(t, e, e.pair.A)
	load := startIngestLoad(t, e, "s", total, 16, 2*time.Minute)
	for load.accepted.Load() < int64(total/3) && load.ctx.Err() == nil {
		clock.Sleep(load.ctx, clock.Real(), 5*time.Millisecond)
	}
	fsys.Freeze()
	t.Logf("%d jobs accepted; froze %s's disk", load.accepted.Load(), n)
	return load
}

// stallingPair brings up a pair (disk.stall-timeout labStallTimeout; the
// service watchdog's interval, 0 for none) whose node n ("a" or "b") has
// its data-dir/wip (under "wip") or its whole data-dir (under "data") on
// a hangfs mount, and returns it with the mount. diskKeys are more lines
// of the disk: section ("restart-after-stall: 3s").
func stallingPair(t *testing.T, n, under string, watchdog time.Duration, diskKeys ...string) (*e2e, *hangfs.FS) {
	testenv.RequireFUSE(t)
	extra := "disk:\n  stall-timeout: " + labStallTimeout + "\n"
	for _, kv := range diskKeys {
		extra += "  " + kv + "\n"
	}
	e := newE2EPair(t, Options{Extra: extra, Watchdog: watchdog})
	node := e.pair.A
	if n == "b" {
		node = e.pair.B
	}
	wipDir := filepath.Join(node.Dir, "data", "wip")
	disk := filepath.Join(node.Dir, "data", "wip-disk")
	if under == "data" {
		wipDir, disk = filepath.Join(node.Dir, "data"), filepath.Join(node.Dir, "data-disk")
	}
	for _, d := range []string{wipDir, disk} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	fsys, err := hangfs.Mount(wipDir, disk, func(format string, args ...any) { t.Logf(node.Name+": hangfs: "+format, args...) })
	if err != nil {
		t.Fatalf("mount hangfs on %s: %v", wipDir, err)
	}
	// Registered after the pair's cleanup, so it runs first: the node's
	// tandemd, which keeps files open in the mount (a FUSE server lives on
	// until they close), goes first, and is not left blocked in the mount.
	t.Cleanup(func() {
		e.pair.A.Kill()
		e.pair.B.Kill()
		if err := fsys.Unmount(); err != nil {
			t.Errorf("unmount hangfs: %v", err)
		}
	})
	e.start()
	return e, fsys
}

// TestE2EActiveDataDirStallsHandsOver: the whole disk under the active
// hangs (its data-dir on hangfs: the WIP store and the pair state file),
// with tandemd under a service watchdog as image/tandemd.service runs it
// (WatchdogSec=5). The store fails after disk.stall-timeout and the
// active hands over: it releases the VIP, its persist of the passive role
// gives up after its bound (the write goes on in the background), the
// store is demoted all the same, and the advert tells the passive to take
// over. The driver keeps turning, so the watchdog does not fire. Every
// acknowledged job is on b, one per trigger. The disk back and a
// restarted, a catches up and takes over with every acknowledged job
// when b dies.
func TestE2EActiveDataDirStallsHandsOver(t *testing.T) {
	e, fsys := stallingPair(t, "a", "data", 5*time.Second)
	a, b := e.pair.A, e.pair.B
	const total = 900
	load := freezeUnderLoad(t, e, fsys, "a", total)
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	e.role(b, "active", "")
	acked := load.wait(t)
	t.Logf("%d jobs acknowledged in all", len(acked))
	if len(acked) != total {
		t.Errorf("%d jobs acknowledged, want %d", len(acked), total)
	}
	st, err := a.WaitFor(ctx, "a passive, failed, persist-failed", func(s api.Status) bool {
		return s.Role == "passive" && strings.Contains(s.Replication.Failed, "the disk has stalled") && hasAlarm(s, "persist-failed")
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Replication.Role != "secondary" {
		t.Errorf("a's store is %s after the handover, want secondary", st.Replication.Role)
	}
	if p := a.Proc(); p == nil || p.Exited() {
		t.Error("a's tandemd has stopped: the watchdog ended it")
	}
	// The disk comes back; the operator restarts a (its store stays
	// failed until then).
	handedOverThenRecovers(t, e, ctx, acked, total, fsys)
}

// TestE2EActiveFrozenMidWriteRejoins: the active's process is stopped
// (SIGSTOP: a paused VM) in the middle of a WIP write, for more than
// twice disk.stall-timeout, and the write completes only after the
// process runs again. The passive takes over on the silence. The stopped
// time is not the disk's: a's stall watch does not count it, so its store
// does not fail; a steps down for the freeze, follows b and is in sync
// again with no restart. Every acknowledged job is on b, one per trigger.
func TestE2EActiveFrozenMidWriteRejoins(t *testing.T) {
	e, fsys := stallingPair(t, "a", "wip", 0)
	// As a real disk's I/O: the stopped thread stays in its system call
	// (with FUSE's interrupt answered, its fdatasync would return EINTR
	// and be made again: wip/eintr.go). A SIGKILLed tandemd would then
	// wait for the thaw: the cleanup thaws first.
	fsys.SetUninterruptible(true)
	t.Cleanup(fsys.Thaw)
	a, b := e.pair.A, e.pair.B
	const total = 900
	load := freezeUnderLoad(t, e, fsys, "a", total)
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	for fsys.Held() == 0 && ctx.Err() == nil {
		clock.Sleep(ctx, clock.Real(), time.Millisecond)
	}
	proc := a.Proc()
	if err := proc.Freeze(); err != nil {
		t.Fatal(err)
	}
	stopped := clock.Real().Now()
	e.role(b, "active", "")
	stall, err := time.ParseDuration(labStallTimeout)
	if err != nil {
		t.Fatal(err)
	}
	clock.Sleep(ctx, clock.Real(), 2*stall)
	if err := proc.Thaw(); err != nil {
		t.Fatal(err)
	}
	t.Logf("a stopped for %v", clock.Real().Since(stopped).Round(time.Millisecond))
	// The disk answers a little after the process runs again, so that the
	// stall watch looks at the write before it completes.
	clock.Sleep(ctx, clock.Real(), 300*time.Millisecond)
	fsys.Thaw()
	acked := load.wait(t)
	if len(acked) != total {
		t.Errorf("%d jobs acknowledged, want %d", len(acked), total)
	}
	st := e.role(a, "passive", "in-sync")
	if st.Replication.Failed != "" || hasAlarm(st, "wip-failed") {
		t.Errorf("a's store failed for the time it was stopped: %q", st.Replication.Failed)
	}
	if !strings.Contains(a.Log(), "the store's stall watch ran late") {
		t.Error("a's log does not say its stall watch ran late")
	}
	if _, err := waitEvent(ctx, a, func(ev api.Event) bool { return ev.Kind == "role" && strings.Contains(ev.Text, "frozen for") }); err != nil {
		t.Errorf("a did not step down for the freeze: %v", err)
	}
	checkJobsOn(t, e, b, acked)
}

// TestE2EIdlePassiveDiskHangs: the disk under an idle passive's WIP store
// hangs. Nothing is committed, so nothing but the store's disk probe
// writes: within the probe's interval (half of disk.stall-timeout, at
// least 1 s) and disk.stall-timeout, b's store fails naming the probe
// (wip-failed, not promotable), and a sees that its peer's data has
// failed before a failover depends on it. The disk back, b's alarm says
// when b restarts itself; the disk hangs once more before that (a disk
// that flaps), which b's status and events say, and the count starts
// over; the disk back for good, after disk.restart-after-stall (6 s
// here) b stops in order and exits non-zero, as for systemd to start it
// again; started again (systemd's part), b catches up and takes over
// when a dies.
func TestE2EIdlePassiveDiskHangs(t *testing.T) {
	const restartAfter = 6 * time.Second
	e, fsys := stallingPair(t, "b", "wip", 0, "restart-after-stall: 6s")
	a, b := e.pair.A, e.pair.B
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	e.role(b, "passive", "in-sync")
	fsys.Freeze()
	frozen := clock.Real().Now()
	if _, err := b.WaitFor(ctx, "b's store failed on its disk probe", func(s api.Status) bool {
		return strings.Contains(s.Replication.Failed, "the disk probe of") && strings.Contains(s.Replication.Failed, "the disk has stalled")
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("b's store failed %v after its disk froze", clock.Real().Since(frozen).Round(time.Millisecond))
	if fsys.Held() == 0 {
		t.Error("no write is held by the frozen disk: the failure was not the probe's stall")
	}
	if _, err := a.WaitFor(ctx, "a sees its peer's data failed", func(s api.Status) bool {
		return s.Role == "active" && strings.Contains(s.PeerView.DataState, "failed")
	}); err != nil {
		t.Fatal(err)
	}
	// The disk back: b's store stays failed, and its alarm says when b
	// restarts itself to reopen it.
	answers := func(what string) time.Time {
		t.Helper()
		fsys.Thaw()
		if _, err := b.WaitFor(ctx, "b's alarm says the disk answers again"+what, func(s api.Status) bool {
			return s.Replication.StallOver && slices.ContainsFunc(s.Alarms, func(al api.Alarm) bool {
				return al.ID == "wip-failed" && al.Severity == "critical" && strings.Contains(al.Text, "not promotable; the disk answers again") &&
					strings.Contains(al.Text, "tandemd restarts itself to reopen the store at")
			})
		}); err != nil {
			t.Fatal(err)
		}
		return clock.Real().Now()
	}
	first := answers("")
	proc := b.Proc()
	// It hangs again (a probe under way for half of disk.stall-timeout)
	// before the restart: b says so and does not restart.
	fsys.Freeze()
	if _, err := b.WaitFor(ctx, "b's status says the disk no longer answers", func(s api.Status) bool {
		return s.Replication.Failed != "" && !s.Replication.StallOver
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := waitEvent(ctx, b, func(ev api.Event) bool {
		return strings.Contains(ev.Text, "the disk under the failed WIP store hangs or fails again")
	}); err != nil {
		t.Fatalf("no event of the disk hanging again: %v", err)
	}
	t.Logf("b saw its disk hang again %v after it answered", clock.Real().Since(first).Round(time.Millisecond))
	if proc.Exited() {
		t.Fatal("b exited while its disk hung again")
	}
	clock.Sleep(ctx, clock.Real(), restartAfter) // past the first answer's plan
	if proc.Exited() {
		t.Fatal("b restarted itself on the first answer's plan, while its disk hung again")
	}
	answered := answers(", once more")
	exit := proc.Wait(ctx)
	took := clock.Real().Since(answered)
	t.Logf("b exited %v after its alarm said the disk answers again (once more): %v", took.Round(time.Millisecond), exit)
	if exit == nil || ctx.Err() != nil {
		t.Fatalf("b's exit: %v (context: %v); want a non-zero status", exit, ctx.Err())
	}
	for _, want := range []string{"stopping to restart (systemd starts tandemd again) and reopen the store; restart 1 of at most 3", "restarting to reopen the WIP store after its disk stall ended"} {
		if !strings.Contains(b.Log(), want) {
			t.Errorf("b's log does not say %q", want)
		}
	}
	if st, err := a.Status(ctx); err != nil || st.Role != "active" {
		t.Fatalf("a after b's restart: %+v, %v; want active", st.Role, err)
	}
	// systemd's part: start it again.
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitFor(ctx, "b restarted, in sync, no store alarm", func(s api.Status) bool {
		return s.Role == "passive" && s.SubState == "in-sync" && s.Replication.Failed == "" && !hasAlarm(s, "wip-failed")
	}); err != nil {
		t.Fatal(err)
	}
	crashAndCheck(t, e, a, b, map[string]string{}, 0)
}

// TestE2ELoneActiveDiskHangsRestarts: the disk under a, active with no
// peer that can take over, hangs while clients start jobs through the
// VIP: b is stopped, or b runs with both HA links cut (a goes on alone
// and b, hearing a's LSN pass its own over the LAN, knows it is
// outdated). a's store fails after disk.stall-timeout; a stays active
// without committing and says so. The disk back, a says when it restarts
// itself, stops in order after disk.restart-after-stall and exits
// non-zero; started again (systemd's part), it reopens its store and
// takes the active role again (alone: after startup-wait; beside the
// outdated b: by the election), and every trigger becomes one job, none
// lost. b back, it catches up and takes over with every acknowledged job
// when a dies.
func TestE2ELoneActiveDiskHangsRestarts(t *testing.T) {
	t.Run("peer stopped", func(t *testing.T) {
		loneActiveDiskHangs(t, func(e *e2e) func() {
			b := e.pair.B
			if err := b.Stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			e.role(e.pair.A, "active", "alone")
			return func() {
				if err := b.Start(); err != nil {
					t.Fatal(err)
				}
			}
		})
	})
	t.Run("peer outdated", func(t *testing.T) {
		loneActiveDiskHangs(t, func(e *e2e) func() {
			var cuts []*lab.Fault
			for _, l := range []string{lab.HA1If, lab.HA2If} {
				f, err := e.lab.CutLink(e.ctx, lab.NodeB, l)
				if err != nil {
					t.Fatal(err)
				}
				cuts = append(cuts, f)
			}
			return func() {
				if st := e.status(e.pair.B); st.Role != "passive" || st.SubState != "outdated" {
					t.Errorf("b while its HA links were cut: %s/%s; want passive/outdated", st.Role, st.SubState)
				}
				for _, f := range cuts {
					if err := f.Clear(); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	})
}

// loneActiveDiskHangs runs TestE2ELoneActiveDiskHangsRestarts with peer
// taking b away (it returns what brings b back).
func loneActiveDiskHangs(t *testing.T, peer func(*e2e) (back func())) {
	e, fsys := stallingPair(t, "a", "wip", 0, "restart-after-stall: 6s")
	a, b := e.pair.A, e.pair.B
	ctx, cancel := context.WithTimeout(e.ctx, 3*time.Minute)
	defer cancel()
	back := peer(e)
	const total = 600
	load := freezeUnderLoad(t, e, fsys, "a", total)
	var seen api.Alarm
	wantAlarm := func(what string, ok func(string) bool) {
		t.Helper()
		if _, err := a.WaitFor(ctx, what, func(s api.Status) bool {
			for _, al := range s.Alarms {
				if al.ID == "wip-failed" {
					seen = al
					return al.Severity == "critical" && ok(al.Text)
				}
			}
			return false
		}); err != nil {
			t.Fatalf("%v; the alarm was %s %q", err, seen.Severity, seen.Text)
		}
	}
	wantAlarm("a stays active, failed on the stall", func(text string) bool {
		return strings.Contains(text, "the disk has stalled") && strings.Contains(text, "staying active without committing, as the peer cannot take over")
	})
	t.Logf("a's alarm: %s", seen.Text)
	if st := e.status(a); st.Role != "active" {
		t.Fatalf("a is %s/%s with its store failed and no peer", st.Role, st.SubState)
	}
	proc := a.Proc()
	fsys.Thaw()
	answered := clock.Real().Now()
	wantAlarm("a's alarm says when it restarts itself", func(text string) bool {
		return strings.Contains(text, "staying active without committing") && strings.Contains(text, "tandemd restarts itself to reopen the store at")
	})
	exit := proc.Wait(ctx)
	t.Logf("a exited %v after its disk was back: %v", clock.Real().Since(answered).Round(time.Millisecond), exit)
	if exit == nil || ctx.Err() != nil {
		t.Fatalf("a's exit: %v (context: %v); want a non-zero status", exit, ctx.Err())
	}
	for _, want := range []string{"stopping to restart (systemd starts tandemd again) and reopen the store; restart 1 of at most 3", "restarting to reopen the WIP store after its disk stall ended"} {
		if !strings.Contains(a.Log(), want) {
			t.Errorf("a's log does not say %q", want)
		}
	}
	// systemd's part: start it again. Alone, it takes the role after
	// startup-wait, with its store reopened.
	restarted := clock.Real().Now()
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WaitFor(ctx, "a active again, its store reopened", func(s api.Status) bool {
		return s.Role == "active" && s.Replication.Failed == "" && !hasAlarm(s, "wip-failed")
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("a active again %v after its start", clock.Real().Since(restarted).Round(time.Millisecond))
	acked := load.wait(t)
	t.Logf("%d jobs acknowledged in all", len(acked))
	if len(acked) != total {
		t.Errorf("%d jobs acknowledged, want %d", len(acked), total)
	}
	checkJobsOn(t, e, a, acked)
	if jobs, err := a.API.Jobs(ctx, "", "load"); err != nil || len(jobs) != total {
		t.Errorf("a lists %d jobs (%v) for %d distinct triggers", len(jobs), err, total)
	}
	back()
	e.role(b, "passive", "in-sync")
	crashAndCheck(t, e, a, b, acked, total)
}

// handedOverThenRecovers checks that a handed the role over to b for its
// stalled store (its log says so; the gap to b's runtime is logged), then
// thaws a's disk and recovers a through recoverFailedNode.
func handedOverThenRecovers(t *testing.T, e *e2e, ctx context.Context, acked map[string]string, total int, fsys *hangfs.FS) {
	t.Helper()
	a, b := e.pair.A, e.pair.B
	if !strings.Contains(a.Log(), "the WIP store has failed: handing the active role over to the peer") {
		t.Error("a's log does not say it handed over for its failed store")
	}
	logGap(t, "b's runtime started", a.Log(), "the store has failed", b.Log(), "runtime started on b")
	recoverFailedNode(t, e, ctx, a, b, "the disk has stalled", acked, total, fsys.Thaw)
}
