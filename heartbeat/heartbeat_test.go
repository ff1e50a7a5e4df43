package heartbeat

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tandem-ha/tandem/internal/clock"
)

// udpPair opens n loopback sockets per node; paths[i] joins a[i] and b[i].
func udpPair(t testing.TB, n int) (a, b []*net.UDPConn, pa, pb []Path) {
	t.Helper()
	open := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	names := []string{"ha1", "ha2", "lan"}
	for i := 0; i < n; i++ {
		ca, cb := open(), open()
		la := ca.LocalAddr().(*net.UDPAddr).AddrPort()
		lb := cb.LocalAddr().(*net.UDPAddr).AddrPort()
		a, b = append(a, ca), append(b, cb)
		t.Cleanup(func() { ca.Close(); cb.Close() })
		pa = append(pa, Path{Name: names[i], Local: la, Remote: lb})
		pb = append(pb, Path{Name: names[i], Local: lb, Remote: la})
	}
	return
}

func testConfig(t *testing.T, node uint8, paths []Path, clk clock.Clock) Config {
	return Config{PairID: 42, NodeID: node, Key: testKey, Paths: paths,
		Interval: 20 * time.Millisecond, DeadAfter: 200 * time.Millisecond,
		Clock: clk, Logger: zaptest.NewLogger(t)}
}

// waitEvent reads events until one of kind k arrives; it fails the test
// after a generous real-time bound (a hang, not a performance check).
func waitEvent(t *testing.T, ch <-chan Event, k EventKind, seen *[]string) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("events closed while waiting for %s; saw %v", k, *seen)
			}
			*seen = append(*seen, e.Kind.String()+":"+e.Path)
			if e.Kind == k {
				return e
			}
		case <-ctx.Done():
			t.Fatalf("no %s event; saw %v", k, *seen)
		}
	}
}

func run(t *testing.T, h *Heartbeat) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
	return cancel
}

func TestPeersOverLoopbackAliveThenSilent(t *testing.T) {
	ca, cb, pa, pb := udpPair(t, 2)
	a := newWithConns(testConfig(t, 1, pa, clock.Real()), ca)
	b := newWithConns(testConfig(t, 2, pb, clock.Real()), cb)
	a.Publish(Payload{Epoch: 5, Role: 1, CommittedLSN: 10})
	b.Publish(Payload{Epoch: 5, Role: 2, AppliedLSN: 9})
	run(t, a)
	stopB := run(t, b)

	var seenA, seenB []string
	for {
		e := waitEvent(t, a.Events(), PeerAlive, &seenA)
		if e.Payload == (Payload{Epoch: 5, Role: 2, AppliedLSN: 9}) {
			break
		}
	}
	for {
		e := waitEvent(t, b.Events(), PeerAlive, &seenB)
		if e.Payload == (Payload{Epoch: 5, Role: 1, CommittedLSN: 10}) {
			break
		}
	}
	// A role change is sent at once and reported.
	b.Publish(Payload{Epoch: 6, Role: 1})
	for {
		if e := waitEvent(t, a.Events(), PeerAlive, &seenA); e.Payload.Epoch == 6 {
			break
		}
	}
	// Wait until both paths have measured an RTT, then stop B.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		st := a.Stats()
		if st[0].Up && st[1].Up && st[0].RTT > 0 && st[1].RTT > 0 {
			for _, s := range st {
				t.Logf("path %s: rtt %v loss %.2f sent %d received %d", s.Name, s.RTT, s.Loss, s.Sent, s.Received)
				if s.Dropped != (Drops{}) {
					t.Errorf("path %s dropped %+v between two honest peers", s.Name, s.Dropped)
				}
			}
			break
		}
		if clock.Sleep(ctx, clock.Real(), 5*time.Millisecond) != nil {
			t.Fatalf("paths never measured: %+v", st)
		}
	}
	stopB()
	seenA = nil
	waitEvent(t, a.Events(), PeerSilent, &seenA)
	// Both paths went down no later than the peer fell silent (same dead-after).
	got := strings.Join(seenA, " ")
	if !strings.Contains(got, "path-down:ha1") || !strings.Contains(got, "path-down:ha2") {
		t.Fatalf("events before silence: %v, want both paths down", seenA)
	}
	if _, alive := a.Peer(); alive {
		t.Fatal("Peer() reports alive after PeerSilent")
	}
}

// TestSteadyPeerIsHeardEveryRound: a peer whose payload does not change
// is still reported round after round (over real sockets); the state
// machine counts the peer's silence, and the active its lease, from these.
// Reporting only changes left an idle pair's machines 250 ms behind a
// peer that sent every 100 ms.
func TestSteadyPeerIsHeardEveryRound(t *testing.T) {
	ca, cb, pa, pb := udpPair(t, 2)
	a := newWithConns(testConfig(t, 1, pa, clock.Real()), ca)
	b := newWithConns(testConfig(t, 2, pb, clock.Real()), cb)
	steady := Payload{Epoch: 5, Role: 2, AppliedLSN: 9}
	a.Publish(Payload{Epoch: 5, Role: 1, CommittedLSN: 9})
	b.Publish(steady)
	run(t, a)
	run(t, b)
	var seen []string
	alive := 0
	for alive < 10 {
		if e := waitEvent(t, a.Events(), PeerAlive, &seen); e.Payload != steady {
			t.Fatalf("payload %+v, want the steady %+v", e.Payload, steady)
		}
		alive++
	}
	// Two paths carry each round; one report per round.
	if sent := b.Stats()[0].Sent; uint64(alive) > sent+1 {
		t.Fatalf("%d peer-alive events for %d rounds sent", alive, sent)
	}
}

// TestUnauthenticatedOrReplayedHeartbeatNeverChangesAVerdict sends A, whose
// peer is silent, every kind of bad datagram over a real socket: none may
// bring the peer back; each is counted under its reason. Then one honest
// datagram does, and its replay after the next silence does not.
func TestUnauthenticatedOrReplayedHeartbeatNeverChangesAVerdict(t *testing.T) {
	ca, cb, pa, _ := udpPair(t, 1)
	clk := clock.NewManual(t0)
	a := newWithConns(testConfig(t, 1, pa, clk), ca)
	run(t, a)
	var seen []string
	advanceUntil := func(k EventKind) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for {
			clk.Advance(50 * time.Millisecond)
			select {
			case e := <-a.Events():
				seen = append(seen, e.Kind.String())
				if e.Kind == k {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no %s; saw %v", k, seen)
			default:
				clock.Sleep(ctx, clock.Real(), time.Millisecond)
			}
		}
	}
	advanceUntil(PeerSilent)

	peer := cb[0] // bound to A's path Remote: datagrams come from the right source
	other, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	dest := pa[0].Local
	good := hmac.New(sha256.New, testKey)
	bad := hmac.New(sha256.New, []byte("not-the-pair-key-at-all"))
	seq := uint64(0)
	mk := func(m func(*frame)) frame {
		seq++
		f := frame{NodeID: 2, PairID: 42, BootID: 77, Seq: seq, Round: seq, Payload: Payload{Epoch: 9}}
		if m != nil {
			m(&f)
		}
		return f
	}
	send := func(c *net.UDPConn, b []byte) {
		t.Helper()
		if _, err := c.WriteToUDPAddrPort(b, dest); err != nil {
			t.Fatal(err)
		}
	}
	f1 := mk(func(f *frame) { f.PairID = 43 })
	send(peer, encode(nil, good, &f1, dest)) // another pair
	f2 := mk(func(f *frame) { f.NodeID = 1 })
	send(peer, encode(nil, good, &f2, dest)) // our own node id
	f3 := mk(nil)
	send(other, encode(nil, good, &f3, dest)) // right MAC, wrong source
	f4 := mk(nil)
	send(peer, encode(nil, bad, &f4, dest)) // wrong key
	f5 := mk(nil)
	send(peer, encode(nil, good, &f5, pa[0].Remote)) // MAC for another destination
	send(peer, []byte("hello, heartbeat"))           // malformed
	want := Drops{Stranger: 3, BadMAC: 2, Malformed: 1}
	waitDrops(t, a, want)
	assertNoEvents(t, a, &seen)

	honest := mk(nil)
	hb := encode(nil, good, &honest, dest)
	send(peer, hb)
	advanceUntil(PeerAlive)
	advanceUntil(PeerSilent)
	send(peer, hb) // replayed
	want.Replay = 1
	waitDrops(t, a, want)
	assertNoEvents(t, a, &seen)
	if _, alive := a.Peer(); alive {
		t.Fatal("a replay revived the peer")
	}
}

func waitDrops(t *testing.T, h *Heartbeat, want Drops) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for h.Stats()[0].Dropped != want {
		if clock.Sleep(ctx, clock.Real(), time.Millisecond) != nil {
			t.Fatalf("drops %+v, want %+v", h.Stats()[0].Dropped, want)
		}
	}
}

// assertNoEvents checks that nothing is queued or on the channel. The
// receiver pushes events before it counts the next datagram, so once the
// counters are seen nothing the drops could have caused is in flight.
func assertNoEvents(t *testing.T, h *Heartbeat, seen *[]string) {
	t.Helper()
	h.q.mu.Lock()
	n := len(h.q.q)
	h.q.mu.Unlock()
	select {
	case e := <-h.Events():
		t.Fatalf("unexpected event %s after %v", e, *seen)
	default:
	}
	if n != 0 {
		t.Fatalf("%d events queued after %v", n, *seen)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	p := Path{Name: "ha1", Local: netip.MustParseAddrPort("198.51.100.1:7405"), Remote: netip.MustParseAddrPort("198.51.100.2:7405")}
	ok := Config{NodeID: 1, Key: testKey, Paths: []Path{p}, Interval: 100 * time.Millisecond, DeadAfter: 500 * time.Millisecond}
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"dead-after", func(c *Config) { c.DeadAfter = 300 * time.Millisecond }, "dead-after (300ms) must exceed 3 x interval (100ms)"},
		{"path-dead-after", func(c *Config) { c.PathDeadAfter = 200 * time.Millisecond }, "path-dead-after"},
		{"interval", func(c *Config) { c.Interval = 0 }, "interval must be positive"},
		{"key", func(c *Config) { c.Key = []byte("short") }, "key is 5 bytes"},
		{"node-id", func(c *Config) { c.NodeID = 0 }, "node-id"},
		{"no paths", func(c *Config) { c.Paths = nil }, "paths: at least one"},
		{"unspecified local", func(c *Config) {
			c.Paths = []Path{{Name: "x", Local: netip.MustParseAddrPort("0.0.0.0:7405"), Remote: p.Remote}}
		}, "paths[0] (x).local"},
		{"zero port", func(c *Config) {
			c.Paths = []Path{{Name: "x", Local: p.Local, Remote: netip.MustParseAddrPort("198.51.100.2:0")}}
		}, "paths[0] (x).remote"},
		{"families", func(c *Config) {
			c.Paths = []Path{{Name: "x", Local: p.Local, Remote: netip.MustParseAddrPort("[2001:db8::2]:7405")}}
		}, "different families"},
		{"duplicate name", func(c *Config) { c.Paths = []Path{p, p} }, `paths[1].name "ha1" is used twice`},
		{"duplicate local", func(c *Config) { q := p; q.Name = "ha2"; c.Paths = []Path{p, q} }, "also the local address of path ha1"},
	}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, c := range cases {
		cfg := ok
		c.mod(&cfg)
		_, err := New(cfg)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want ErrConfig naming %q", c.name, err, c.want)
		}
	}
}

func TestNewNamesThePathItCannotBind(t *testing.T) {
	// 192.0.2.99 is configured on no interface of this machine: bind fails.
	_, err := New(Config{NodeID: 1, Key: testKey, Interval: 10 * time.Millisecond, DeadAfter: time.Second,
		Paths: []Path{{Name: "lan", Local: netip.MustParseAddrPort("192.0.2.99:7405"), Remote: netip.MustParseAddrPort("192.0.2.98:7405")}}})
	if err == nil || !strings.Contains(err.Error(), "paths[0] (lan)") {
		t.Fatalf("error %v, want one naming paths[0] (lan)", err)
	}
}

func TestRunTwiceIsRefused(t *testing.T) {
	ca, _, pa, _ := udpPair(t, 1)
	h := newWithConns(testConfig(t, 1, pa, clock.Real()), ca)
	h.Close()
	if err := h.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("Run after Close: %v, want ErrRunning", err)
	}
}

// TestLateWakeupReadsQueuedDatagramsBeforeJudging: the clock jumps 10 s
// past the detector's deadline (the process was stopped) and the peer's
// datagram is read just after the wake-up, as a datagram queued in the
// socket is. The detector must not call the peer silent; with nothing
// read, it does, one interval later.
func TestLateWakeupReadsQueuedDatagramsBeforeJudging(t *testing.T) {
	ca, cb, pa, _ := udpPair(t, 1)
	clk := clock.NewManual(t0)
	cfg := testConfig(t, 1, pa, clk)
	a := newWithConns(cfg, ca)
	run(t, a)
	dest := pa[0].Local
	mac := hmac.New(sha256.New, testKey)
	seq := uint64(0)
	send := func() {
		t.Helper()
		seq++
		f := frame{NodeID: 2, PairID: 42, BootID: 5, Seq: seq, Round: seq, Payload: Payload{Epoch: 1}}
		if _, err := cb[0].WriteToUDPAddrPort(encode(nil, mac, &f, dest), dest); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if clock.Sleep(ctx, clock.Real(), time.Millisecond) != nil {
				t.Fatalf("never: %s", what)
			}
		}
	}
	var seen []string
	send()
	for _, k := range []EventKind{PathUp, PeerAlive} {
		if e := <-a.Events(); e.Kind != k {
			t.Fatalf("got %s, want %s", e, k)
		}
	}
	// The watcher has ticked after the datagram and armed its timer.
	waitFor("watcher armed", func() bool { return clk.Pending() >= 2 })

	lateWake := func(n uint64) {
		t.Helper()
		clk.Set(clk.Now().Add(10 * time.Second))
		clk.Advance(0) // the overdue deadline fires, 10 s late
		waitFor("late wake-up counted and grace armed", func() bool { return a.LateWakeups() == n && clk.Pending() >= 2 })
	}
	lateWake(1)
	send() // read during the grace, stamped after the wake-up
	waitReceived(t, a, 2)
	ticks := a.ticks.Load()
	clk.Advance(cfg.Interval) // the grace ends: judge
	waitFor("tick after the grace", func() bool { return a.ticks.Load() > ticks })
	// The queued datagram is a new round: heard, and nothing else.
	nextEvent(ctx, t, a, PeerAlive)
	assertNoEvents(t, a, &seen)
	if _, alive := a.Peer(); !alive {
		t.Fatal("peer judged silent although its datagram was queued")
	}

	// Control: nothing read during the grace: silent when it ends.
	waitFor("watcher armed", func() bool { return clk.Pending() >= 2 })
	lateWake(2)
	ticks = a.ticks.Load()
	clk.Advance(cfg.Interval)
	waitFor("tick after the grace", func() bool { return a.ticks.Load() > ticks })
	nextEvent(ctx, t, a, PathDown)
	nextEvent(ctx, t, a, PeerSilent)
}

// nextEvent reads h's next event and fails the test unless it is of kind
// k (or none comes before ctx ends).
func nextEvent(ctx context.Context, t *testing.T, h *Heartbeat, k EventKind) {
	t.Helper()
	select {
	case e := <-h.Events():
		if e.Kind != k {
			t.Fatalf("got %s, want %s", e, k)
		}
	case <-ctx.Done():
		t.Fatalf("no %s event", k)
	}
}

func waitReceived(t *testing.T, h *Heartbeat, n uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for h.Stats()[0].Received < n {
		if clock.Sleep(ctx, clock.Real(), time.Millisecond) != nil {
			t.Fatalf("received %d, want %d", h.Stats()[0].Received, n)
		}
	}
}

// TestNewOverIPv6Loopback goes through New (socket options, IPv6 traffic
// class) on ::1.
func TestNewOverIPv6Loopback(t *testing.T) {
	free := func() netip.AddrPort {
		c, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[::1]:0")))
		if err != nil {
			t.Fatalf("no IPv6 loopback: %v", err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	la, lb := free(), free()
	a, err := New(testConfig(t, 1, []Path{{Name: "lan", Local: la, Remote: lb}}, clock.Real()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(testConfig(t, 2, []Path{{Name: "lan", Local: lb, Remote: la}}, clock.Real()))
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)
	run(t, b)
	var seen []string
	waitEvent(t, a.Events(), PeerAlive, &seen)
	waitEvent(t, b.Events(), PeerAlive, &seen)
}

// runUntilHeard runs b until a hears it, then stops it; b's sockets are
// closed when it returns, so their addresses are free for its next run.
func runUntilHeard(t *testing.T, a, b *Heartbeat, seen *[]string) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	waitEvent(t, a.Events(), PeerAlive, seen)
	stop()
	<-done
}

// reopen binds new sockets to the Local addresses of paths.
func reopen(t *testing.T, paths []Path) []*net.UDPConn {
	t.Helper()
	var conns []*net.UDPConn
	for _, p := range paths {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(p.Local))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

// TestPeerRestartIsReported: b is stopped and started again on the same
// addresses (a new run, a larger boot id): a reports PeerRestarted, then
// PeerAlive, and drops nothing as a replay.
func TestPeerRestartIsReported(t *testing.T) {
	ca, cb, pa, pb := udpPair(t, 1)
	a := newWithConns(testConfig(t, 1, pa, clock.Real()), ca)
	run(t, a)
	cfgB := testConfig(t, 2, pb, clock.Real())
	cfgB.BootID = 100
	var seen []string
	runUntilHeard(t, a, newWithConns(cfgB, cb), &seen)
	cfgB.BootID = 101
	run(t, newWithConns(cfgB, reopen(t, pb)))
	e := waitEvent(t, a.Events(), PeerRestarted, &seen)
	if e.BootID != 101 || e.OldBootID != 100 {
		t.Fatalf("restart event %s", e)
	}
	waitEvent(t, a.Events(), PeerAlive, &seen)
	if d := a.Stats()[0].Dropped; d != (Drops{}) {
		t.Fatalf("drops %+v across an honest restart", d)
	}
}

// TestRestartBelowTheLastBootIDRecovers: b restarts with a boot id below
// the one a last accepted (its state was lost and its clock is behind: a
// re-imaged appliance before NTP). a drops b's datagrams as replays, but
// its own carry the floor (PeerBoot); b raises its boot id past it after
// persisting it, and a hears b again (PeerRestarted, then PeerAlive). The
// first persist fails: b keeps its id and retries on the next round.
func TestRestartBelowTheLastBootIDRecovers(t *testing.T) {
	ca, cb, pa, pb := udpPair(t, 2)
	a := newWithConns(testConfig(t, 1, pa, clock.Real()), ca)
	run(t, a)
	cfgB := testConfig(t, 2, pb, clock.Real())
	cfgB.BootID = 1000
	var seen []string
	runUntilHeard(t, a, newWithConns(cfgB, cb), &seen)
	conns := reopen(t, pb)
	var mu sync.Mutex
	var persisted []uint64
	cfgB.BootID = 400 // the clock behind the last run's
	cfgB.PersistBootID = func(id uint64) error {
		mu.Lock()
		defer mu.Unlock()
		persisted = append(persisted, id)
		if len(persisted) == 1 {
			return errors.New("disk full")
		}
		return nil
	}
	b2 := newWithConns(cfgB, conns)
	run(t, b2)
	e := waitEvent(t, a.Events(), PeerRestarted, &seen)
	if e.BootID != 1001 || e.OldBootID != 1000 {
		t.Fatalf("restart event %s, want boot 1001 (the floor 1000 plus one), old 1000", e)
	}
	var seenB []string
	if e := waitEvent(t, b2.Events(), BootRaised, &seenB); e.BootID != 1001 || e.OldBootID != 400 {
		t.Errorf("b's event %s, want boot-raised to 1001 from 400", e)
	}
	waitEvent(t, a.Events(), PeerAlive, &seen)
	if got := b2.BootID(); got != 1001 {
		t.Errorf("b's boot id %d, want 1001", got)
	}
	mu.Lock()
	if len(persisted) < 2 || persisted[0] != 1001 || persisted[1] != 1001 {
		t.Errorf("persisted %v, want 1001 refused once, then 1001", persisted)
	}
	mu.Unlock()
	if r := a.Stats()[0].Dropped.Replay + a.Stats()[1].Dropped.Replay; r == 0 {
		t.Errorf("a dropped no replays: b's boot id 400 was accepted, the test proves nothing")
	}
}
