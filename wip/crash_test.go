package wip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// TestI2CrashUnderReplicationLosesNothingAcknowledged: sync mode over TCP,
// both nodes on crashable in-memory file systems; at a random point both lose
// power (unsynced data dropped at random). Every commit acknowledged before
// the cut is on both nodes after restart.
func TestI2CrashUnderReplicationLosesNothingAcknowledged(t *testing.T) {
	for seed := uint64(1); seed <= 2; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			fsA, fsB := vfs.NewCrashableMem(), vfs.NewCrashableMem()
			p := newPair(t, Options{})
			a := p.open("a", func(o *Options) { o.FS = fsA })
			b := p.open("b", func(o *Options) { o.FS = fsB })
			if err := a.Promote(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "in sync", inSync(a))
			w := startWriters(a, 8, 200)
			target := 100 + rng.IntN(400)
			waitFor(t, "commits", func() bool { return w.count() >= target })
			acked := w.snapshot()
			cfg := func() vfs.CrashCloneCfg {
				return vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rand.New(rand.NewPCG(seed, rng.Uint64()))}
			}
			cutA := fsA.CrashClone(cfg())
			cutB := fsB.CrashClone(cfg())
			w.halt()
			a.kill()
			b.kill()
			for name, fs := range map[string]vfs.FS{p.dirA: cutA, p.dirB: cutB} {
				s := openT(t, name, Options{FS: fs})
				checkAll(t, s, acked)
				t.Logf("%s: %d acknowledged, recovered at LSN %d", name, len(acked), s.Status().DurableLSN)
				s.Close()
			}
		})
	}
}

// TestIOErrorSweep fails the i-th write operation of the file system, for
// every i in a range, under the primary and then under the secondary: the
// store either works or fails cleanly (errors, no panic), and after a
// restart on what was synced, every acknowledged commit is there.
func TestIOErrorSweep(t *testing.T) {
	for _, side := range []string{"primary", "secondary"} {
		t.Run(side, func(t *testing.T) {
			failures := 0
			for i := int32(0); i < 120; i += 6 {
				mem := vfs.NewCrashableMem()
				var ops atomic.Int32
				inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
					// WAL writes and syncs: pebble reports those to the
					// committer; a failed MANIFEST write is fatal by design
					// (it panics the process, as a crash would).
					if op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".log") && ops.Add(1)-1 == i {
						return errorfs.ErrInjected
					}
					return nil
				})
				efs := errorfs.Wrap(mem, inj)
				acked, err := sweepOnce(t, side, efs)
				if err != nil {
					failures++
				}
				// Power cut: only synced data survives.
				cut := mem.CrashClone(vfs.CrashCloneCfg{})
				s, oerr := Open("db", Options{FS: cut})
				if oerr != nil {
					if len(acked) > 0 {
						t.Fatalf("i=%d: %d commits acknowledged but the store does not reopen: %v", i, len(acked), oerr)
					}
					continue
				}
				if side == "primary" {
					checkAll(t, s, acked)
				} else {
					// The secondary holds what it acked; sync mode acked
					// nothing it did not hold, so every commit acknowledged
					// while it was in sync is there.
					checkAll(t, s, acked)
				}
				s.Close()
			}
			t.Logf("%s: %d of 20 runs saw an injected error", side, failures)
			if failures == 0 {
				t.Fatal("no run saw an injected error: the sweep tests nothing")
			}
		})
	}
}

// sweepOnce commits 20 batches with fs under the given side and returns the
// commits that were acknowledged while that side was needed for the ack.
func sweepOnce(t *testing.T, side string, fs vfs.FS) (map[string]string, error) {
	acked := map[string]string{}
	if side == "primary" {
		s, err := Open("db", Options{FS: fs, Mode: Async})
		if err != nil {
			return acked, err
		}
		defer s.Close()
		if err := s.Promote(context.Background(), 1); err != nil {
			return acked, err
		}
		var last error
		for j := 0; j < 20; j++ {
			b := s.NewBatch()
			k := fmt.Sprint("k", j)
			b.Set([]byte(k), []byte(k))
			if _, err := s.Commit(context.Background(), b); err != nil {
				last = err
				continue
			}
			acked[k] = k
		}
		return acked, last
	}
	p := newPair(t, Options{PeerAckTimeout: 100e6})
	b, err := Open("db", Options{FS: fs, NodeID: 2, PeerAddr: p.addrA, PairKey: testKey})
	if err != nil {
		return acked, err
	}
	a := p.open("a", nil)
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		b.Close()
		return acked, err
	}
	var last error
	for j := 0; j < 20; j++ {
		bt := a.NewBatch()
		k := fmt.Sprint("k", j)
		bt.Set([]byte(k), []byte(k))
		_, err := a.Commit(context.Background(), bt)
		if err == nil && !a.Status().PeerOutdated {
			acked[k] = k // acknowledged with the secondary's ack
		}
		if err != nil {
			last = err
		}
	}
	if st := b.Status(); st.LastError != "" && errors.Is(last, nil) {
		last = errors.New(st.LastError)
	}
	b.Close()
	return acked, last
}
