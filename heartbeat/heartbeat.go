package heartbeat

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/clock"
)

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrConfig: the Config is invalid; the message names the field.
	ErrConfig = errors.New("heartbeat: invalid config")
	// ErrMalformed: a datagram is not a heartbeat (length, magic, version).
	ErrMalformed = errors.New("heartbeat: malformed datagram")
	// ErrStranger: a datagram of another pair, of our own node id, or from
	// an address other than the path's remote.
	ErrStranger = errors.New("heartbeat: datagram from a stranger")
	// ErrBadMAC: the datagram's HMAC does not verify.
	ErrBadMAC = errors.New("heartbeat: bad MAC")
	// ErrReplay: a sequence number or boot id seen before.
	ErrReplay = errors.New("heartbeat: replayed datagram")
	// ErrRunning: Run was called twice, or after Close.
	ErrRunning = errors.New("heartbeat: already running or closed")
)

// Path is one network path to the peer: an HA link or the data LAN.
type Path struct {
	// Name identifies the path in events, stats and logs ("ha1", "lan").
	Name string
	// Local is the address and port we listen on; the peer's Remote.
	// The address must be specified (not 0.0.0.0): it is bound into the MAC.
	Local netip.AddrPort
	// Remote is the peer's Local on this path.
	Remote netip.AddrPort
	// Device, if set, binds the socket to that interface (SO_BINDTODEVICE),
	// so the path never silently reroutes over another link.
	Device string
}

// Config configures a Heartbeat.
type Config struct {
	// PairID identifies the pair; datagrams of another pair are strangers.
	PairID uint32
	// NodeID is this node's id (non-zero); the peer's must differ.
	NodeID uint8
	// Key is the HMAC-SHA256 pair key, at least MinKeyLen bytes.
	Key []byte
	// Paths are the paths to the peer, at least one.
	Paths []Path
	// Interval is the send period on every path.
	Interval time.Duration
	// DeadAfter: the peer is silent when no valid heartbeat arrived on any
	// path for this long. Must exceed 3 x Interval.
	DeadAfter time.Duration
	// PathDeadAfter: one path is down when no valid heartbeat arrived on it
	// for this long. 0 means DeadAfter; otherwise it must exceed 3 x Interval.
	PathDeadAfter time.Duration
	// BootID identifies this run of the node; it must grow from one run to
	// the next (receivers refuse a smaller one as a replay). 0 means the
	// clock's Unix time in nanoseconds at New, which grows as long as the
	// wall clock is not stepped back across a restart; a daemon that
	// persists a boot counter should pass it instead. A run that learns
	// from the peer's datagrams that the peer last accepted a larger boot
	// id from this node (its state was lost and its clock is behind)
	// raises its own past it, after PersistBootID.
	BootID uint64
	// PersistBootID, if set, makes a raised boot id durable before any
	// datagram carries it (so that the next run starts above it). It runs
	// on the sender, which waits for it: the one disk wait the sender
	// has, at a time when the peer drops all it sends anyway. While it
	// fails the boot id stays, and the raise is retried at the first round
	// a second or more later.
	PersistBootID func(id uint64) error
	// Clock is the time source; nil means clock.Real().
	Clock clock.Clock
	// Logger receives the component's logs (named "heartbeat"); nil discards them.
	Logger *zap.Logger
}

// Payload is what each heartbeat announces about its sender. The package
// carries it; the pair state machine gives it meaning.
type Payload struct {
	Epoch        uint64
	Role         uint8
	CommittedLSN uint64
	AppliedLSN   uint64
	Health       uint32
	// Handover carries the planned-switchover handshake (a step code
	// chosen by the state machine; zero when idle).
	Handover uint8
	// Generation is a counter for pair-wide settings the state machine
	// agrees on (the maintenance flag: the higher generation wins).
	Generation uint64
}

// sameState reports whether p and q differ only in their LSNs, which change
// with every commit and so wait for the next period instead of forcing a send.
func (p Payload) sameState(q Payload) bool {
	p.CommittedLSN, p.AppliedLSN = q.CommittedLSN, q.AppliedLSN
	return p == q
}

func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if c.NodeID == 0 {
		return bad("node-id must be non-zero")
	}
	if len(c.Key) < MinKeyLen {
		return bad("key is %d bytes, must be at least %d", len(c.Key), MinKeyLen)
	}
	if len(c.Paths) == 0 {
		return bad("paths: at least one path is required")
	}
	if len(c.Paths) > 255 {
		return bad("paths: %d paths, at most 255", len(c.Paths))
	}
	names := map[string]bool{}
	locals := map[netip.AddrPort]string{}
	for i, p := range c.Paths {
		if p.Name == "" {
			return bad("paths[%d].name is empty", i)
		}
		if names[p.Name] {
			return bad("paths[%d].name %q is used twice", i, p.Name)
		}
		names[p.Name] = true
		for _, ap := range []struct {
			field string
			v     netip.AddrPort
		}{{"local", p.Local}, {"remote", p.Remote}} {
			if !ap.v.IsValid() || ap.v.Addr().IsUnspecified() || ap.v.Port() == 0 {
				return bad("paths[%d] (%s).%s %q must be an address and a non-zero port", i, p.Name, ap.field, ap.v)
			}
		}
		if p.Local.Addr().Unmap().Is4() != p.Remote.Addr().Unmap().Is4() {
			return bad("paths[%d] (%s): local %s and remote %s are of different families", i, p.Name, p.Local, p.Remote)
		}
		if o, dup := locals[p.Local]; dup {
			return bad("paths[%d] (%s).local %s is also the local address of path %s", i, p.Name, p.Local, o)
		}
		locals[p.Local] = p.Name
	}
	if c.Interval <= 0 {
		return bad("interval must be positive, got %v", c.Interval)
	}
	if c.DeadAfter <= 3*c.Interval {
		return bad("dead-after (%v) must exceed 3 x interval (%v)", c.DeadAfter, c.Interval)
	}
	if c.PathDeadAfter != 0 && c.PathDeadAfter <= 3*c.Interval {
		return bad("path-dead-after (%v) must exceed 3 x interval (%v)", c.PathDeadAfter, c.Interval)
	}
	return nil
}

// Heartbeat sends and receives the pair's heartbeats on every path and
// runs the failure detector. See the package doc for its goroutines.
type Heartbeat struct {
	cfg   Config
	clk   clock.Clock
	log   *zap.Logger
	conns []*net.UDPConn
	start time.Time

	mu      sync.Mutex // guards det, payload
	det     *detector
	payload Payload

	sendNow chan struct{} // cap 1: Publish asks for an immediate round
	rearm   chan struct{} // cap 1: a verdict turned alive; watch recomputes its deadline
	q       *eventQueue

	bootID   atomic.Uint64 // this run's boot id; raised past the peer's floor
	bootWant atomic.Uint64 // the floor a receiver saw, plus one: the sender raises to it (written under mu)
	bootErr  uint64        // sender only: the raise whose persist failure was logged
	bootNext time.Time     // sender only: no persist retry before this
	graces   atomic.Uint64 // late wake-ups that postponed a verdict
	ticks    atomic.Uint64 // detector ticks done (tests wait on it)

	runMu     sync.Mutex
	ran       bool
	closeOnce sync.Once
}

// New validates cfg and opens one UDP socket per path, bound to its Local
// address (and Device). The sockets belong to the network namespace New
// runs in. Nothing is sent before Run.
func New(cfg Config) (*Heartbeat, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	conns := make([]*net.UDPConn, 0, len(cfg.Paths))
	for i, p := range cfg.Paths {
		c, err := listen(p)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("heartbeat: paths[%d] (%s): listen on %s: %w", i, p.Name, p.Local, err)
		}
		conns = append(conns, c)
	}
	return newWithConns(cfg, conns), nil
}

// listen opens the path's socket. Heartbeats are network control traffic:
// DSCP CS6 lets a congested switch or qdisc keep them ahead of bulk data.
func listen(p Path) (*net.UDPConn, error) {
	v4 := p.Local.Addr().Unmap().Is4()
	lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if p.Device != "" {
				if serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, p.Device); serr != nil {
					serr = fmt.Errorf("bind to device %q: %w", p.Device, serr)
					return
				}
			}
			const cs6 = 0xc0
			if v4 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, cs6)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_TCLASS, cs6)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	network := "udp6"
	local := p.Local
	if v4 {
		network = "udp4"
		local = netip.AddrPortFrom(p.Local.Addr().Unmap(), p.Local.Port())
	}
	pc, err := lc.ListenPacket(context.Background(), network, local.String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

func newWithConns(cfg Config, conns []*net.UDPConn) *Heartbeat {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.PathDeadAfter == 0 {
		cfg.PathDeadAfter = cfg.DeadAfter
	}
	cfg.Key = append([]byte(nil), cfg.Key...)
	cfg.Paths = append([]Path(nil), cfg.Paths...)
	now := cfg.Clock.Now()
	if cfg.BootID == 0 {
		cfg.BootID = uint64(now.UnixNano())
	}
	names := make([]string, len(cfg.Paths))
	for i, p := range cfg.Paths {
		names[i] = p.Name
	}
	h := &Heartbeat{
		cfg: cfg, clk: cfg.Clock, log: cfg.Logger.Named("heartbeat"), conns: conns, start: now,
		det:     newDetector(names, cfg.DeadAfter, cfg.PathDeadAfter, now),
		sendNow: make(chan struct{}, 1),
		rearm:   make(chan struct{}, 1),
		q:       newEventQueue(),
	}
	h.bootID.Store(cfg.BootID)
	return h
}

// BootID returns this run's boot id (Config.BootID, or the one it was
// raised to).
func (h *Heartbeat) BootID() uint64 { return h.bootID.Load() }

// raiseBoot: the sender takes a new boot id when a receiver saw the peer
// report a larger one of ours. It persists it first; seqs restart at 1.
func (h *Heartbeat) raiseBoot(seqs []uint64) {
	want, cur := h.bootWant.Load(), h.bootID.Load()
	if want <= cur {
		return
	}
	if h.cfg.PersistBootID != nil {
		now := h.clk.Now()
		if now.Before(h.bootNext) {
			return
		}
		if err := h.cfg.PersistBootID(want); err != nil {
			h.bootNext = now.Add(time.Second)
			if h.bootErr != want { // once per raise, not every round
				h.bootErr = want
				h.log.Error("cannot persist the raised boot id; the peer keeps dropping our heartbeats as replays until it can",
					zap.Uint64("boot_id", cur), zap.Uint64("want", want), zap.Error(err))
			}
			return
		}
	}
	h.log.Warn("boot id raised: the peer last accepted a larger one from this node (state lost, clock behind?)",
		zap.Uint64("from", cur), zap.Uint64("to", want))
	h.bootID.Store(want)
	clear(seqs)
	h.q.push([]Event{{Kind: BootRaised, At: h.clk.Now(), BootID: want, OldBootID: cur}})
}

// Events delivers the detector's verdicts in order. Payload-only updates
// (PeerAlive following PeerAlive) are coalesced when the reader lags, so
// the queue stays bounded; transitions are never dropped. The channel is
// closed when Run returns.
func (h *Heartbeat) Events() <-chan Event { return h.q.out }

// Publish sets what the following datagrams carry. A change of anything
// but the LSNs is sent at once on every path (a role or epoch change must
// not wait a period); LSN-only changes ride on the next periodic round.
func (h *Heartbeat) Publish(p Payload) {
	h.mu.Lock()
	urgent := !h.payload.sameState(p)
	h.payload = p
	h.mu.Unlock()
	if urgent {
		select {
		case h.sendNow <- struct{}{}:
		default:
		}
	}
}

// Stats returns the state of every path, in configuration order.
func (h *Heartbeat) Stats() []PathStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]PathStats, len(h.cfg.Paths))
	for i := range out {
		out[i] = h.det.stats(i)
	}
	return out
}

// Peer returns the last payload received from the peer and whether the
// peer is currently alive.
func (h *Heartbeat) Peer() (Payload, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.det.lastPayload, h.det.peer == alive
}

// LateWakeups counts the times the detector woke up more than an Interval
// after its deadline (the process was stopped or starved) and postponed
// its verdicts by one Interval so queued datagrams could be read first.
func (h *Heartbeat) LateWakeups() uint64 { return h.graces.Load() }

// Run sends and receives until ctx ends, then closes the sockets and the
// Events channel and returns ctx's error. It may be called once.
func (h *Heartbeat) Run(ctx context.Context) error {
	h.runMu.Lock()
	if h.ran {
		h.runMu.Unlock()
		return ErrRunning
	}
	h.ran = true
	h.runMu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { h.q.pump(ctx) })
	wg.Go(func() { h.sender(ctx) })
	wg.Go(func() { h.watch(ctx) })
	var rwg sync.WaitGroup
	for i := range h.conns {
		rwg.Go(func() { h.receiver(ctx, i) })
	}
	<-ctx.Done()
	h.closeConns() // unblocks the receivers
	rwg.Wait()
	wg.Wait()
	close(h.q.out)
	return ctx.Err()
}

// Close closes the sockets. Run, if running, returns once its context ends;
// Close is for a Heartbeat that will not (or no longer) run.
func (h *Heartbeat) Close() error {
	h.runMu.Lock()
	h.ran = true
	h.runMu.Unlock()
	h.closeConns()
	return nil
}

func (h *Heartbeat) closeConns() {
	h.closeOnce.Do(func() {
		for _, c := range h.conns {
			c.Close()
		}
	})
}

// sender sends a round on every path each Interval, and at once when
// Publish changed the state fields.
func (h *Heartbeat) sender(ctx context.Context) {
	tk := h.clk.NewTicker(h.cfg.Interval)
	defer tk.Stop()
	mac := hmac.New(sha256.New, h.cfg.Key)
	seqs := make([]uint64, len(h.conns))
	round := uint64(0)
	buf := make([]byte, 0, FrameLenV2+18) // room for the destination (see sum)
	logged := make([]bool, len(h.conns))
	type echo struct{ tx, hold uint64 }
	echoes := make([]echo, len(h.conns))
	for {
		h.raiseBoot(seqs)
		boot := h.bootID.Load()
		now := h.clk.Now()
		h.mu.Lock()
		payload, peerBoot := h.payload, h.det.peerBoot
		for i := range echoes {
			echoes[i].tx, echoes[i].hold = h.det.echo(i, now)
		}
		h.mu.Unlock()
		round++
		for i, c := range h.conns {
			seqs[i]++
			f := frame{NodeID: h.cfg.NodeID, PairID: h.cfg.PairID, BootID: boot, Seq: seqs[i], Round: round, PathID: uint8(i),
				Payload: payload, TxNanos: uint64(now.Sub(h.start)) + 1, EchoNanos: echoes[i].tx, HoldNanos: echoes[i].hold,
				PeerBoot: peerBoot}
			remote := h.cfg.Paths[i].Remote
			buf = encode(buf[:0], mac, &f, remote)
			_, err := c.WriteToUDPAddrPort(buf, remote)
			h.mu.Lock()
			if err != nil {
				h.det.paths[i].sendErrs++
			} else {
				h.det.paths[i].sent++
			}
			h.mu.Unlock()
			if err != nil && !logged[i] && ctx.Err() == nil {
				h.log.Warn("send failed", zap.String("path", h.cfg.Paths[i].Name), zap.Error(err))
			}
			logged[i] = err != nil
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C():
		case <-h.sendNow:
		}
	}
}

// receiver reads path i's socket until it is closed. It never blocks on
// anything but the socket and the detector's mutex.
func (h *Heartbeat) receiver(ctx context.Context, i int) {
	c := h.conns[i]
	p := h.cfg.Paths[i]
	mac := hmac.New(sha256.New, h.cfg.Key)
	buf := make([]byte, MaxFrameLen+1)
	scratch := make([]byte, 0, 18+MACLen)
	// Compared without zone: a link-local peer's source carries the
	// receiving interface as its zone, the configured Remote may not.
	remote := netip.AddrPortFrom(p.Remote.Addr().Unmap().WithZone(""), p.Remote.Port())
	var evs []Event
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			// Not seen on Linux for an unconnected UDP socket, but never
			// spin on a persistent error: wait a period.
			h.log.Warn("receive failed", zap.String("path", p.Name), zap.Error(err))
			if !h.sleep(ctx, h.cfg.Interval) {
				return
			}
			continue
		}
		now := h.clk.Now()
		from = netip.AddrPortFrom(from.Addr().Unmap().WithZone(""), from.Port())
		evs, err = h.receive(i, buf[:n], from, remote, now, mac, scratch, evs[:0])
		if err != nil {
			h.log.Debug("datagram dropped", zap.String("path", p.Name), zap.Stringer("from", from), zap.Error(err))
		}
		h.q.push(evs)
	}
}

// receive checks one datagram b that arrived on path i from `from` and feeds
// it to the detector. Every refusal is counted and changes no verdict.
func (h *Heartbeat) receive(i int, b []byte, from, remote netip.AddrPort, now time.Time, mac hash.Hash, scratch []byte, evs []Event) ([]Event, error) {
	f, err := decode(b)
	if err == nil && (f.PairID != h.cfg.PairID || f.NodeID == h.cfg.NodeID || from != remote) {
		err = fmt.Errorf("%w: pair %d node %d from %s (want pair %d, node other than %d, from %s)",
			ErrStranger, f.PairID, f.NodeID, from, h.cfg.PairID, h.cfg.NodeID, remote)
	}
	if err == nil && !verify(mac, b, h.cfg.Paths[i].Local, scratch) {
		err = ErrBadMAC
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d := &h.det.paths[i].drops
	switch {
	case errors.Is(err, ErrMalformed):
		d.Malformed++
		return evs, err
	case errors.Is(err, ErrStranger):
		d.Stranger++
		return evs, err
	case errors.Is(err, ErrBadMAC):
		d.BadMAC++
		return evs, err
	}
	evs, err = h.det.accept(i, &f, now, evs)
	if err == nil && f.PeerBoot > h.bootID.Load() {
		// The peer last accepted a larger boot id of ours: this run
		// started below it and every datagram we send is a replay to
		// the peer. The sender raises ours past it. The receivers hold
		// mu here, so this is the only writer at a time.
		if f.PeerBoot+1 > h.bootWant.Load() {
			h.bootWant.Store(f.PeerBoot + 1)
		}
		select {
		case h.sendNow <- struct{}{}:
		default:
		}
	}
	if h.det.rearm {
		h.det.rearm = false
		select {
		case h.rearm <- struct{}{}:
		default:
		}
	}
	return evs, err
}

// watch turns the detector's deadlines into verdicts.
//
// A wake-up much later than the deadline it slept for means this process
// was not running (SIGSTOP, a paused VM, a starved host): the peer's
// datagrams of that time may be waiting in our sockets. Judging at once
// would call a live peer silent, so watch first gives the receivers one
// Interval to drain them (once per late wake-up), then judges.
func (h *Heartbeat) watch(ctx context.Context) {
	var evs []Event
	var scheduled time.Time // deadline the last timer was armed for
	for {
		if now := h.clk.Now(); !scheduled.IsZero() && now.Sub(scheduled) > h.cfg.Interval {
			h.log.Warn("late wake-up: giving the receivers one interval before judging the peer",
				zap.Duration("late", now.Sub(scheduled)))
			h.graces.Add(1)
			scheduled = time.Time{}
			if !h.sleep(ctx, h.cfg.Interval) {
				return
			}
			continue
		}
		now := h.clk.Now()
		h.mu.Lock()
		evs = h.det.tick(now, evs[:0])
		next := h.det.next()
		h.mu.Unlock()
		h.q.push(evs)
		h.ticks.Add(1)
		// With every verdict dead only a datagram can change one (and it
		// rearms us); re-check each DeadAfter anyway.
		wait := h.cfg.DeadAfter
		if !next.IsZero() {
			wait = next.Sub(now)
		}
		if wait <= 0 {
			continue
		}
		scheduled = now.Add(wait)
		t := h.clk.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-h.rearm:
			// Keep scheduled: woken before it, this is not late; a rearm
			// seen only after an overdue deadline still is.
			t.Stop()
		}
	}
}

// sleep waits d on the clock; false if ctx ended first.
func (h *Heartbeat) sleep(ctx context.Context, d time.Duration) bool {
	return clock.Sleep(ctx, h.clk, d) == nil
}
