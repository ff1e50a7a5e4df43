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
	testenv.RequireCommands(t, "mount", "umount")
	e := newE2EPair(t, Options{})
	a, b := e.pair.A, e.pair.B
	wipDir := filepath.Join(a.Dir, "data", "wip")
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
	deployIngest(t, e, a)

	const total, workers = 1500, 16
	load := startIngestLoad(t, e, "f", total, workers, 2*time.Minute)
	for load.accepted.Load() < total/3 && load.ctx.Err() == nil {
		clock.Sleep(load.ctx, clock.Real(), 5*time.Millisecond)
	}
	before := load.accepted.Load()
	filled := fillFS(t, filepath.Join(wipDir, "filler"))
	t.Logf("%d jobs accepted; filled a's WIP file system with %d MiB", before, filled>>20)

	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	ev, err := waitEvent(ctx, a, func(ev api.Event) bool { return ev.Kind == "alarm" && strings.HasPrefix(ev.Text, "wip-failed: ") })
	if err != nil {
		t.Fatalf("waiting for wip-failed on a: %v", err)
	}
	if !strings.Contains(ev.Text, "no space left on device") {
		t.Errorf("alarm event %q does not name the cause", ev.Text)
	}
	e.role(b, "active", "")
	acked := load.wait(t)
	t.Logf("%d jobs acknowledged in all", len(acked))
	st, err := a.WaitFor(ctx, "a passive, failed, not promotable", func(s api.Status) bool {
		return s.Role == "passive" && s.SubState == "inconsistent" && s.Replication.Failed != "" && strings.Contains(s.Replication.DataState, "failed")
	})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, al := range st.Alarms {
		if al.ID == "wip-failed" {
			found = true
			if al.Severity != "critical" || !strings.Contains(al.Text, "not promotable") || !strings.Contains(al.Text, "no space left on device") {
				t.Errorf("wip-failed on the old active: %s %q", al.Severity, al.Text)
			}
		}
	}
	if !found {
		t.Errorf("a's alarms lack wip-failed: %+v", st.Alarms)
	}
	if !strings.Contains(a.Log(), "the WIP store has failed: handing the active role over to the peer") {
		t.Error("a's log does not say it handed over for its failed store")
	}
	// a's heartbeat said no-follow: b went on alone at once, and did not
	// hold the resumed jobs for peer-ack-timeout waiting for a.
	if !strings.Contains(b.Log(), "promoted with the old primary gone: peer marked outdated") || strings.Contains(b.Log(), "peer marked outdated; continuing alone") {
		t.Error("b did not go on alone at its promotion")
	}
	if at, ok := logTime(a.Log(), "the store has failed"); ok {
		if up, ok := logTime(b.Log(), "runtime started on b"); ok {
			t.Logf("b's runtime started %v after a's store failed", up.Sub(at).Round(time.Millisecond))
		}
	}
	// The free-space watch (every 5 s) says why, on the file system
	// itself.
	st, err = a.WaitFor(ctx, "a's disk-space alarm", func(s api.Status) bool { return hasAlarm(s, "disk-space") })
	if err != nil {
		t.Fatal(err)
	}
	for _, al := range st.Alarms {
		if al.ID == "disk-space" && (al.Severity != "critical" || !strings.Contains(al.Text, "the file system of "+wipDir)) {
			t.Errorf("disk-space on a: %s %q", al.Severity, al.Text)
		}
	}
	if a.Proc().Exited() {
		t.Error("a's tandemd stopped")
	}
	checkJobsOn(t, e, b, acked)
	if len(acked) != total {
		t.Errorf("%d jobs acknowledged, want %d", len(acked), total)
	}
	jobs, err := b.API.Jobs(e.ctx, "", "load")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != total {
		t.Errorf("the new active lists %d jobs for %d distinct triggers", len(jobs), total)
	}

	// The operator frees the space and restarts a: its store reopens with
	// what it had synced, catches up from b, and the alarms clear. Then
	// b dies, and a takes over with every acknowledged job.
	if err := os.Remove(filepath.Join(wipDir, "filler")); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WaitFor(ctx, "a restarted, in sync, no store alarm", func(s api.Status) bool {
		return s.Role == "passive" && s.SubState == "in-sync" && s.Replication.Failed == "" && !hasAlarm(s, "wip-failed") && !hasAlarm(s, "disk-space")
	}); err != nil {
		t.Fatal(err)
	}
	crashAndCheck(t, e, b, a, acked, total)
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
