package pairlab

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
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
// as the disk hangs. After disk.stall-timeout the active's store fails,
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
	ev, err := waitEvent(ctx, a, func(ev api.Event) bool { return ev.Kind == "alarm" && strings.HasPrefix(ev.Text, "wip-failed: ") })
	if err != nil {
		t.Fatalf("waiting for wip-failed on a: %v", err)
	}
	if !strings.Contains(ev.Text, "the disk has stalled") || !strings.Contains(ev.Text, "has not completed in") {
		t.Errorf("alarm event %q does not name the stall", ev.Text)
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
	if !strings.Contains(a.Log(), "the WIP store has failed: handing the active role over to the peer") {
		t.Error("a's log does not say it handed over for its failed store")
	}
	if !strings.Contains(b.Log(), "promoted with the old primary gone: peer marked outdated") {
		t.Error("b did not go on alone at its promotion")
	}
	logGap(t, "b's runtime started", a.Log(), "the store has failed", b.Log(), "runtime started on b")
	// The disk comes back: the stuck writes return, acknowledging nothing.
	recoverFailedNode(t, e, ctx, a, b, "the disk has stalled", acked, total, fsys.Thaw)
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
// a hangfs mount, and returns it with the mount.
func stallingPair(t *testing.T, n, under string, watchdog time.Duration) (*e2e, *hangfs.FS) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "/dev/fuse (FUSE): %v", err)
	}
	e := newE2EPair(t, Options{Extra: "disk:\n  stall-timeout: " + labStallTimeout + "\n", Watchdog: watchdog})
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
	if !strings.Contains(a.Log(), "the WIP store has failed: handing the active role over to the peer") {
		t.Error("a's log does not say it handed over for its failed store")
	}
	logGap(t, "b's runtime started", a.Log(), "the store has failed", b.Log(), "runtime started on b")
	// The disk comes back; the operator restarts a (its store stays
	// failed until then).
	recoverFailedNode(t, e, ctx, a, b, "the disk has stalled", acked, total, fsys.Thaw)
}
