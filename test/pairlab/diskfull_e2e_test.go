package pairlab

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// TestE2EActiveDiskFullHandsOver: the file system under the active's WIP
// store fills up (a tmpfs of its own here, filled by another writer) while
// clients start jobs through the VIP. The active's store fails on its next
// WAL write; the active raises wip-failed, hands the role over to the
// in-sync passive as a switchover does, and stays passive, not
// promotable, without stopping. Every job acknowledged before, during and
// after is on the new active, and no trigger became two jobs. Once the
// space is freed and a restarted, a catches up and, when b dies, takes
// over with every acknowledged job.
func TestE2EActiveDiskFullHandsOver(t *testing.T) {
	e, wipDir := diskFullPair(t, "a")
	a, b := e.pair.A, e.pair.B
	const total = 1500
	acked := fillUnderLoad(t, e, wipDir, total, func() { e.role(b, "active", "") })
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	if _, err := a.WaitFor(ctx, "a passive, failed, not promotable", func(s api.Status) bool {
		return s.Role == "passive" && s.SubState == "inconsistent" && s.Replication.Failed != "" && strings.Contains(s.Replication.DataState, "failed")
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(a.Log(), "the WIP store has failed: handing the active role over to the peer") {
		t.Error("a's log does not say it handed over for its failed store")
	}
	// a's heartbeat said no-follow: b went on alone at once, and did not
	// hold the resumed jobs for peer-ack-timeout waiting for a.
	if !strings.Contains(b.Log(), "promoted with the old primary gone: peer marked outdated") || strings.Contains(b.Log(), "peer marked outdated; continuing alone") {
		t.Error("b did not go on alone at its promotion")
	}
	logGap(t, "b's runtime started", a.Log(), "the store has failed", b.Log(), "runtime started on b")
	recoverFromDiskFull(t, e, ctx, a, b, wipDir, acked, total)
}

// TestE2EPassiveDiskFullActiveGoesOn: the passive's WIP file system fills
// up under load. Its store fails; it raises wip-failed and disk-space, is
// not promotable, and its heartbeat says no-follow, so the active goes on
// alone at once instead of stalling every commit for peer-ack-timeout.
// Every acknowledged job is on the active; once the space is freed and b
// restarted, b catches up and takes over with all of them when a dies.
func TestE2EPassiveDiskFullActiveGoesOn(t *testing.T) {
	e, wipDir := diskFullPair(t, "b")
	a, b := e.pair.A, e.pair.B
	const total = 1500
	acked := fillUnderLoad(t, e, wipDir, total, nil)
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	if _, err := b.WaitFor(ctx, "b passive, failed, not promotable", func(s api.Status) bool {
		return s.Role == "passive" && s.SubState == "inconsistent" && s.Replication.Failed != "" && hasAlarm(s, "wip-failed")
	}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(a); st.Role != "active" {
		t.Fatalf("a is %s/%s", st.Role, st.SubState)
	}
	if !strings.Contains(a.Log(), "the peer cannot ack (the pair says so)") || strings.Contains(a.Log(), "peer did not ack within peer-ack-timeout") {
		t.Error("a did not go on alone on b's no-follow")
	}
	logGap(t, "a went on alone", b.Log(), "the store has failed", a.Log(), "peer marked outdated; continuing alone")
	recoverFromDiskFull(t, e, ctx, b, a, wipDir, acked, total)
}

// diskFullPair brings up a pair whose node n ("a" or "b") has a tmpfs of
// its own (96 MiB) as data-dir/wip, and returns it with that directory.
func diskFullPair(t *testing.T, n string) (*e2e, string) {
	testenv.RequireCommands(t, "mount", "umount")
	e := newE2EPair(t, Options{})
	node := e.pair.A
	if n == "b" {
		node = e.pair.B
	}
	wipDir := filepath.Join(node.Dir, "data", "wip")
	if err := os.MkdirAll(wipDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m,mode=0700", "tandem-e2e-wipfull", wipDir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v\n%s", wipDir, err, out)
	}
	// Lazily: a tandemd still running at cleanup (a failed test) does
	// not keep the mount.
	t.Cleanup(func() { _ = exec.Command("umount", "-l", wipDir).Run() })
	e.start()
	return e, wipDir
}

// fillUnderLoad starts total jobs through the VIP from 16 clients, fills
// wipDir's file system once a third are in, waits for wip-failed (naming
// ENOSPC) on the node whose directory it is, runs after (nil: nothing),
// and returns the acknowledged jobs once the load is done.
func fillUnderLoad(t *testing.T, e *e2e, wipDir string, total int, after func()) map[string]string {
	t.Helper()
	n := e.pair.A
	if strings.HasPrefix(wipDir, e.pair.B.Dir+"/") {
		n = e.pair.B
	}
	deployIngest(t, e, e.pair.A)
	load := startIngestLoad(t, e, "f", total, 16, 2*time.Minute)
	for load.accepted.Load() < int64(total/3) && load.ctx.Err() == nil {
		clock.Sleep(load.ctx, clock.Real(), 5*time.Millisecond)
	}
	before := load.accepted.Load()
	filled := fillFS(t, filepath.Join(wipDir, "filler"))
	t.Logf("%d jobs accepted; filled %s's WIP file system with %d MiB", before, n.Name, filled>>20)
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	ev, err := waitEvent(ctx, n, func(ev api.Event) bool { return ev.Kind == "alarm" && strings.HasPrefix(ev.Text, "wip-failed: ") })
	if err != nil {
		t.Fatalf("waiting for wip-failed on %s: %v", n.Name, err)
	}
	if !strings.Contains(ev.Text, "no space left on device") {
		t.Errorf("alarm event %q does not name the cause", ev.Text)
	}
	if after != nil {
		after()
	}
	acked := load.wait(t)
	t.Logf("%d jobs acknowledged in all", len(acked))
	if len(acked) != total {
		t.Errorf("%d jobs acknowledged, want %d", len(acked), total)
	}
	return acked
}

// recoverFromDiskFull checks the full node's alarms (disk-space critical,
// naming its file system) and goes on as recoverFailedNode, freeing the
// space as the operator's repair.
func recoverFromDiskFull(t *testing.T, e *e2e, ctx context.Context, full, active *Node, wipDir string, acked map[string]string, total int) {
	t.Helper()
	// The free-space watch (every 5 s) says why, on the file system
	// itself.
	st, err := full.WaitFor(ctx, full.Name+"'s disk-space and wip-failed alarms", func(s api.Status) bool {
		return hasAlarm(s, "disk-space") && hasAlarm(s, "wip-failed")
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, al := range st.Alarms {
		if al.ID == "disk-space" && (al.Severity != "critical" || !strings.Contains(al.Text, "the file system of "+wipDir)) {
			t.Errorf("disk-space on %s: %s %q", full.Name, al.Severity, al.Text)
		}
	}
	recoverFailedNode(t, e, ctx, full, active, "no space left on device", acked, total, func() {
		if err := os.Remove(filepath.Join(wipDir, "filler")); err != nil {
			t.Fatal(err)
		}
	})
}

// recoverFailedNode checks the failed node (passive, its store failed,
// wip-failed critical naming cause, still running) and that active holds
// every acknowledged job, one per trigger; then runs repair (the
// operator's: free the space, replace the disk), restarts failed, which
// catches up, and kills active: failed takes over with every
// acknowledged job.
func recoverFailedNode(t *testing.T, e *e2e, ctx context.Context, failed, active *Node, cause string, acked map[string]string, total int, repair func()) {
	t.Helper()
	// The driver words the alarm at its next poll of the store: right
	// after the role changed, it may still say what an active does.
	var seen api.Alarm
	_, err := failed.WaitFor(ctx, failed.Name+"'s wip-failed alarm, not promotable", func(s api.Status) bool {
		for _, al := range s.Alarms {
			if al.ID == "wip-failed" {
				seen = al
				return strings.Contains(al.Text, "not promotable")
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("%v; the alarm was %s %q", err, seen.Severity, seen.Text)
	}
	if seen.Severity != "critical" || !strings.Contains(seen.Text, cause) {
		t.Errorf("wip-failed on %s: %s %q, want critical, naming %q", failed.Name, seen.Severity, seen.Text, cause)
	}
	if failed.Proc().Exited() {
		t.Errorf("%s's tandemd stopped", failed.Name)
	}
	checkJobsOn(t, e, active, acked)
	jobs, err := active.API.Jobs(e.ctx, "", "load")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != total {
		t.Errorf("the active lists %d jobs for %d distinct triggers", len(jobs), total)
	}

	// The operator repairs and restarts the node: its store reopens with
	// what it had synced, catches up, and the alarms clear. Then the
	// active dies, and the node takes over with every acknowledged job.
	repair()
	if err := failed.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := failed.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := failed.WaitFor(ctx, failed.Name+" restarted, in sync, no store alarm", func(s api.Status) bool {
		return s.Role == "passive" && s.SubState == "in-sync" && s.Replication.Failed == "" && !hasAlarm(s, "wip-failed") && !hasAlarm(s, "disk-space")
	}); err != nil {
		t.Fatal(err)
	}
	crashAndCheck(t, e, active, failed, acked, total)
}

// fillFS writes path until its file system has no room left and returns
// how many bytes went in.
func fillFS(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for size := len(buf); size > 0; {
		w, err := f.Write(buf[:size])
		n += int64(w)
		switch {
		case errors.Is(err, syscall.ENOSPC):
			size /= 2 // the last pages, down to none
		case err != nil:
			t.Fatal(err)
		}
	}
	return n
}

// logGap logs the time from the first line of fromLog holding fromText
// (the failed store's) to the first of toLog holding toText.
func logGap(t *testing.T, what, fromLog, fromText, toLog, toText string) {
	t.Helper()
	at, ok1 := logTime(fromLog, fromText)
	then, ok2 := logTime(toLog, toText)
	if ok1 && ok2 {
		t.Logf("%s %v after the store failed", what, then.Sub(at).Round(time.Millisecond))
	}
}

// logTime returns the time of the first line of a JSON log that holds
// text.
func logTime(log, text string) (time.Time, bool) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, text) {
			continue
		}
		var l struct {
			TS time.Time `json:"ts"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && !l.TS.IsZero() {
			return l.TS, true
		}
	}
	return time.Time{}, false
}
