package pairlab

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/diskrot"
)

// TestE2ECorruptPassiveRepairsItself: a byte of the passive's WIP store
// rots on disk under the running tandemd, in a block nothing has read
// since it started. Its read-back (replication.verify-every, first run a
// minute after the start) finds it; the passive raises wip-corrupt,
// resyncs from the active by snapshot, reads the result back clean and
// clears the alarm; tandemd never stops. Then the active is killed and
// the repaired passive takes over with every acknowledged job.
func TestE2ECorruptPassiveRepairsItself(t *testing.T) {
	e := newE2EWith(t, Options{VerifyEvery: "1m"})
	a, b := e.pair.A, e.pair.B
	acked := jobsInTables(t, e)
	file := flipLargestTable(t, filepath.Join(b.Dir, "data", "wip"))
	t.Logf("flipped the middle byte of %s", file)

	ctx, cancel := context.WithTimeout(e.ctx, 3*time.Minute)
	defer cancel()
	// The alarm's event, not the alarm: from the read-back to the repair
	// can take less than one status poll (20 ms seen in CI).
	seen, err := waitEvent(ctx, b, func(ev api.Event) bool { return ev.Kind == "alarm" && strings.HasPrefix(ev.Text, "wip-corrupt: ") })
	if err != nil {
		t.Fatalf("waiting for wip-corrupt on b: %v\nb's log, last lines:\n%s", err, tailLines(b.Log(), 30))
	}
	if !strings.Contains(seen.Text, filepath.Base(file)) {
		t.Errorf("alarm %q does not name %s", seen.Text, file)
	}
	// The machine's view too (the substate): until the driver's next tick
	// tells it the store is in sync again, it still holds b outdated, and
	// a crash of the active then would rightly leave b passive.
	if _, err := b.WaitFor(ctx, "b repaired", func(s api.Status) bool {
		return s.Replication.Corruption == "" && !hasAlarm(s, "wip-corrupt") && strings.HasPrefix(s.Replication.DataState, "in-sync") &&
			s.Role == "passive" && s.SubState == "in-sync"
	}); err != nil {
		t.Fatalf("%v\nb's log, last lines:\n%s", err, tailLines(b.Log(), 30))
	}
	for _, want := range []string{"WIP store read-back found a fault", "on-disk corruption in the WIP store", "snapshot complete", "corrupt store repaired"} {
		if !strings.Contains(b.Log(), want) {
			t.Errorf("b's log lacks %q", want)
		}
	}
	if b.Proc().Exited() {
		t.Fatal("b's tandemd stopped")
	}
	crashAndCheck(t, e, a, b, acked, 1500)
}

// TestE2ECorruptActiveHandsOver: the active's store has a bad block, met
// by `tandemctl verify` on it. The active hands the role over to the
// in-sync passive by itself, as a switchover does (no job is lost or
// repeated), then resyncs as the passive and repairs its store; after the
// new active's crash it takes the role back with every acknowledged job.
func TestE2ECorruptActiveHandsOver(t *testing.T) {
	e := newE2E(t)
	a, b := e.pair.A, e.pair.B
	acked := jobsInTablesOnB(t, e)
	file := flipLargestTable(t, filepath.Join(b.Dir, "data", "wip"))
	before, err := a.API.Events(e.ctx, 0) // a's own start, alone, marked b outdated then
	if err != nil || len(before) == 0 {
		t.Fatalf("a's events: %v, %d", err, len(before))
	}

	out, err := b.Ctl(e.ctx, "verify")
	if err == nil || !strings.Contains(out, "store read-back failed: ") || !strings.Contains(out, filepath.Base(file)) {
		t.Fatalf("tandemctl verify on the corrupt active: %v\n%s", err, out)
	}
	handedOverAndRepaired(t, e, a, b)
	evs, err := a.API.Events(e.ctx, before[len(before)-1].Seq)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Kind == "replication" && strings.HasPrefix(ev.Text, "peer-outdated") {
			t.Errorf("a marked b outdated at the handover: %s", ev.Text)
		}
	}
	crashAndCheck(t, e, a, b, acked, 1500)
}

// handedOverAndRepaired waits until the corrupt active b has handed the
// role to a, resynced as the passive and cleared wip-corrupt, and checks
// that b's log says so, and holds the lines in logs too.
func handedOverAndRepaired(t *testing.T, e *e2e, a, b *Node, logs ...string) {
	t.Helper()
	e.role(a, "active", "")
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	if _, err := b.WaitFor(ctx, "b repaired and in sync", func(s api.Status) bool {
		return s.Role == "passive" && s.SubState == "in-sync" && s.Replication.Corruption == "" && !hasAlarm(s, "wip-corrupt") &&
			strings.HasPrefix(s.Replication.DataState, "in-sync")
	}); err != nil {
		t.Fatalf("%v\nb's log, last lines:\n%s", err, tailLines(b.Log(), 30))
	}
	for _, want := range append([]string{"the WIP store is corrupt: handing the active role over to the peer", "corrupt store repaired"}, logs...) {
		if !strings.Contains(b.Log(), want) {
			t.Errorf("b's log lacks %q", want)
		}
	}
}

// waitEvent polls n's event log until an event satisfies ok, and returns
// it.
func waitEvent(ctx context.Context, n *Node, ok func(api.Event) bool) (api.Event, error) {
	var after uint64
	for {
		evs, err := n.API.Events(ctx, after)
		if err == nil {
			for _, ev := range evs {
				if ok(ev) {
					return ev, nil
				}
				after = ev.Seq
			}
		}
		if ctx.Err() != nil {
			return api.Event{}, fmt.Errorf("%w (last error %v)", ctx.Err(), err)
		}
		clock.Sleep(ctx, clock.Real(), 50*time.Millisecond)
	}
}

// jobsInTables runs 1500 jobs on the pair (a active) and restarts b, so
// that b's store holds them in an sstable (pebble flushes the WAL it
// replays at open); it returns the acknowledged jobs.
func jobsInTables(t *testing.T, e *e2e) map[string]string {
	t.Helper()
	a, b := e.pair.A, e.pair.B
	deployIngest(t, e, a)
	acked := startIngestLoad(t, e, "c", 1500, 16, 2*time.Minute).wait(t)
	if err := b.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	e.role(b, "passive", "in-sync")
	return acked
}

// jobsInTablesOnB is jobsInTables, then a switchover: b active with the
// jobs in a table of its store, a passive and in sync.
func jobsInTablesOnB(t *testing.T, e *e2e) map[string]string {
	t.Helper()
	a, b := e.pair.A, e.pair.B
	acked := jobsInTables(t, e)
	if out, err := a.Ctl(e.ctx, "switchover", "--wait"); err != nil {
		t.Fatalf("tandemctl switchover --wait: %v\n%s", err, out)
	}
	e.role(b, "active", "paired")
	e.role(a, "passive", "in-sync")
	return acked
}

// flipLargestTable flips the byte in the middle of the largest sstable in
// dir: a block of user keys, which make up most of a WIP store's data.
func flipLargestTable(t *testing.T, dir string) string {
	t.Helper()
	path, err := diskrot.FlipLargestTable(dir, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestE2ECorruptAtOpen: the passive's store rots while its tandemd is
// stopped, in the blocks that opening the store reads (a table's trailing
// blocks). The restarted tandemd does not stop: it sets the store aside
// with every file (wip-set-aside, which stands until acknowledged), starts
// with a new, inconsistent store, resyncs from the active and reads the
// result back clean. Then the active is killed and the passive takes over
// with every acknowledged job.
func TestE2ECorruptAtOpen(t *testing.T) {
	e := newE2E(t)
	a, b := e.pair.A, e.pair.B
	acked := jobsInTables(t, e)
	if err := b.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(b.Dir, "data", "wip")
	files, err := diskrot.FlipTrailers(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped a trailing byte of %d tables", len(files))
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	st, err := b.WaitFor(ctx, "b set its store aside and resynced", func(s api.Status) bool {
		return hasAlarm(s, "wip-set-aside") && s.Role == "passive" && s.SubState == "in-sync" && s.Replication.Corruption == "" &&
			!hasAlarm(s, "wip-corrupt") && strings.HasPrefix(s.Replication.DataState, "in-sync")
	})
	if err != nil {
		t.Fatalf("%v\nb's log, last lines:\n%s", err, tailLines(b.Log(), 30))
	}
	for _, al := range st.Alarms {
		if al.ID == "wip-set-aside" && !strings.Contains(al.Text, dir+".corrupt-") {
			t.Errorf("wip-set-aside %q does not say where the store went", al.Text)
		}
	}
	if m, _ := filepath.Glob(dir + ".corrupt-*/*.sst"); len(m) < len(files) {
		t.Errorf("the set-aside store holds %d tables, want the %d flipped", len(m), len(files))
	}
	for _, want := range []string{"met corruption when it was opened", "snapshot complete", "corrupt store repaired"} {
		if !strings.Contains(b.Log(), want) {
			t.Errorf("b's log lacks %q", want)
		}
	}
	if out, err := b.Ctl(e.ctx, "ack-alarm", "wip-set-aside"); err != nil {
		t.Fatalf("tandemctl ack-alarm wip-set-aside: %v\n%s", err, out)
	}
	crashAndCheck(t, e, a, b, acked, 1500)
}
