package vip

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/test/lab"
)

// reportPercentiles reports p50, p90 and max of ds, in ms, as metrics.
func reportPercentiles(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(ds[len(ds)/2]), name+"-p50-ms")
	b.ReportMetric(ms(ds[(len(ds)*9)/10]), name+"-p90-ms")
	b.ReportMetric(ms(ds[len(ds)-1]), name+"-max-ms")
}

func quiet(vmac bool) func(*Config) {
	return func(c *Config) {
		c.Logger = zap.NewNop()
		if vmac {
			withVMAC(c)
		}
	}
}

// BenchmarkClaimRelease measures Claim (from its start to the first
// announcement round on the wire: Status.ClaimTook) and a full
// claim+release cycle, in a lab namespace.
func BenchmarkClaimRelease(b *testing.B) {
	for _, vmac := range []bool{false, true} {
		b.Run(modeName(vmac), func(b *testing.B) {
			e := newLabEnv(b)
			m := e.manager(e.a, quiet(vmac))
			ctx := context.Background()
			var took []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := m.Claim(ctx); err != nil {
					b.Fatal(err)
				}
				took = append(took, m.Status().ClaimTook)
				if err := m.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportPercentiles(b, "claim-to-first-round", took)
		})
	}
}

// BenchmarkTakeover repeats the acceptance scenario: a claims, the client
// talks to both VIPs, a dies without releasing (its Manager is closed, its
// addresses stay), b claims; the figure is the time from the start of b's
// Claim until the client's neighbour entries for both VIPs point at b
// (mac), or the bridge forwards the virtual MAC to b's port (virtual-mac).
// The timer runs only over that interval, so ns/op is its mean.
func BenchmarkTakeover(b *testing.B) {
	for _, vmac := range []bool{false, true} {
		b.Run(modeName(vmac), func(b *testing.B) {
			e := newLabEnv(b)
			ctx := context.Background()
			e.serve(e.a)
			e.serve(e.b)
			bm := e.manager(e.b, quiet(vmac))
			clientNeigh := e.watchNeigh(e.client.NS)
			fdb := e.watchNeigh(e.lab.FabricNS())
			fabric := e.netlinkIn(&lab.Host{NS: e.lab.FabricNS()})
			portB, err := fabric.LinkByName(e.lab.FabricPort(lab.NodeB, lab.LANIf))
			if err != nil {
				b.Fatal(err)
			}
			var v4, v6, all []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				am := e.manager(e.a, quiet(vmac))
				if err := am.Claim(ctx); err != nil {
					b.Fatal(err)
				}
				for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
					e.mustGreet(e.client, vip, "a")
				}
				am.Close() // a dies holding the VIPs
				nNeigh := len(clientNeigh.since(time.Time{}))
				nFDB := len(fdb.since(time.Time{}))
				b.StartTimer()
				start := e.clk.Now()
				if err := bm.Claim(ctx); err != nil {
					b.Fatal(err)
				}
				var done time.Time
				if !vmac {
					for _, vip := range []netip.Addr{lab.VIP4, lab.VIP6} {
						ev, _, ok := clientNeigh.waitFor(nNeigh, 10*time.Second, neighFor(vip, e.b.MAC))
						if !ok {
							b.Fatalf("iteration %d: client entry for %s never moved to b", i, vip)
						}
						d := ev.at.Sub(start)
						if vip.Is4() {
							v4 = append(v4, d)
						} else {
							v6 = append(v6, d)
						}
						if ev.at.After(done) {
							done = ev.at
						}
					}
				} else {
					ev, _, ok := fdb.waitFor(nFDB, 10*time.Second, func(n netlink.Neigh) bool {
						return n.HardwareAddr.String() == lab.VMAC.String() && n.LinkIndex == portB.Attrs().Index
					})
					if !ok {
						b.Fatalf("iteration %d: bridge never moved the virtual MAC to b", i)
					}
					done = ev.at
				}
				b.StopTimer()
				all = append(all, done.Sub(start))
				e.mustGreet(e.client, lab.VIP4, "b")
				if err := bm.Release(ctx); err != nil {
					b.Fatal(err)
				}
				// The restarted a cleans up after its crash.
				if _, err := e.manager(e.a, quiet(vmac)).Recover(ctx); err != nil {
					b.Fatal(err)
				}
			}
			reportPercentiles(b, "switch", all)
			if !vmac {
				reportPercentiles(b, "v4", v4)
				reportPercentiles(b, "v6", v6)
			}
		})
	}
}
