package tiebreak

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/test/lab"
)

func newLab(t *testing.T) *lab.Lab {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "nft", "iptables", "ip6tables")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.New(ctx, lab.Options{Logf: t.Logf, HALinks: 1})
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
	})
	return l
}

var (
	gwAddr    = netip.MustParseAddr("192.0.2.1")
	nobody    = netip.MustParseAddr("192.0.2.99") // configured on no host
	svcWitTCP = "tcp:192.0.2.20:7000"
)

// gatewayIn opens a Gateway inside host's namespace.
func gatewayIn(t *testing.T, h *lab.Host, cfg Config) *Gateway {
	t.Helper()
	cfg.Interface = lab.LANIf
	if cfg.Interval == 0 {
		cfg.Interval, cfg.Timeout = time.Second, 200*time.Millisecond
	}
	cfg.Logger = zaptest.NewLogger(t)
	var g *Gateway
	if err := h.Do(func() (err error) { g, err = NewGateway(cfg); return err }); err != nil {
		t.Fatalf("NewGateway in %s: %v", h.Name, err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// probe runs one round inside host's namespace (a TCP witness dials from
// the calling thread).
func probe(t *testing.T, h *lab.Host, g *Gateway) Result {
	t.Helper()
	var r Result
	h.Do(func() error { r = g.Probe(context.Background()); return nil })
	t.Logf("%s: reachable=%v answered=%v witness=%v err=%v", h.Name, r.Reachable, r.Answered, r.Witness, r.Err)
	return r
}

func TestGatewayProbeInTheLab(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	a, b := l.Host(lab.NodeA), l.Host(lab.NodeB)
	ga := gatewayIn(t, a, Config{Gateways: []netip.Addr{gwAddr, nobody}})
	gb := gatewayIn(t, b, Config{Gateways: []netip.Addr{gwAddr}})

	r := probe(t, a, ga)
	if !r.Reachable || len(r.Answered) != 1 || r.Answered[0] != gwAddr {
		t.Fatalf("gw up: %+v, want reachable, answered [%s] only", r, gwAddr)
	}

	// Partition a from gw: a is isolated, b is not.
	p, err := l.Partition(ctx, lab.NodeA, lab.Gateway)
	if err != nil {
		t.Fatal(err)
	}
	if r := probe(t, a, ga); r.Reachable {
		t.Fatalf("a partitioned from gw: %+v, want unreachable", r)
	}
	if r := probe(t, b, gb); !r.Reachable {
		t.Fatalf("b (not partitioned): %+v, want reachable", r)
	}
	if err := p.Clear(); err != nil {
		t.Fatal(err)
	}
	if r := probe(t, a, ga); !r.Reachable {
		t.Fatalf("partition cleared: %+v, want reachable", r)
	}

	// Pull a's LAN cable.
	cut, err := l.CutLink(ctx, lab.NodeA, lab.LANIf)
	if err != nil {
		t.Fatal(err)
	}
	if r := probe(t, a, ga); r.Reachable {
		t.Fatalf("a's LAN cut: %+v, want unreachable", r)
	}
	if err := cut.Clear(); err != nil {
		t.Fatal(err)
	}
	// Carrier comes back asynchronously: poll, bounded.
	waitReachable(t, a, ga, true)
}

func waitReachable(t *testing.T, h *lab.Host, g *Gateway, want bool) {
	t.Helper()
	for i := 0; i < 50; i++ {
		if probe(t, h, g).Reachable == want {
			return
		}
	}
	t.Fatalf("%s: never reachable=%v", h.Name, want)
}

func TestWitnessInTheLab(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	a, svc := l.Host(lab.NodeA), l.Host(lab.Svc)
	var ln net.Listener
	if err := svc.Do(func() (err error) { ln, err = net.Listen("tcp4", "192.0.2.20:7000"); return err }); err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, ln, func(c net.Conn) { c.Close() })
	// Witness only (no gateways): TCP, then ICMP.
	for _, w := range []string{svcWitTCP, "icmp:192.0.2.20"} {
		g := gatewayIn(t, a, Config{Witness: w})
		if r := probe(t, a, g); !r.Reachable || !r.Witness {
			t.Fatalf("witness %s up: %+v", w, r)
		}
		p, err := l.Partition(ctx, lab.NodeA, lab.Svc)
		if err != nil {
			t.Fatal(err)
		}
		if r := probe(t, a, g); r.Reachable || r.Witness {
			t.Fatalf("witness %s partitioned: %+v", w, r)
		}
		p.Clear()
	}
}

func TestWatchLinkSeesCarrierLossInTheLab(t *testing.T) {
	l := newLab(t)
	a := l.Host(lab.NodeA)
	ctx, cancel := context.WithCancel(context.Background())
	states := make(chan bool, 16)
	done := make(chan error, 1)
	go func() {
		done <- a.Do(func() error { return WatchLink(ctx, lab.LANIf, func(up bool) { states <- up }) })
	}()
	next := func(want bool) {
		t.Helper()
		select {
		case got := <-states:
			if got != want {
				t.Fatalf("link reported up=%v, want %v", got, want)
			}
		case err := <-done:
			t.Fatalf("WatchLink ended: %v", err)
		case <-clockAfter(30 * time.Second):
			t.Fatalf("no link report (want up=%v)", want)
		}
	}
	next(true)
	cut, err := l.CutLink(context.Background(), lab.NodeA, lab.LANIf)
	if err != nil {
		t.Fatal(err)
	}
	next(false)
	if err := cut.Clear(); err != nil {
		t.Fatal(err)
	}
	next(true)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("WatchLink returned %v, want context.Canceled", err)
	}
	if err := a.Do(func() error { return WatchLink(context.Background(), "nosuch0", func(bool) {}) }); err == nil {
		t.Fatal("WatchLink on a missing interface returned nil")
	}
}

func clockAfter(d time.Duration) <-chan time.Time { return clock.Real().NewTimer(d).C() }
