package pair

import (
	"math/rand"
	"sort"
	"testing"
	"time"
)

// BenchmarkHostLossDetection measures, on the simulated pair, the time from
// the active host's loss to the passive's VIP claim (the decision the
// machine makes; the VIP takeover itself is in vip's benchmarks). Each
// iteration is one trial with random heartbeat phases and a random crash
// instant; p50/p99/max are reported as metrics (simulated milliseconds, so
// they do not depend on the machine's load). ns/op is the CPU cost of
// simulating one trial.
func BenchmarkHostLossDetection(b *testing.B) {
	for _, prof := range []string{"default", "fast"} {
		b.Run(prof, func(b *testing.B) {
			tm, _ := Profile(prof)
			var got []time.Duration
			for i := 0; i < b.N; i++ {
				rng := rand.New(rand.NewSource(int64(i)))
				s := newSim(Config{Timing: tm})
				s.quiet = true
				s.rng = rng.Intn
				s.start(s.nodes[0])
				s.start(s.nodes[1])
				s.run(s.now.Add(time.Second + time.Duration(rng.Int63n(int64(tm.Interval)))))
				act := s.nodes[0]
				if !s.acting(act) {
					act = s.nodes[1]
				}
				s.crash(act)
				lost := s.now
				var claimed time.Time
				s.onClaim = func(n *simNode) {
					if claimed.IsZero() {
						claimed = s.now
					}
				}
				s.run(s.now.Add(5 * time.Second))
				if claimed.IsZero() {
					b.Fatalf("trial %d: no takeover", i)
				}
				got = append(got, claimed.Sub(lost))
			}
			sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
			q := func(p float64) float64 {
				return float64(got[int(p*float64(len(got)-1))]) / 1e6
			}
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(q(1), "max-ms")
		})
	}
}

// BenchmarkStep is the machine's CPU cost per heartbeat received.
func BenchmarkStep(b *testing.B) {
	m, _, _ := New(testConfig(2), Persisted{Role: RolePassive, Epoch: 1}, simStart)
	now := simStart
	adv := Advert{Node: 1, Epoch: 1, Role: RoleActive, HearPeer: true, LANUp: true, DataKnown: true}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		now = now.Add(time.Millisecond)
		if _, err := m.Step(now, PeerAlive{Path: "ha1", Seq: uint64(i + 1), Advert: adv}); err != nil {
			b.Fatal(err)
		}
	}
}
