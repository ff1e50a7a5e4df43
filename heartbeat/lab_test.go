package heartbeat

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/test/lab"
)

const labPort = 7405

// labPaths are node n's paths (n = 0 for a, 1 for b) in the pair topology:
// HA1, HA2 and the data LAN, each bound to its device.
func labPaths(l *lab.Lab, n int) []Path {
	hosts := []*lab.Host{l.Host(lab.NodeA), l.Host(lab.NodeB)}
	me, peer := hosts[n], hosts[1-n]
	ap := func(a netip.Addr) netip.AddrPort { return netip.AddrPortFrom(a, labPort) }
	return []Path{
		{Name: "ha1", Local: ap(me.HA[0]), Remote: ap(peer.HA[0]), Device: lab.HA1If},
		{Name: "ha2", Local: ap(me.HA[1]), Remote: ap(peer.HA[1]), Device: lab.HA2If},
		{Name: "lan", Local: ap(me.LAN4), Remote: ap(peer.LAN4), Device: lab.LANIf},
	}
}

type labNode struct {
	h    *Heartbeat
	evs  chan Event
	stop context.CancelFunc
	done chan error
}

func startLabNode(t *testing.T, host *lab.Host, cfg Config) *labNode {
	t.Helper()
	var h *Heartbeat
	if err := host.Do(func() (err error) { h, err = New(cfg); return err }); err != nil {
		t.Fatalf("New in %s: %v", host.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &labNode{h: h, evs: make(chan Event, 1024), stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- h.Run(ctx) }()
	// Forward events, stamped on arrival by the real clock in At? At is the
	// detector's time already (the real clock here).
	go func() {
		for e := range h.Events() {
			n.evs <- e
		}
		close(n.evs)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-n.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	return n
}

// until reads n's events until pred accepts one, failing on a kind listed
// in never, or after a generous bound (a hang, not a timing check).
func (n *labNode) until(t *testing.T, what string, pred func(Event) bool, never ...EventKind) Event {
	t.Helper()
	tm := clock.Real().NewTimer(30 * time.Second)
	defer tm.Stop()
	for {
		select {
		case e, ok := <-n.evs:
			if !ok {
				t.Fatalf("events closed waiting for %s", what)
			}
			t.Logf("event %s", e)
			for _, k := range never {
				if e.Kind == k {
					t.Fatalf("%s while waiting for %s", e, what)
				}
			}
			if pred(e) {
				return e
			}
		case <-tm.C():
			t.Fatalf("no %s", what)
		}
	}
}

// quiet reads n's events for d of real time and fails on any of kinds never.
func (n *labNode) quiet(t *testing.T, d time.Duration, never ...EventKind) {
	t.Helper()
	tm := clock.Real().NewTimer(d)
	defer tm.Stop()
	for {
		select {
		case e := <-n.evs:
			t.Logf("event %s", e)
			for _, k := range never {
				if e.Kind == k {
					t.Fatalf("%s during a quiet period", e)
				}
			}
		case <-tm.C():
			return
		}
	}
}

func is(k EventKind, path string) func(Event) bool {
	return func(e Event) bool { return e.Kind == k && (path == "" || e.Path == path) }
}

// TestLabPathLossAndPeerSilence runs two heartbeats on the lab's three real
// paths: cutting one cable is a PathDown (alarm) and never PeerSilent;
// pulling every cable of a is PeerSilent at b, no earlier than the
// detector allows and within DeadAfter + one interval (logged; asserted
// only with a generous bound).
func TestLabPathLossAndPeerSilence(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "nft", "iptables", "ip6tables")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.New(ctx, lab.Options{Logf: t.Logf, HALinks: 2})
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
	})
	const interval, deadAfter = 50 * time.Millisecond, 400 * time.Millisecond
	cfg := func(node uint8, paths []Path) Config {
		return Config{PairID: 7, NodeID: node, Key: testKey, Paths: paths, Interval: interval, DeadAfter: deadAfter,
			Clock: clock.Real(), Logger: zaptest.NewLogger(t)}
	}
	a := startLabNode(t, l.Host(lab.NodeA), cfg(1, labPaths(l, 0)))
	b := startLabNode(t, l.Host(lab.NodeB), cfg(2, labPaths(l, 1)))
	a.h.Publish(Payload{Epoch: 1, Role: 1})
	b.h.Publish(Payload{Epoch: 1, Role: 2})

	up, alive := map[string]bool{}, false
	b.until(t, "a alive and all paths up at b", func(e Event) bool {
		switch e.Kind {
		case PathUp:
			up[e.Path] = true
		case PeerAlive:
			alive = e.Payload.Role == 1
		}
		return alive && len(up) == 3
	})

	// One cable: an alarm at both ends, no silence.
	cut, err := l.CutLink(ctx, lab.NodeA, lab.HA1If)
	if err != nil {
		t.Fatal(err)
	}
	cutAt := clock.Real().Now()
	e := b.until(t, "ha1 down at b", is(PathDown, "ha1"), PeerSilent)
	t.Logf("MEASURE ha1 cut -> PathDown at b: %v (path-dead-after %v)", e.At.Sub(cutAt), deadAfter)
	for _, s := range b.h.Stats() {
		if s.Up != (s.Name != "ha1") {
			t.Errorf("stats after ha1 cut: %+v", s)
		}
	}
	if err := cut.Clear(); err != nil {
		t.Fatal(err)
	}
	b.until(t, "ha1 up again at b", is(PathUp, "ha1"), PeerSilent)

	// 5 % loss on what a sends on ha1 (where keepalived's fastest setting
	// took over spuriously): no verdict may change. A PathDown would need
	// dead-after / interval = 8 consecutive losses, p ~ 4e-11 per datagram.
	imp, err := l.Impair(ctx, lab.NodeA, lab.HA1If, lab.Impairment{Loss: 5})
	if err != nil {
		t.Fatal(err)
	}
	b.quiet(t, 3*time.Second, PathDown, PeerSilent)
	for _, s := range b.h.Stats() {
		t.Logf("MEASURE under 5%% loss on a/ha1: path %s loss %.3f (last 64) rtt %v up %v", s.Name, s.Loss, s.RTT, s.Up)
		if !s.Up {
			t.Errorf("path %s down under 5%% loss", s.Name)
		}
	}
	if err := imp.Clear(); err != nil {
		t.Fatal(err)
	}

	// Every cable of a: silence at b.
	// The cut takes effect somewhere inside CutAll: the lower bound below
	// must count from before the call, not from its return.
	var all *lab.Fault
	cutAt = clock.Real().Now()
	if all, err = l.CutAll(ctx, lab.NodeA); err != nil {
		t.Fatal(err)
	}
	defer all.Clear()
	down := map[string]bool{}
	e = b.until(t, "a silent at b", func(e Event) bool {
		if e.Kind == PathDown {
			down[e.Path] = true
		}
		return e.Kind == PeerSilent
	})
	took := e.At.Sub(cutAt)
	t.Logf("MEASURE all cables cut -> PeerSilent at b: %v (dead-after %v, interval %v)", took, deadAfter, interval)
	// The last heartbeat b accepted left a at most one interval before the
	// cut, so silence cannot be declared before deadAfter - interval.
	if took < deadAfter-interval {
		t.Fatalf("PeerSilent %v after the cut: before dead-after - interval (%v)", took, deadAfter-interval)
	}
	if e.LastSeen.IsZero() || e.At.Sub(e.LastSeen) < deadAfter {
		t.Fatalf("PeerSilent at %v with last seen %v: less than dead-after", e.At, e.LastSeen)
	}
	if took > deadAfter+interval+5*time.Second {
		t.Fatalf("PeerSilent %v after the cut", took)
	}
	if len(down) != 3 {
		t.Fatalf("paths down before silence: %v, want all three", down)
	}
	if _, alive := b.h.Peer(); alive {
		t.Fatal("b still reports a alive")
	}
}
