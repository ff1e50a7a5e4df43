package wip

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/clock"
)

// BenchmarkReadFromTables times what a node reads when it resumes work
// after a promotion, on a store whose data lies in sstables (flushed, not
// in the memtable) and does not fit pebble's block cache: 20,000 jobs,
// each a JSON job record and 4 checkpoints of about 500 bytes (about 60
// MB). get reads one random job's record; checkpoints scans one random
// job's checkpoints; jobs scans every job record; verify reads the whole
// store back (Store.Verify), scrub its live keys (Store.Scrub, unthrottled). The data block size
// (defaultPebbleOptions) is what moves these: a point read decompresses
// one whole block.
func BenchmarkReadFromTables(b *testing.B) {
	const jobs, steps = 20_000, 4
	s := benchPrimary(b, b.TempDir())
	ctx := context.Background()
	now := clock.Real().Now()
	vars, _ := json.Marshal(map[string]string{"order": strings.Repeat("line item, ", 30), "customer": "ACME-0001"})
	id := func(i int) string { return fmt.Sprintf("job-%08d", i) }
	for i := 0; i < jobs; {
		bt := s.NewBatch()
		for end := min(i+100, jobs); i < end; i++ {
			if err := bt.PutJob(Job{ID: id(i), Deployment: "orders", State: "running", Input: vars, Created: now, Updated: now}); err != nil {
				b.Fatal(err)
			}
			for st := 0; st < steps; st++ {
				if err := bt.PutCheckpoint(Checkpoint{JobID: id(i), Step: fmt.Sprintf("s%02d", st), Vars: vars,
					IdempotencyKey: fmt.Sprintf("%s-s%02d", id(i), st), Done: st < steps-1}); err != nil {
					b.Fatal(err)
				}
			}
		}
		if _, err := s.Commit(ctx, bt); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	var tables int64
	for _, l := range s.db.Metrics().Levels {
		tables += l.TablesCount
	}
	if tables == 0 {
		b.Fatal("nothing was flushed to sstables")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	b.Run("get", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, ok, err := s.GetJob(id(rng.IntN(jobs))); err != nil || !ok {
				b.Fatalf("get: %v, found %v", err, ok)
			}
		}
	})
	b.Run("checkpoints", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			n := 0
			if err := s.Checkpoints(id(rng.IntN(jobs)), func(Checkpoint) error { n++; return nil }); err != nil || n != steps {
				b.Fatalf("checkpoints: %v, %d of %d", err, n, steps)
			}
		}
	})
	// verify is the passive's read-back (Store.Verify): every block of
	// every level, the log records' too. Its rate is per byte of the
	// store's files.
	b.Run("verify", func(b *testing.B) {
		b.SetBytes(int64(s.db.Metrics().DiskSpaceUsage()))
		for i := 0; i < b.N; i++ {
			if n, err := s.Verify(); err != nil || n < jobs*(1+steps) {
				b.Fatalf("verify: %v, %d points", err, n)
			}
		}
	})
	// scrub is the active's read-back (Store.Scrub) without its rate
	// limit: every live key through 1 MiB chunks of iteration. Its rate
	// is per byte of the store's files too, for comparison with verify.
	b.Run("scrub", func(b *testing.B) {
		b.SetBytes(int64(s.db.Metrics().DiskSpaceUsage()))
		for i := 0; i < b.N; i++ {
			if n, err := s.Scrub(ctx, 0); err != nil || n < jobs*(1+steps) {
				b.Fatalf("scrub: %v, %d keys", err, n)
			}
		}
	})
	b.Run("jobs", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			n := 0
			if err := s.Jobs(func(Job) error { n++; return nil }); err != nil || n != jobs {
				b.Fatalf("jobs: %v, %d of %d", err, n, jobs)
			}
		}
	})
}

// benchPrimary opens a store in dir as an async primary without a peer,
// closed when the benchmark ends.
func benchPrimary(b *testing.B, dir string) *Store {
	b.Helper()
	s, err := Open(dir, Options{Mode: Async})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Promote(context.Background(), 1); err != nil {
		b.Fatal(err)
	}
	return s
}
