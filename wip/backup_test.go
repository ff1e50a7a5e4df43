package wip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
)

// TestBackupUnderWritersAndRestore: a backup taken while 8 writers commit
// holds every commit acknowledged before Backup was called; its manifest
// names the lineage the copy holds; the restored store opens with that
// lineage and continues it in a new epoch.
func TestBackupUnderWritersAndRestore(t *testing.T) {
	dir, parent := t.TempDir(), t.TempDir()
	clk := clock.NewManual(time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC))
	s := openT(t, dir, Options{Mode: Async, Clock: clk})
	if err := s.Promote(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		acked []string
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("w%d/%06d", w, i)
				b := s.NewBatch()
				b.Set([]byte(k), []byte(strings.Repeat("v", 512)))
				if _, err := s.Commit(context.Background(), b); err != nil {
					t.Errorf("commit %s: %v", k, err)
					return
				}
				mu.Lock()
				acked = append(acked, k)
				mu.Unlock()
			}
		}()
	}
	waitFor(t, "some commits", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) > 2000 })
	mu.Lock()
	before := append([]string(nil), acked...)
	mu.Unlock()
	bk, err := s.Backup(parent, "a")
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if bk.Epoch != 3 || bk.LSN < uint64(len(before)) || bk.Node != "a" || bk.Bytes == 0 || !bk.Created.Equal(clk.Now()) {
		t.Fatalf("backup %+v: want epoch 3, LSN >= %d, node a, a size, created now", bk, len(before))
	}
	if want := fmt.Sprintf("wip-20261206T040000.000Z-e3-l%d", bk.LSN); filepath.Base(bk.Path) != want {
		t.Errorf("backup directory %s, want %s", filepath.Base(bk.Path), want)
	}
	total := s.Status().DurableLSN
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	list, err := ListBackups(parent)
	if err != nil || len(list) != 1 || list[0].LSN != bk.LSN || list[0].Checksum != bk.Checksum {
		t.Fatalf("ListBackups = %+v, %v", list, err)
	}

	dst := filepath.Join(t.TempDir(), "restored")
	got, err := Restore(bk.Path, dst)
	if err != nil || got.LSN != bk.LSN {
		t.Fatalf("Restore = %+v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dst, backupManifest)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the manifest was copied into the store: %v", err)
	}
	r := openT(t, dst, Options{Mode: Async})
	defer r.Close()
	if st := r.Status(); st.Epoch != 3 || st.DurableLSN != bk.LSN {
		t.Fatalf("restored store at epoch %d LSN %d, want the manifest's 3/%d (the source reached %d)", st.Epoch, st.DurableLSN, bk.LSN, total)
	}
	for _, k := range before {
		if _, ok, err := r.Get([]byte(k)); err != nil || !ok {
			t.Fatalf("%s, acknowledged before the backup, is not in it (%v)", k, err)
		}
	}
	if err := r.Promote(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	if lsn := commitKV(t, r, "after-restore", "1"); lsn != bk.LSN+1 {
		t.Fatalf("first commit after the restore at LSN %d, want %d", lsn, bk.LSN+1)
	}
	if _, err := Restore(bk.Path, dst); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("restore over a store: %v, want a refusal", err)
	}
}

// TestRestoreRefusesABadBackup: a manifest that does not match the copy, a
// damaged sstable and an unreadable manifest are refused with the reason,
// and nothing is left at the destination.
func TestRestoreRefusesABadBackup(t *testing.T) {
	dir, parent := t.TempDir(), t.TempDir()
	s := openT(t, dir, Options{Mode: Async})
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		b := s.NewBatch()
		b.Set(fmt.Appendf(nil, "k%04d", i), []byte(strings.Repeat("x", 4096)))
		if _, err := s.Commit(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.db.Flush(); err != nil { // the data in an sstable, not only the WAL
		t.Fatal(err)
	}
	bk, err := s.Backup(parent, "a")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	clone := func(name string) string {
		t.Helper()
		d := filepath.Join(t.TempDir(), name)
		if err := copyDir(bk.Path, d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	lying := clone("lying")
	m := filepath.Join(lying, backupManifest)
	b, _ := os.ReadFile(m)
	os.WriteFile(m, []byte(strings.Replace(string(b), fmt.Sprintf(`"lsn": %d`, bk.LSN), `"lsn": 7`, 1)), 0o640)

	damaged := clone("damaged")
	ssts, _ := filepath.Glob(filepath.Join(damaged, "*.sst"))
	if len(ssts) == 0 {
		t.Fatal("no sstable in the backup")
	}
	f, err := os.OpenFile(ssts[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	buf := make([]byte, 1)
	f.ReadAt(buf, fi.Size()/3)
	buf[0] ^= 0xff
	f.WriteAt(buf, fi.Size()/3)
	f.Close()

	garbled := clone("garbled")
	os.WriteFile(filepath.Join(garbled, backupManifest), []byte("{not json"), 0o640)

	for _, tc := range []struct{ src, want string }{
		{lying, "the manifest says epoch 1 LSN 7"},
		{damaged, "checksum mismatch"},
		{garbled, filepath.Join(garbled, backupManifest)},
		{t.TempDir(), "is not a backup"},
	} {
		dst := filepath.Join(t.TempDir(), "store")
		_, err := Restore(tc.src, dst)
		if err == nil || !errors.Is(err, ErrBackup) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("restore of %s: %v, want an error with %q", filepath.Base(tc.src), err, tc.want)
		}
		if _, serr := os.Stat(dst); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("restore of %s left %s behind (%v)", filepath.Base(tc.src), dst, serr)
		}
		if _, serr := os.Stat(dst + ".restoring"); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("restore of %s left its working copy behind", filepath.Base(tc.src))
		}
	}
}

// TestPruneBackups keeps the newest and removes partial backups that a
// later complete one outdates; a wip-* directory without a manifest is an
// error naming it, not a silent skip.
func TestPruneBackups(t *testing.T) {
	dir, parent := t.TempDir(), t.TempDir()
	clk := clock.NewManual(time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC))
	s := openT(t, dir, Options{Mode: Async, Clock: clk})
	defer s.Close()
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	// An abandoned partial backup from a crash, older than what follows.
	partial := filepath.Join(parent, backupPartial+"20261206T035900.000Z-1")
	os.Mkdir(partial, 0o750)
	old := clk.Now().Add(-time.Hour)
	os.Chtimes(partial, old, old)
	var made []Backup
	for i := 0; i < 5; i++ {
		commitKV(t, s, fmt.Sprint("k", i), "v")
		bk, err := s.Backup(parent, "a")
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, bk)
		clk.Advance(time.Minute)
	}
	// One another node is still writing: recent, kept.
	writing := filepath.Join(parent, backupPartial+"20261206T040400.000Z-2")
	os.Mkdir(writing, 0o750)
	recent := clk.Now().Add(-10 * time.Minute)
	os.Chtimes(writing, recent, recent)
	removed, err := PruneBackups(parent, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{made[0].Path, made[1].Path, made[2].Path, partial}
	if strings.Join(removed, "\n") != strings.Join(want, "\n") {
		t.Fatalf("removed\n%s\nwant\n%s", strings.Join(removed, "\n"), strings.Join(want, "\n"))
	}
	list, err := ListBackups(parent)
	if err != nil || len(list) != 2 || list[0].Path != made[3].Path || list[1].LSN != 5 {
		t.Fatalf("left: %+v, %v", list, err)
	}
	if _, err := os.Stat(writing); err != nil {
		t.Errorf("a recent partial backup was removed: %v", err)
	}
	if _, err := PruneBackups(parent, 0); err == nil {
		t.Error("keep 0 accepted")
	}
	os.Mkdir(filepath.Join(parent, "wip-stray"), 0o750)
	if _, err := ListBackups(parent); err == nil || !strings.Contains(err.Error(), "wip-stray") {
		t.Errorf("a wip-* directory without a manifest: %v, want an error naming it", err)
	}
}

// TestRestoredNodeCatchesUp: a backup taken on the secondary, restored
// into its directory after the store was lost, rejoins the pair behind the
// primary and catches up; nothing acknowledged is missing on it.
func TestRestoredNodeCatchesUp(t *testing.T) {
	p := newPair(t, Options{PeerAckTimeout: 200 * time.Millisecond})
	a, b := p.synced()
	defer a.Close()
	for i := 0; i < 100; i++ {
		commitKV(t, a, fmt.Sprintf("k%03d", i), "before")
	}
	bk, err := b.Backup(t.TempDir(), "b")
	if err != nil {
		t.Fatal(err)
	}
	if bk.LSN != 100 || bk.Epoch != 1 {
		t.Fatalf("backup of the in-sync secondary at %d/%d, want 1/100", bk.Epoch, bk.LSN)
	}
	b.kill()
	for i := 100; i < 150; i++ {
		commitKV(t, a, fmt.Sprintf("k%03d", i), "after") // a degrades alone meanwhile
	}
	if err := os.RemoveAll(p.dirB); err != nil { // the disk is lost
		t.Fatal(err)
	}
	if _, err := Restore(bk.Path, p.dirB); err != nil {
		t.Fatal(err)
	}
	b = p.open("b", nil)
	defer b.Close()
	waitFor(t, "the restored node in sync", inSync(a))
	// In sync means the primary has sent all it missed and waits for it
	// from now on; the last of the catch-up may still be on its way.
	waitFor(t, "the restored node to hold the primary's last commit", func() bool {
		return b.Status().DurableLSN == a.Status().DurableLSN
	})
	for i := 0; i < 150; i++ {
		k := fmt.Sprintf("k%03d", i)
		if _, ok, err := b.Get([]byte(k)); err != nil || !ok {
			t.Fatalf("%s missing on the restored node after catching up (%v)", k, err)
		}
	}
	if st := b.Status(); st.DurableLSN != a.Status().DurableLSN {
		t.Fatalf("restored node at LSN %d, primary at %d", st.DurableLSN, a.Status().DurableLSN)
	}
}

// BenchmarkBackupRestore times Backup and Restore of a store of
// WIP_BACKUP_BENCH_MB MiB of 1 KiB values (default 64), written in 1 MiB
// batches, with the backup on the store's file system (hard links) and,
// when WIP_BACKUP_BENCH_OTHER names a directory on another file system,
// there too (copies). The store is filled once; each of the b.N rounds
// backs it up and restores it on every target. Prints MiB of values per
// second restored.
func BenchmarkBackupRestore(b *testing.B) {
	mb := 64
	if v := os.Getenv("WIP_BACKUP_BENCH_MB"); v != "" {
		fmt.Sscan(v, &mb)
	}
	root := b.TempDir()
	s := benchPrimary(b, filepath.Join(root, "store"))
	ctx := context.Background()
	val := make([]byte, 1024)
	rng := rand.NewChaCha8([32]byte{7})
	for i := 0; i < mb; i++ {
		bt := s.NewBatch()
		for j := 0; j < 1024; j++ {
			_, _ = rng.Read(val) // incompressible: the worst case for the copies
			bt.Set(fmt.Appendf(nil, "k%06d/%04d", i, j), val)
		}
		if _, err := s.Commit(ctx, bt); err != nil {
			b.Fatal(err)
		}
	}
	targets := []string{filepath.Join(root, "same-fs")}
	if o := os.Getenv("WIP_BACKUP_BENCH_OTHER"); o != "" {
		d, err := os.MkdirTemp(o, "wipbench-backup-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(d)
		targets = append(targets, d)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, t := range targets {
			start := clock.Real().Now()
			bk, err := s.Backup(t, "a")
			if err != nil {
				b.Fatal(err)
			}
			took := clock.Real().Since(start)
			start = clock.Real().Now()
			if _, err := Restore(bk.Path, filepath.Join(t, "restored")); err != nil {
				b.Fatal(err)
			}
			rt := clock.Real().Since(start)
			if i == 0 {
				fmt.Printf("wip-backup-bench: target=%s store_mb=%d files_mb=%.0f backup_ms=%d restore_ms=%d restore_mb_s=%.0f\n",
					t, mb, float64(bk.Bytes)/(1<<20), took.Milliseconds(), rt.Milliseconds(), float64(mb)/rt.Seconds())
			}
			if err := os.RemoveAll(bk.Path); err != nil {
				b.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(t, "restored")); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestCloseWaitsForBackup: Close while a Backup runs waits for it (pebble
// must not be closed under a checkpoint); a Backup after Close is refused.
func TestCloseWaitsForBackup(t *testing.T) {
	s := openT(t, t.TempDir(), Options{Mode: Async})
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	commitKV(t, s, "k", "v")
	s.backupMu.Lock() // a Backup in progress
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitFor(t, "Close to mark the store closed", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.closed })
	for i := 0; i < 10; i++ { // Close must still be waiting for the backup
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while a backup held the store", err)
		default:
		}
		clock.Sleep(context.Background(), clock.Real(), 5*time.Millisecond)
	}
	if _, _, err := s.Get([]byte("k")); err != nil { // pebble is still open under the backup
		t.Fatalf("read during the backup, after Close began: %v", err)
	}
	s.backupMu.Unlock()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Backup(t.TempDir(), "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Backup after Close: %v, want ErrClosed", err)
	}
}
