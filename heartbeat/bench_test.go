package heartbeat

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHeartbeatCPU runs a pair over loopback on three paths for one
// second of real time per iteration and reports the CPU the process spent
// per node, as a share of one core (cpu-%/node), and the datagrams each
// node received per second. The whole test process is measured, so this
// is an upper bound on the heartbeat's own cost.
func BenchmarkHeartbeatCPU(b *testing.B) {
	for _, iv := range []time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond} {
		b.Run("interval="+iv.String(), func(b *testing.B) {
			ca, cb, pa, pb := udpPair(b, 3)
			cfg := func(node uint8, paths []Path) Config {
				return Config{PairID: 1, NodeID: node, Key: testKey, Paths: paths, Interval: iv, DeadAfter: 5 * iv,
					Clock: clock.Real(), Logger: zap.NewNop()}
			}
			a := newWithConns(cfg(1, pa), ca)
			bb := newWithConns(cfg(2, pb), cb)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{}, 2)
			for _, h := range []*Heartbeat{a, bb} {
				go func() { h.Run(ctx); done <- struct{}{} }()
				go func() {
					for range h.Events() {
					}
				}()
			}
			real := clock.Real()
			// Let both reach steady state before measuring.
			clock.Sleep(ctx, real, 20*iv)
			recv0 := received(a)
			start, cpu0 := real.Now(), cpuTime(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				a.Publish(Payload{Epoch: 1, CommittedLSN: uint64(i)})
				clock.Sleep(ctx, real, time.Second)
			}
			b.StopTimer()
			wall, cpu := real.Since(start), cpuTime(b)-cpu0
			b.ReportMetric(100*float64(cpu)/float64(wall)/2, "cpu-%/node")
			b.ReportMetric(float64(received(a)-recv0)/wall.Seconds(), "rx/s/node")
			cancel()
			<-done
			<-done
		})
	}
}

func received(h *Heartbeat) uint64 {
	var n uint64
	for _, s := range h.Stats() {
		n += s.Received
	}
	return n
}

// BenchmarkDatagram is the per-datagram work of both ends: encode with the
// MAC, decode, verify, and the detector's accept.
func BenchmarkDatagram(b *testing.B) {
	ms, mr := hmac.New(sha256.New, testKey), hmac.New(sha256.New, testKey)
	d := newDetector([]string{"ha1"}, time.Second, time.Second, t0)
	buf := make([]byte, 0, FrameLenV2+18)
	scratch := make([]byte, 0, 18+MACLen)
	f := sampleFrame()
	var evs []Event
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		f.Seq, f.Round = uint64(i+1), uint64(i+1)
		buf = encode(buf[:0], ms, &f, testDest)
		g, err := decode(buf)
		if err != nil || !verify(mr, buf, testDest, scratch) {
			b.Fatal("bad datagram")
		}
		evs, _ = d.accept(0, &g, t0, evs[:0])
	}
}
