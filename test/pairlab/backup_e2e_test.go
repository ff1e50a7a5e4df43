package pairlab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
)

// TestE2EBackupAndRestore: the active takes scheduled backups into a
// directory both nodes share (the passive takes none), the operator takes
// one with tandemctl after 300 jobs (keep is large: pruning is
// wip's and the daemon's unit tests', and here must not race the restore
// of the operator's backup). Then b
// loses its WIP store and a takes 300 more jobs alone: tandemd restore
// refuses to write over a store, restores the newest backup into the
// emptied directory, and b, started again, catches up from a. a is killed:
// b takes over with all 600 acknowledged jobs.
func TestE2EBackupAndRestore(t *testing.T) {
	bdir := filepath.Join(t.TempDir(), "backups")
	e := newE2EWith(t, Options{Extra: "backup:\n  dir: " + bdir + "\n  every: 1s\n  keep: 100\n"})
	a, b := e.pair.A, e.pair.B
	deployIngest(t, e, a)
	acked := startIngestLoad(t, e, "before", 300, 8, time.Minute).wait(t)
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	st, err := a.WaitFor(ctx, "two scheduled backups on a", func(s api.Status) bool { return s.Backup.Taken >= 2 })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a's backups: %+v", st.Backup)
	if sb := e.status(b); sb.Backup.Taken != 0 || sb.Backup.Dir != bdir {
		t.Errorf("the passive's backups: %+v, want none taken (the active takes them) in %s", sb.Backup, bdir)
	}
	out, err := a.Ctl(e.ctx, "backup")
	if err != nil || !strings.HasPrefix(out, "backup "+bdir+"/wip-") {
		t.Fatalf("tandemctl backup: %v\n%s", err, out)
	}
	src := strings.TrimSuffix(strings.Fields(out)[1], ":") // "backup PATH: epoch ..."
	if out, _ := a.Ctl(e.ctx, "status"); !strings.Contains(out, "backup: last ") || !strings.Contains(out, "every 1s on the active, keep 100, in "+bdir) {
		t.Errorf("tandemctl status has no backup line:\n%s", out)
	}
	out, err = a.Ctl(e.ctx, "backups")
	if err != nil || !strings.Contains(out, src+"\n") || strings.Count(out, "\n") < 3 {
		t.Fatalf("tandemctl backups: %v; want the operator's and the two scheduled ones\n%s", err, out)
	}

	// b loses its store; a goes on alone.
	if err := b.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for k, v := range startIngestLoad(t, e, "after", 300, 8, time.Minute).wait(t) {
		acked[k] = v
	}
	restore := func() (string, error) {
		out, err := exec.CommandContext(e.ctx, e.pair.opt.Bins.Tandemd, "restore", "--config", b.Config, src).CombinedOutput()
		return string(out), err
	}
	if out, err := restore(); err == nil || !strings.Contains(out, "not empty") {
		t.Fatalf("restore over b's store: %v, %q; want a refusal", err, out)
	}
	wipDir := filepath.Join(b.Dir, "data", "wip")
	if err := os.Rename(wipDir, wipDir+".lost"); err != nil {
		t.Fatal(err)
	}
	out, err = restore()
	if err != nil || !strings.Contains(out, "restored "+src+" into "+wipDir) {
		t.Fatalf("tandemd restore: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(out))
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	e.role(b, "passive", "in-sync")
	sa, sb := e.status(a), e.status(b)
	t.Logf("after the restore: a %s at LSN %d (peer %s), b at LSN %d", sa.Role, sa.Replication.CommittedLSN, sa.Replication.PeerState, sb.Replication.CommittedLSN)
	crashAndCheck(t, e, a, b, acked, 600)
}

// TestE2EDisasterRecoveryFromBackup is the DR procedure of
// docs/configuration.md on fresh nodes: after two switchovers (epoch 3) a
// backup is taken; both nodes lose everything (data directories and pair
// state); b is restored from the backup and both start. b, with the data,
// must win the election in an epoch above the backup's and a must follow
// it. Before the pair state took the store's epoch, b's promotion went to
// epoch 2, which its store refused: the DR pair had no active (a, with an
// empty store, saw b's data ahead of its own and stayed outdated).
func TestE2EDisasterRecoveryFromBackup(t *testing.T) {
	bdir := filepath.Join(t.TempDir(), "backups")
	e := newE2EWith(t, Options{Extra: "backup:\n  dir: " + bdir + "\n  every: 0s\n"})
	a, b := e.pair.A, e.pair.B
	deployIngest(t, e, a)
	acked := startIngestLoad(t, e, "e1-", 100, 8, time.Minute).wait(t)
	// Epoch 2 on b, then 3 on a: the drill, run on the active (its
	// second leg is a request to b).
	if out, err := a.Ctl(e.ctx, "drill"); err != nil || !strings.Contains(out, "drill passed: a active again in epoch 3") {
		t.Fatalf("tandemctl drill on a: %v\n%s", err, out)
	}
	e.role(a, "active", "paired")
	e.role(b, "passive", "in-sync")
	for k, v := range startIngestLoad(t, e, "e3-", 100, 8, time.Minute).wait(t) {
		acked[k] = v
	}
	out, err := a.Ctl(e.ctx, "backup")
	if err != nil || !strings.Contains(out, ": epoch 3, ") {
		t.Fatalf("tandemctl backup on a: %v\n%s", err, out)
	}
	src := strings.TrimSuffix(strings.Fields(out)[1], ":")
	for _, n := range []*Node{b, a} {
		if err := n.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The DR site: nodes with nothing on them but their configuration.
	for _, n := range []*Node{a, b} {
		if err := os.RemoveAll(filepath.Join(n.Dir, "data")); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.CommandContext(e.ctx, e.pair.opt.Bins.Tandemd, "restore", "--config", b.Config, src).CombinedOutput(); err != nil {
		t.Fatalf("tandemd restore on b: %v\n%s", err, out)
	}
	for _, n := range []*Node{a, b} {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	sb := e.role(b, "active", "")
	e.role(a, "passive", "in-sync")
	if sb.Epoch <= 3 {
		t.Errorf("b active in epoch %d, want above the backup's 3", sb.Epoch)
	}
	checkJobsOn(t, e, b, acked)
	if len(acked) != 200 {
		t.Errorf("%d jobs acknowledged, want 200", len(acked))
	}
	if strings.Contains(b.Log(), "quarantine") || strings.Contains(a.Log(), "quarantine") {
		t.Errorf("a node quarantined commits after the restore")
	}
}
