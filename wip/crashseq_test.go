package wip

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tandem-ha/tandem/internal/clock"
)

// crashSeeds is the first seed and how many random sequences
// TestCrashSequencesLoseNothing runs: seeds 1-3 by default; WIP_CRASH_SEEDS
// for a longer campaign and WIP_CRASH_FIRST for seeds no earlier campaign
// ran (`WIP_CRASH_FIRST=1000 WIP_CRASH_SEEDS=200 go test -run
// CrashSequences ./wip/`).
func crashSeeds(t *testing.T) (first, n uint64) {
	parse := func(name string, def uint64) uint64 {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			t.Fatalf("%s=%q: want a positive count", name, v)
		}
		return n
	}
	return parse("WIP_CRASH_FIRST", 1), parse("WIP_CRASH_SEEDS", 3)
}

// crashNode is one node of the pair on a crashable in-memory file system:
// a power cut replaces fs by what it had synced.
type crashNode struct {
	name string
	fs   *vfs.MemFS
	s    *Store
	// cut stops the store's Data and Ack frames from the instant of a
	// power cut until it is down, as the cut would: a store still running
	// on the old file system must not tell its peer it holds what the cut
	// took away.
	cut atomic.Bool
}

// TestCrashSequencesLoseNothing takes a sync-mode pair through a random
// sequence of power cuts under concurrent writers, each cut dropping a
// random share of the unsynced data:
//   - the secondary: it restarts on what it had synced and catches up (with
//     peer loss "degrade", only after the primary went on alone and marked
//     it Outdated; with a small log window, by snapshot), and may lose power
//     again while it does;
//   - the primary: the secondary is promoted in the next epoch, and the old
//     primary rejoins on what it had synced, quarantining any suffix the
//     peer never acked;
//   - both: either node is promoted (unless the primary had gone on alone,
//     it acknowledged nothing the secondary did not hold durably) and the
//     other rejoins.
//
// After every event, once the pair is in sync, every commit acknowledged
// before the cut is on both nodes, both hold the same LSN, and their states
// are equal key for key.
func TestCrashSequencesLoseNothing(t *testing.T) {
	first, n := crashSeeds(t)
	for seed := first; seed < first+n; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x7a11))
			// Odd seeds block on peer loss; even seeds degrade, and there
			// a restarted secondary comes back only after the primary has
			// gone on alone: it must learn it is Outdated and catch up.
			base := Options{PeerLoss: Block}
			if seed%2 == 0 {
				base = Options{PeerLoss: Degrade, PeerAckTimeout: time.Second}
			}
			// One seed in three keeps a log window of 64 KiB: a
			// secondary that comes back after the primary went on alone
			// is sent a snapshot, which a second cut may interrupt.
			if seed%3 == 0 {
				base.RetainBytes = 64 << 10
			}
			p := newPair(t, base)
			open := func(n *crashNode) {
				n.cut.Store(false)
				n.s = p.open(n.name, func(o *Options) {
					o.FS = n.fs
					o.testOutput = func() bool { return !n.cut.Load() }
				})
			}
			cut := func(n *crashNode) {
				n.cut.Store(true)
				n.fs = n.fs.CrashClone(vfs.CrashCloneCfg{
					UnsyncedDataPercent: rng.IntN(101),
					RNG:                 rand.New(rand.NewPCG(seed, rng.Uint64())),
				})
			}
			var snapshots, divergences uint64
			down := func(n *crashNode) { // a kill, counting what the store did
				c := n.s.Status().Counters
				snapshots += c.Snapshots
				divergences += c.Divergences
				n.s.kill()
			}
			prim := &crashNode{name: "a", fs: vfs.NewCrashableMem()}
			sec := &crashNode{name: "b", fs: vfs.NewCrashableMem()}
			open(prim)
			open(sec)
			defer func() {
				down(prim)
				down(sec)
			}()
			epoch := uint64(1)
			if err := prim.s.Promote(context.Background(), epoch); err != nil {
				t.Fatal(err)
			}
			acked := map[string]string{}
			var events []string
			for round := 0; round < 6; round++ {
				waitPair(t, prim, sec, "the pair in sync", inSync(prim.s))
				w := startWritersPrefixed(prim.s, fmt.Sprintf("r%d/", round), 4, 64+rng.IntN(2048))
				n := 20 + rng.IntN(200)
				waitPair(t, prim, sec, "commits", func() bool { return w.count() >= n })
				before := w.snapshot()
				// Whether the node that rejoins may need a snapshot: only
				// when it was away past the window, or the primary went on
				// alone (past a 64 KiB window), or it diverged. Otherwise
				// the other node's log must still hold what it lacks.
				mayNeedSnapshot := false
				switch ev := rng.IntN(3); ev {
				case 0: // the secondary loses power and comes back
					events = append(events, "secondary")
					held := prim.s.Status().PeerAckedLSN
					cut(sec)
					down(sec)
					if base.PeerLoss == Degrade {
						waitPair(t, prim, sec, "the primary to go on alone", func() bool { return prim.s.Status().PeerOutdated })
						m := w.count()
						waitPair(t, prim, sec, "commits without the peer", func() bool { return w.count() >= m+20 })
						if base.RetainBytes > 0 {
							// Past the window: the catch-up is a snapshot.
							waitPair(t, prim, sec, "the log window to move past the secondary", func() bool {
								return prim.s.Status().RetainedFirst > held+1
							})
							events[len(events)-1] = "secondary(snapshot)"
							mayNeedSnapshot = true
						}
					}
					open(sec)
					if rng.IntN(2) == 0 {
						// Cut again while it catches up (or is sent the
						// snapshot).
						clock.Sleep(context.Background(), clock.Real(), time.Duration(rng.IntN(20))*time.Millisecond)
						events[len(events)-1] += "+again"
						cut(sec)
						down(sec)
						open(sec)
					}
					// The primary goes on: its writers wait for the
					// restarted secondary to catch up, then commit again.
					m := w.count()
					waitPair(t, prim, sec, "commits after the secondary's restart", func() bool { return w.count() >= m+20 })
					for k, v := range w.halt() {
						acked[k] = v
					}
				case 1: // the primary loses power; the secondary takes over
					cut(prim)
					for k, v := range before {
						acked[k] = v
					}
					alone := prim.s.Status().PeerOutdated
					down(prim)
					w.halt()
					if alone {
						// A stall beyond PeerAckTimeout made the primary
						// degrade: it may have acknowledged commits the
						// secondary lacks, so the pair must not promote
						// the secondary (tandemd's fence-peer hook tells it
						// so). The old primary restarts and goes on.
						events = append(events, "primary(degraded: restarted)")
						mayNeedSnapshot = true
						open(prim)
						epoch++
						if err := prim.s.Promote(context.Background(), epoch); err != nil {
							t.Fatalf("events %v: promoting the degraded primary after its restart: %v", events, err)
						}
						break
					}
					events = append(events, "primary")
					waitPair(t, prim, sec, "the secondary to see the primary gone", func() bool {
						return sec.s.Status().PeerState == PeerDisconnected
					})
					checkAllIn(t, "the secondary before its promotion", sec.s, acked)
					epoch++
					if err := sec.s.Promote(context.Background(), epoch, PeerGone()); err != nil {
						t.Fatalf("events %v: promoting the in-sync secondary: %v", events, err)
					}
					open(prim)
					prim, sec = sec, prim
				case 2: // both lose power; either may be promoted
					cut(sec)
					cut(prim)
					for k, v := range before {
						acked[k] = v
					}
					alone := prim.s.Status().PeerOutdated
					mayNeedSnapshot = alone
					down(prim)
					down(sec)
					w.halt()
					if rng.IntN(2) == 1 && !alone {
						// The primary acknowledged nothing the secondary
						// did not hold durably, so it may take over.
						prim, sec = sec, prim
						events = append(events, "both(secondary promoted)")
					} else {
						events = append(events, "both")
					}
					open(prim)
					epoch++
					if err := prim.s.Promote(context.Background(), epoch); err != nil {
						t.Fatalf("events %v: promoting %s after both lost power: %v", events, prim.name, err)
					}
					open(sec)
				}
				waitPair(t, prim, sec, "the pair in sync after "+events[len(events)-1], inSync(prim.s))
				// In sync: this commit returns once the secondary holds it
				// and everything before it.
				lsn := commitKV(t, prim.s, fmt.Sprintf("r%d/fence", round), "f")
				acked[fmt.Sprintf("r%d/fence", round)] = "f"
				checkAllIn(t, "the primary after "+events[len(events)-1], prim.s, acked)
				checkAllIn(t, "the secondary after "+events[len(events)-1], sec.s, acked)
				if d := sec.s.Status().DurableLSN; d != lsn {
					t.Fatalf("events %v: secondary durable at %d, primary committed %d", events, d, lsn)
				}
				// Nothing else either: no key of a quarantined suffix
				// survives, none is missing.
				if diff := stateDiff(prim.s, sec.s); diff != "" {
					t.Fatalf("events %v: the secondary's state differs from the primary's at LSN %d: %s", events, lsn, diff)
				}
				// The logs kept what the rejoining node needed: it was
				// caught up from the other's log (a snapshot only after a
				// divergence), and every quarantined suffix was exported
				// whole.
				if c := sec.s.Status().Counters; !mayNeedSnapshot && c.Snapshots > c.Divergences {
					t.Fatalf("events %v: the secondary was sent %d snapshot(s) after %d divergence(s); the log should have served it",
						events, c.Snapshots, c.Divergences)
				}
				for _, n := range []*crashNode{prim, sec} {
					if q := quarantineGaps(t, n); q != "" {
						t.Fatalf("events %v: %s", events, q)
					}
				}
			}
			t.Logf("events %v: %d commits acknowledged, all on both nodes (LSN %d, epoch %d); snapshots %d, divergences %d so far",
				events, len(acked), prim.s.Status().DurableLSN, epoch, snapshots, divergences)
		})
	}
}

// quarantineGaps reads every quarantine file of n and names the first one
// with a suffix it could not export (records no longer in its log).
func quarantineGaps(t *testing.T, n *crashNode) string {
	t.Helper()
	dir := n.fs.PathJoin(n.s.dir, "quarantine")
	names, err := n.fs.List(dir)
	if err != nil {
		return "" // no divergence yet
	}
	for _, name := range names {
		f, err := n.fs.Open(n.fs.PathJoin(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(f)
		_ = f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte(`"missing"`)); i >= 0 {
			return fmt.Sprintf("%s's quarantine file %s has a gap: %s", n.name, name, b[i:min(len(b), i+120)])
		}
	}
	return ""
}

// stateDiff compares every user key of a and b (read while neither
// commits) and describes the first difference, "" when they are equal.
func stateDiff(a, b *Store) string {
	dump := func(s *Store) (map[string]string, error) {
		m := map[string]string{}
		err := s.Scan(nil, func(k, v []byte) error {
			m[string(k)] = string(v)
			return nil
		})
		return m, err
	}
	ma, err := dump(a)
	if err != nil {
		return "scanning the primary: " + err.Error()
	}
	mb, err := dump(b)
	if err != nil {
		return "scanning the secondary: " + err.Error()
	}
	for k, v := range ma {
		if w, ok := mb[k]; !ok || w != v {
			return fmt.Sprintf("key %q: primary has %d bytes, secondary %d (present %v)", k, len(v), len(w), ok)
		}
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			return fmt.Sprintf("key %q only on the secondary (of %d keys there, %d on the primary)", k, len(mb), len(ma))
		}
	}
	return ""
}

// waitPair is waitFor for the crash sequences: on a timeout it names what
// both stores report, which is what a failure there needs.
func waitPair(t *testing.T, a, b *crashNode, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 3000; i++ {
		if cond() {
			return
		}
		clock.Sleep(context.Background(), clock.Real(), 5*time.Millisecond)
	}
	show := func(n *crashNode) string {
		st := n.s.Status()
		return fmt.Sprintf("%s: %s epoch %d durable %d peer-acked %d primary-lsn %d peer %s inconsistent %v outdated %v peer-outdated %v error %q",
			n.name, st.Role, st.Epoch, st.DurableLSN, st.PeerAckedLSN, st.PrimaryLSN, st.PeerState, st.Inconsistent, st.Outdated, st.PeerOutdated, st.LastError)
	}
	t.Fatalf("timed out waiting for %s\n%s\n%s", what, show(a), show(b))
}
