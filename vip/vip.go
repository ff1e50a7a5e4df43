package vip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/clock"
)

// Errors. Every error the package returns wraps one of these or a system
// error, with the field, link or address it concerns.
var (
	// ErrConfig: Config.Validate rejected the configuration.
	ErrConfig = errors.New("vip: invalid configuration")
	// ErrClosed: the Manager was closed.
	ErrClosed = errors.New("vip: manager closed")
	// ErrNotOwned: Announce while the group is not claimed.
	ErrNotOwned = errors.New("vip: group not owned")
	// ErrOwned: Recover while the group is claimed (it would remove the
	// live VIPs).
	ErrOwned = errors.New("vip: group is owned")
	// ErrNoInterface: the data interface does not exist.
	ErrNoInterface = errors.New("vip: no such interface")
	// ErrLinkConflict: the virtual-MAC link name belongs to a link that
	// is not our macvlan.
	ErrLinkConflict = errors.New("vip: link name taken")
)

// conflictHoldoff is how often the same (VIP, MAC) conflict is reported at
// most: a second owner answering every probe must not flood the channel.
const conflictHoldoff = time.Second

// conflictBuffer is the capacity of the Conflicts channel; events that do
// not fit are dropped and counted (Status.ConflictsDropped).
const conflictBuffer = 64

// Manager claims, announces, watches and releases one VIP group. Its
// methods are safe for concurrent use; Claim, Release, Announce, Recover
// and Close are serialized.
type Manager struct {
	cfg    Config // validated, defaults applied
	log    *zap.Logger
	clk    clock.Clock
	nl     *netlink.Handle
	ownNL  bool
	filter []bpf.RawInstruction

	conflicts chan Conflict
	st        stats

	opMu   sync.Mutex // serializes the operations below
	sess   *session   // non-nil while owned
	closed bool
}

// session is one period of ownership: the sockets and the goroutines that
// announce, probe and watch.
type session struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	send   net.PacketConn // on the VIP link: announcements and probes
	mon    net.PacketConn // on the data interface: the conflict monitor
	sp     *speaker
	link   int // index of the link the VIPs live on
}

// Leftover is one thing Recover found and removed.
type Leftover struct {
	// Link is the interface it was on (or is, for the macvlan).
	Link string
	// Addr is the VIP found; invalid when the leftover is the macvlan.
	Addr netip.Prefix
	// Macvlan: the leftover is the virtual-MAC macvlan, deleted with every
	// address on it.
	Macvlan bool
}

func (l Leftover) String() string {
	if l.Macvlan {
		return "macvlan " + l.Link
	}
	return l.Addr.String() + " on " + l.Link
}

// New validates cfg and returns a Manager that owns nothing yet. It makes
// no change to the system (the daemon calls Recover at start-up, then
// Claim when the state machine says so).
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	filter, err := monitorFilter()
	if err != nil {
		return nil, fmt.Errorf("vip: assemble monitor filter: %w", err)
	}
	m := &Manager{
		cfg:       cfg,
		log:       cfg.Logger.Named("vip"),
		clk:       cfg.Clock,
		nl:        cfg.Netlink,
		filter:    filter,
		conflicts: make(chan Conflict, conflictBuffer),
	}
	m.st.recent = map[conflictKey]time.Time{}
	if m.nl == nil {
		err := cfg.Do(func() error {
			h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
			m.nl = h
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("vip: open netlink: %w", err)
		}
		m.ownNL = true
	}
	return m, nil
}

// Conflicts delivers a Conflict for every frame from another host that
// claims one of our VIPs while we own it (the same VIP and MAC at most once
// per second). It is closed by Close.
func (m *Manager) Conflicts() <-chan Conflict { return m.conflicts }

// Claim makes this node the owner of the group: with VirtualMAC, it creates
// the macvlan first; it adds every VIP (all or none: on failure what was
// added is removed again); it sends the first announcement round (a
// gratuitous ARP request and reply per IPv4 VIP, an unsolicited NA per IPv6
// VIP) before returning, and the first probe round right after; then the
// schedule, probes and conflict monitor run until Release.
//
// Claiming an owned group is harmless: the addresses are re-applied (which
// repairs them if someone removed one) and the schedule starts over.
//
// ctx is checked before anything changes; once Claim has begun it
// finishes, or rolls back, without waiting on ctx: none of its steps block.
func (m *Manager) Claim(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("vip: claim: %w", err)
	}
	start := m.clk.Now()
	parent, err := m.lookupLink(m.cfg.Interface)
	if err != nil {
		return err
	}
	link := parent
	if m.cfg.VirtualMAC != nil {
		m.tuneParentARP(m.cfg.Interface)
		if link, err = m.ensureMacvlan(parent); err != nil {
			return errors.Join(err, m.undoClaim())
		}
	}
	if err := m.addAddrs(link); err != nil {
		return errors.Join(err, m.undoClaim())
	}
	if s := m.sess; s != nil && s.link == link.Attrs().Index {
		// Already owned, same link: start the schedule over.
		s.sp.announce()
		s.sp.kick()
		s.sp.probe()
		m.log.Info("claimed again (already owned)", zap.Duration("took", m.clk.Since(start)))
		return nil
	}
	// Not owned, or the VIP link was recreated under us (its index
	// changed, so the old sockets are dead): start a fresh session.
	m.stopSession()
	sess, sent, err := m.startSession(parent, link)
	if err != nil {
		return errors.Join(err, m.undoClaim())
	}
	m.sess = sess
	took := sent.Sub(start)
	m.st.mu.Lock()
	m.st.owned, m.st.since, m.st.claimTook = true, start, took
	m.st.link, m.st.mac = link.Attrs().Name, append(net.HardwareAddr(nil), link.Attrs().HardwareAddr...)
	m.st.mu.Unlock()
	m.log.Info("claimed", zap.String("link", link.Attrs().Name), zap.Stringer("mac", link.Attrs().HardwareAddr),
		zap.Stringers("vips", m.cfg.VIPs), zap.Duration("took", took))
	m.warnIfSource() // off the critical path: the first round is out
	return nil
}

// undoClaim removes whatever a failed Claim may have put in place, so a
// failed Claim leaves the group released.
func (m *Manager) undoClaim() error {
	m.stopSession()
	return m.removeAll()
}

// startSession opens the sockets, sends round 0 and the first probes, and
// starts the goroutines. It returns when round 0 went out.
func (m *Manager) startSession(parent, link netlink.Link) (*session, time.Time, error) {
	mac := link.Attrs().HardwareAddr
	if len(mac) != 6 {
		return nil, time.Time{}, fmt.Errorf("vip: %s has no Ethernet MAC (%q)", link.Attrs().Name, mac)
	}
	// Everything that can be prepared is, before the first frame: the
	// first round is on the critical path of a failover.
	round, err := announceFrames(mac, m.cfg.VIPs)
	if err != nil {
		return nil, time.Time{}, err
	}
	var send, mon net.PacketConn
	err = m.cfg.Do(func() error {
		// Protocol 0: a send-only socket, the kernel queues nothing on it.
		s, err := packet.Listen(ifiOf(link), packet.Raw, 0, nil)
		if err != nil {
			return fmt.Errorf("vip: packet socket on %s: %w", link.Attrs().Name, err)
		}
		// The filter is attached before bind (package packet does so), so
		// nothing unfiltered is ever queued. The socket exists before the
		// first frame goes out, so no answer to it is missed.
		r, err := packet.Listen(ifiOf(parent), packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: m.filter})
		if err != nil {
			s.Close()
			return fmt.Errorf("vip: monitor socket on %s: %w", parent.Attrs().Name, err)
		}
		send, mon = s, r
		return nil
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	sp := newSpeaker(send, m.clk, m.log, &m.st)
	sp.sched = m.cfg.Announce
	sp.round = round
	// Round 0 goes out before Claim returns: the address exists, so the
	// kernel answers for it the moment a cache points here.
	sp.announce()
	sent := m.clk.Now()

	if m.cfg.ProbeInterval > 0 {
		ll := m.linkLocal(parent)
		probes, err := probeFrames(mac, ll, m.cfg.VIPs)
		if err != nil {
			send.Close()
			mon.Close()
			return nil, time.Time{}, err
		}
		if !ll.IsValid() && hasIPv6(m.cfg.VIPs) {
			m.log.Info("no IPv6 link-local address on the data interface: IPv6 VIPs are not probed",
				zap.String("link", parent.Attrs().Name))
		}
		sp.probes = probes
		sp.probeEvery = m.cfg.ProbeInterval
		sp.probe()
	}
	sp.maintainEvery = maintainInterval
	sp.maintain = m.maintainer(link)

	vips := map[netip.Addr]bool{}
	for _, p := range m.cfg.VIPs {
		vips[p.Addr()] = true
	}
	mo := &monitor{conn: mon, clk: m.clk, log: m.log, own: mac, virtual: m.cfg.VirtualMAC != nil, vips: vips, emit: m.emit}
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{cancel: cancel, send: send, mon: mon, sp: sp, link: link.Attrs().Index}
	s.wg.Add(2)
	go func() { defer s.wg.Done(); sp.run(ctx) }()
	go func() { defer s.wg.Done(); mo.run(ctx) }()
	return s, sent, nil
}

// stopSession stops announcing, probing and watching, and closes the
// sockets. It returns once the goroutines have exited (at once: they block
// only on the clock, which ctx interrupts, and on the sockets it closes).
func (m *Manager) stopSession() {
	s := m.sess
	if s == nil {
		return
	}
	m.sess = nil
	s.cancel()
	s.send.Close()
	s.mon.Close()
	s.wg.Wait()
	m.st.mu.Lock()
	m.st.owned, m.st.since, m.st.link, m.st.mac = false, time.Time{}, "", nil
	m.st.mu.Unlock()
}

// Release gives the group up: announcements and probes stop first (no
// announcement can follow the removal), then every VIP is removed, then the
// macvlan. What is absent is skipped, so Release is idempotent, and after a
// crash a new Manager's Release removes what the old one left.
//
// Release does not stop early when ctx ends, and does not fail because it
// did: each step is one bounded netlink request (a release takes about a
// millisecond, 20 ms with the macvlan; docs/benchmarks.md), and a group
// left half-released, still answering for a VIP, is worse than a late
// return. It returns nil once everything is removed.
func (m *Manager) Release(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.closed {
		return ErrClosed
	}
	start := m.clk.Now()
	m.stopSession()
	if err := m.removeAll(); err != nil {
		return err
	}
	m.log.Info("released", zap.Stringers("vips", m.cfg.VIPs), zap.Duration("took", m.clk.Since(start)))
	return nil
}

// removeAll removes the VIPs from their link and the macvlan, if any.
func (m *Manager) removeAll() error {
	name := m.cfg.Interface
	if v := m.cfg.VirtualMAC; v != nil {
		name = v.Name
	}
	var errs []error
	if l, err := m.nl.LinkByName(name); err == nil {
		removed, err := m.delAddrs(l)
		errs = append(errs, err)
		if len(removed) > 0 {
			m.log.Info("removed VIPs", zap.String("link", name), zap.Stringers("vips", removed))
		}
	} else if !isLinkNotFound(err) {
		errs = append(errs, fmt.Errorf("vip: look up link %s: %w", name, err))
	}
	if m.cfg.VirtualMAC != nil {
		deleted, err := m.deleteMacvlan()
		errs = append(errs, err)
		if deleted {
			m.log.Info("deleted macvlan", zap.String("link", name))
		}
	}
	return errors.Join(errs...)
}

// Announce sends an announcement round now and starts the schedule over
// (the state machine asks for it after a possible second owner), then a
// probe round. It returns the send error of the round, if any.
func (m *Manager) Announce(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	switch {
	case m.closed:
		return ErrClosed
	case m.sess == nil:
		return ErrNotOwned
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("vip: announce: %w", err)
	}
	err := m.sess.sp.announce()
	m.sess.sp.kick()
	m.sess.sp.probe()
	if err != nil {
		return fmt.Errorf("vip: announce: %w", err)
	}
	return nil
}

// Recover finds what a crashed run left behind in this namespace, removes
// it and returns it: the virtual-MAC macvlan (by name) and any of the
// group's VIPs on any link. Call it at start-up, before the first Claim;
// it refuses to run while the group is owned (ErrOwned). Finding nothing
// returns an empty slice and no error.
func (m *Manager) Recover(ctx context.Context) ([]Leftover, error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	switch {
	case m.closed:
		return nil, ErrClosed
	case m.sess != nil:
		return nil, ErrOwned
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("vip: recover: %w", err)
	}
	var found []Leftover
	var errs []error
	if v := m.cfg.VirtualMAC; v != nil {
		deleted, err := m.deleteMacvlan()
		if deleted {
			found = append(found, Leftover{Link: v.Name, Macvlan: true})
		}
		errs = append(errs, err)
	}
	vips := map[netip.Addr]bool{}
	for _, p := range m.cfg.VIPs {
		vips[p.Addr()] = true
	}
	links, err := m.nl.LinkList()
	if err != nil {
		return found, errors.Join(append(errs, fmt.Errorf("vip: list links: %w", err))...)
	}
	for _, l := range links {
		addrs, err := m.nl.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			errs = append(errs, fmt.Errorf("vip: list addresses of %s: %w", l.Attrs().Name, err))
			continue
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || !vips[ip.Unmap()] {
				continue
			}
			bits, _ := a.Mask.Size()
			lo := Leftover{Link: l.Attrs().Name, Addr: netip.PrefixFrom(ip.Unmap(), bits)}
			if err := m.nl.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("vip: remove leftover %s: %w", lo, err))
				continue
			}
			found = append(found, lo)
		}
	}
	for _, lo := range found {
		m.log.Warn("removed leftover of an earlier run", zap.Stringer("leftover", lo))
	}
	return found, errors.Join(errs...)
}

// Owned reports whether the group is claimed.
func (m *Manager) Owned() bool {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	return m.st.owned
}

// Close stops the goroutines, closes the sockets and (if the Manager
// opened it) the netlink handle, and closes the Conflicts channel. It does
// NOT release the group: the addresses stay, exactly as after a crash, so
// a clean shutdown calls Release first (the state machine's demotion
// order). It is idempotent.
func (m *Manager) Close() error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.sess != nil {
		m.log.Warn("closing while owning the VIPs: they stay configured until released or recovered")
	}
	m.stopSession()
	close(m.conflicts)
	if m.ownNL {
		m.nl.Close()
	}
	return nil
}

// Status is a snapshot for the console and the failover drill.
type Status struct {
	Owned bool
	// Since is when the current ownership began (zero when not owned).
	Since time.Time
	// ClaimTook is how long the last Claim took from its start to the
	// first announcement round sent.
	ClaimTook time.Duration
	// Link and MAC are where the VIPs live and the MAC announced.
	Link string
	MAC  net.HardwareAddr
	VIPs []netip.Prefix
	// Counters since New.
	Announcements, Probes, LeaseRenewals uint64
	// AddrRestores counts VIPs found missing while owned and put back.
	AddrRestores                uint64
	LastAnnounce                time.Time
	SendFailures                uint64
	LastError                   string
	LastErrorAt                 time.Time
	Conflicts, ConflictsDropped uint64
	LastConflict                *Conflict
}

// Status returns a snapshot of the Manager's state and counters.
func (m *Manager) Status() Status {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	s := Status{
		Owned: m.st.owned, Since: m.st.since, ClaimTook: m.st.claimTook,
		Link: m.st.link, MAC: append(net.HardwareAddr(nil), m.st.mac...),
		VIPs:          append([]netip.Prefix(nil), m.cfg.VIPs...),
		Announcements: m.st.announcements, Probes: m.st.probes, LeaseRenewals: m.st.renewals,
		AddrRestores: m.st.restores,
		LastAnnounce: m.st.lastAnnounce, SendFailures: m.st.failures, LastErrorAt: m.st.lastErrAt,
		Conflicts: m.st.conflicts, ConflictsDropped: m.st.dropped,
	}
	if m.st.lastErr != nil {
		s.LastError = m.st.lastErr.Error()
	}
	if c := m.st.lastConflict; c != nil {
		cc := *c
		s.LastConflict = &cc
	}
	return s
}

type conflictKey struct {
	vip netip.Addr
	mac string
	dup bool
}

// emit delivers a conflict without ever blocking the monitor.
func (m *Manager) emit(c Conflict) {
	st := &m.st
	st.mu.Lock()
	k := conflictKey{c.VIP, string(c.MAC), c.DuplicateMAC}
	if last, ok := st.recent[k]; ok && c.At.Sub(last) < conflictHoldoff {
		st.mu.Unlock()
		return
	}
	if len(st.recent) >= 1024 { // bounded even if someone sprays random MACs
		clear(st.recent)
	}
	st.recent[k] = c.At
	st.conflicts++
	cc := c
	st.lastConflict = &cc
	dropped := false
	select {
	case m.conflicts <- c:
	default:
		st.dropped++
		dropped = true
	}
	st.mu.Unlock()
	m.log.Warn("VIP conflict: another host claims our address", zap.Stringer("vip", c.VIP), zap.Stringer("mac", c.MAC),
		zap.Stringer("evidence", c.Evidence), zap.Bool("duplicateMAC", c.DuplicateMAC), zap.Bool("dropped", dropped))
}

type sendKind int

const (
	kindAnnounce sendKind = iota
	kindProbe
	kindRenew // an address check (and lease renewal when due)
	numKinds
)

var kindNames = [numKinds]string{"announcement", "probe", "address check"}

// stats holds the counters behind Status; the session goroutines update it.
type stats struct {
	mu sync.Mutex

	owned     bool
	since     time.Time
	claimTook time.Duration
	link      string
	mac       net.HardwareAddr

	announcements, probes, renewals uint64
	restores, stalls                uint64
	lastAnnounce                    time.Time
	failures                        uint64
	lastErr                         error
	lastErrAt                       time.Time
	failing                         [numKinds]bool

	conflicts, dropped uint64
	lastConflict       *Conflict
	recent             map[conflictKey]time.Time
}

func (st *stats) stalled() {
	st.mu.Lock()
	st.stalls++
	st.mu.Unlock()
}

// maintained records one address check.
func (st *stats) maintained(restored int, at time.Time, err error, log *zap.Logger) {
	st.mu.Lock()
	st.restores += uint64(restored)
	st.mu.Unlock()
	st.sent(kindRenew, at, err, log)
}

// sent records one send (or address check) and logs failures on their first
// occurrence and on recovery only, so a link that stays down does not
// flood the log.
func (st *stats) sent(k sendKind, at time.Time, err error, log *zap.Logger) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err == nil {
		switch k {
		case kindAnnounce:
			st.announcements++
			st.lastAnnounce = at
		case kindProbe:
			st.probes++
		}
		if st.failing[k] {
			st.failing[k] = false
			log.Info(kindNames[k] + " works again")
		}
		return
	}
	st.failures++
	st.lastErr, st.lastErrAt = err, at
	if !st.failing[k] {
		st.failing[k] = true
		log.Warn(kindNames[k]+" failed", zap.Error(err))
	}
}
