package wip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap/zaptest"

	"github.com/tandem-ha/tandem/internal/clock"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func openT(t *testing.T, dir string, o Options) *Store {
	t.Helper()
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t)
	}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return s
}

func commitKV(t *testing.T, s *Store, k, v string) uint64 {
	t.Helper()
	b := s.NewBatch()
	b.Set([]byte(k), []byte(v))
	lsn, err := s.Commit(context.Background(), b)
	if err != nil {
		t.Fatalf("commit %s: %v", k, err)
	}
	return lsn
}

// commitKeys commits n keys k00, k01... (each its own value) one by one
// and returns them, every one acknowledged.
func commitKeys(t *testing.T, s *Store, n int) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
		commitKV(t, s, keys[i], keys[i])
	}
	return keys
}

func mustGet(t *testing.T, s *Store, k, want string) {
	t.Helper()
	v, ok, err := s.Get([]byte(k))
	if err != nil || !ok || string(v) != want {
		t.Fatalf("get %s = %q,%v,%v; want %q", k, v, ok, err, want)
	}
}

func TestLocalCommitGetScanReopen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{Mode: Async})
	if _, err := s.Commit(context.Background(), s.NewBatch()); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("commit on a secondary: %v, want ErrNotPrimary", err)
	}
	if err := s.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		if lsn := commitKV(t, s, fmt.Sprintf("k/%02d", i), fmt.Sprint(i)); lsn != uint64(i) {
			t.Fatalf("lsn %d, want %d", lsn, i)
		}
	}
	b := s.NewBatch()
	b.Delete([]byte("k/05"))
	b.Set([]byte("other"), []byte("x"))
	if _, err := s.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := s.Scan([]byte("k/"), func(k, v []byte) error { keys = append(keys, string(k)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 9 || keys[0] != "k/01" || keys[8] != "k/10" {
		t.Fatalf("scan: %v", keys)
	}
	var rev []string
	if err := s.ScanReverse([]byte("k/"), func(k, v []byte) error { rev = append(rev, string(k)); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Reverse(rev)
	if !slices.Equal(rev, keys) {
		t.Fatalf("reverse scan, reversed: %v; want %v", rev, keys)
	}
	st := s.Status()
	if st.Role != Primary || st.Epoch != 1 || st.DurableLSN != 11 || st.RetainedFirst != 1 || st.RetainedLast != 11 {
		t.Fatalf("status %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{Mode: Async})
	defer s.Close()
	st = s.Status()
	if st.Role != Secondary || st.Epoch != 1 || st.DurableLSN != 11 {
		t.Fatalf("after reopen: %+v", st)
	}
	mustGet(t, s, "k/10", "10")
	if _, ok, _ := s.Get([]byte("k/05")); ok {
		t.Fatal("k/05 survived its delete")
	}
	if err := s.Promote(context.Background(), 1); !errors.Is(err, ErrNotPromotable) {
		t.Fatalf("promote to the same epoch: %v", err)
	}
	if err := s.Promote(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	if lsn := commitKV(t, s, "after", "1"); lsn != 12 {
		t.Fatalf("lsn after reopen %d", lsn)
	}
	if err := s.Demote(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	want := []Term{{1, 1, 11}, {2, 12, 12}, {4, 13, 12}} // epoch 4 has written nothing yet
	if got := s.Terms(); !slices.Equal(got, want) {
		t.Fatalf("Terms() = %v, want %v", got, want)
	}
}

func TestOptionsNameTheField(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Mode: 7}, "Mode"},
		{Options{PeerLoss: 3}, "PeerLoss"},
		{Options{PeerAckTimeout: -1}, "PeerAckTimeout"},
		{Options{RetainBytes: -1}, "RetainBytes"},
		{Options{ListenAddr: "127.0.0.1:0", PairKey: []byte("short")}, "PairKey"},
	} {
		_, err := Open(t.TempDir(), c.o)
		if !errors.Is(err, ErrOptions) || !contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want ErrOptions naming %s", c.o, err, c.want)
		}
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s[:len(sub)] == sub || contains(s[1:], sub)))
}

// TestI2CrashLosesNothingAcknowledged: concurrent writers on a crashable
// in-memory FS; at a random point the FS is cloned as a power cut would leave
// it (unsynced data dropped at random). Every commit acknowledged before the
// clone must be in the reopened store.
func TestI2CrashLosesNothingAcknowledged(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			fs := vfs.NewCrashableMem()
			s := openT(t, "db", Options{FS: fs, Mode: Async, RetainBytes: 64 << 10})
			if err := s.Promote(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			acked := map[string]string{}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ctx.Err() == nil; i++ {
						b := s.NewBatch()
						k, v := fmt.Sprintf("w%d/%d", w, i), fmt.Sprint(i)
						b.Set([]byte(k), []byte(v))
						if _, err := s.Commit(ctx, b); err != nil {
							return
						}
						mu.Lock()
						acked[k] = v
						mu.Unlock()
					}
				}()
			}
			// Let some commits through, then cut power.
			for {
				mu.Lock()
				n := len(acked)
				mu.Unlock()
				if n >= 50+rng.IntN(300) {
					break
				}
				clock.Sleep(context.Background(), clock.Real(), time.Millisecond)
			}
			mu.Lock()
			snapshot := make(map[string]string, len(acked))
			for k, v := range acked {
				snapshot[k] = v
			}
			mu.Unlock()
			crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rand.New(rand.NewPCG(seed, 7))})
			cancel()
			wg.Wait()
			s.Close()
			r := openT(t, "db", Options{FS: crashed})
			defer r.Close()
			for k, v := range snapshot {
				mustGet(t, r, k, v)
			}
			st := r.Status()
			if st.DurableLSN < uint64(len(snapshot)) {
				t.Fatalf("reopened at LSN %d with %d acknowledged commits", st.DurableLSN, len(snapshot))
			}
			t.Logf("%d acknowledged before the crash, recovered LSN %d", len(snapshot), st.DurableLSN)
		})
	}
}
