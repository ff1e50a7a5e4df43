// Package tiebreak tells a node whether it can still reach the outside
// world, so that of two nodes that lost each other only the one that is
// not isolated promotes (and an isolated active fences itself). It also
// watches the data LAN port's link state and drives an optional hardware
// watchdog.
//
// # Contract
//
//   - A Gateway probes, on the data LAN interface, each configured gateway
//     address with an ARP request (IPv4); an ARP reply from that address,
//     addressed to our MAC, within Config.Timeout means reachable. An
//     optional witness (another address, probed by ICMP echo or a TCP
//     connect) counts too. Result.Reachable is true when any of them
//     answered. The package reports; it never decides a role.
//   - ARP, not ICMP, for the gateways: a router answers ARP for its own
//     address even when it rate-limits or filters ICMP, and ARP proves
//     exactly what the VIP needs, layer-2 reachability on the LAN.
//   - Replies left in the socket from an earlier round are discarded before
//     each round, so a late answer never vouches for the current one.
//   - WatchLink reports the data port's link state (administratively up
//     and carrier, IFF_UP and IFF_LOWER_UP) at once and on every change,
//     from rtnetlink events.
//   - Watchdog drives a /dev/watchdog-style device: Kick writes one byte,
//     Disarm writes the magic 'V' and closes, which stops a driver that
//     honours magic close. The daemon kicks only while the active's lease
//     holds (KickWhile); if the daemon hangs, the machine resets.
//
// # Namespaces and goroutines
//
// Sockets belong to the network namespace of the thread that opens them:
// NewGateway opens the ARP (and ICMP) sockets, Probe dials a TCP witness,
// and WatchLink subscribes, each on the calling goroutine. Probe and Run
// start no goroutine; Run and KickWhile are owned by their caller and
// return when ctx ends.
// WatchLink owns the netlink subscription's reader (started by the netlink
// library); it closes it and waits for it before returning.
package tiebreak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/mdlayher/arp"
	"go.uber.org/zap"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/tandem-ha/tandem/internal/clock"
)

// Sentinel errors.
var (
	// ErrConfig: invalid Config; the message names the field.
	ErrConfig = errors.New("tiebreak: invalid config")
	// ErrLink: the watched interface does not exist or cannot be watched.
	ErrLink = errors.New("tiebreak: link")
	// ErrWatchdog: the watchdog device failed or was disarmed.
	ErrWatchdog = errors.New("tiebreak: watchdog")
)

// Config configures a Gateway.
type Config struct {
	// Interface is the data LAN interface; it must hold an IPv4 address.
	Interface string
	// Gateways are IPv4 addresses probed with ARP on Interface.
	Gateways []netip.Addr
	// Witness is optional: "icmp:ADDR" (echo request) or "tcp:ADDR:PORT"
	// (a connect; refused counts as reachable too: something answered).
	Witness string
	// Interval is the period of Run; Timeout bounds each round and must be
	// shorter than Interval.
	Interval, Timeout time.Duration
	// Clock schedules Run; nil means clock.Real(). Socket deadlines are
	// always real time.
	Clock clock.Clock
	// Logger receives the component's logs (named "tiebreak"); nil discards them.
	Logger *zap.Logger
}

// Result is one probe round.
type Result struct {
	// Reachable: a gateway or the witness answered.
	Reachable bool
	// Answered lists the gateways that answered, in configuration order.
	Answered []netip.Addr
	// Witness: the witness answered (false when none is configured).
	Witness bool
	// At is when the round started (Config.Clock).
	At time.Time
	// Err is the first error of the round (a send failing on a link
	// without carrier, a socket error); Reachable may still be true.
	Err error
}

type witness struct {
	kind string // "icmp" or "tcp"
	addr netip.Addr
	ap   netip.AddrPort
}

func parseWitness(s string) (*witness, error) {
	if s == "" {
		return nil, nil
	}
	kind, rest, ok := strings.Cut(s, ":")
	switch {
	case ok && kind == "icmp":
		a, err := netip.ParseAddr(rest)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%w: witness %q: icmp needs an IPv4 address", ErrConfig, s)
		}
		return &witness{kind: kind, addr: a}, nil
	case ok && kind == "tcp":
		ap, err := netip.ParseAddrPort(rest)
		if err != nil || ap.Port() == 0 {
			return nil, fmt.Errorf("%w: witness %q: tcp needs ADDR:PORT", ErrConfig, s)
		}
		return &witness{kind: kind, ap: ap}, nil
	}
	return nil, fmt.Errorf("%w: witness %q: want icmp:ADDR or tcp:ADDR:PORT", ErrConfig, s)
}

// Gateway probes the configured gateways (and witness).
type Gateway struct {
	cfg  Config
	log  *zap.Logger
	arp  *arp.Client
	mac  net.HardwareAddr
	wit  *witness
	icmp *icmp.PacketConn
	id   int // ICMP echo identifier
	seq  int
}

// NewGateway validates cfg and opens the ARP socket on cfg.Interface (and
// the ICMP socket of an icmp witness) in the caller's network namespace.
func NewGateway(cfg Config) (*Gateway, error) {
	if cfg.Interface == "" {
		return nil, fmt.Errorf("%w: interface is empty", ErrConfig)
	}
	wit, err := parseWitness(cfg.Witness)
	if err != nil {
		return nil, err
	}
	if len(cfg.Gateways) == 0 && wit == nil {
		return nil, fmt.Errorf("%w: gateways: at least one gateway or a witness is required", ErrConfig)
	}
	for i, g := range cfg.Gateways {
		if !g.Is4() || g.IsUnspecified() {
			return nil, fmt.Errorf("%w: gateways[%d] %s: ARP probes need an IPv4 address", ErrConfig, i, g)
		}
	}
	if cfg.Timeout <= 0 || cfg.Interval <= 0 || cfg.Timeout >= cfg.Interval {
		return nil, fmt.Errorf("%w: timeout (%v) must be positive and shorter than interval (%v)", ErrConfig, cfg.Timeout, cfg.Interval)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	cfg.Gateways = append([]netip.Addr(nil), cfg.Gateways...)
	g := &Gateway{cfg: cfg, log: cfg.Logger.Named("tiebreak"), wit: wit, id: os.Getpid() & 0xffff}
	if len(cfg.Gateways) > 0 {
		ifi, err := net.InterfaceByName(cfg.Interface)
		if err != nil {
			return nil, fmt.Errorf("%w: interface %q: %v", ErrConfig, cfg.Interface, err)
		}
		c, err := arp.Dial(ifi)
		if err != nil {
			return nil, fmt.Errorf("tiebreak: interface %q: open ARP socket: %w", cfg.Interface, err)
		}
		g.arp, g.mac = c, ifi.HardwareAddr
	}
	if wit != nil && wit.kind == "icmp" {
		pc, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("tiebreak: witness %q: open ICMP socket: %w", cfg.Witness, err)
		}
		g.icmp = pc
	}
	return g, nil
}

// Close closes the sockets.
func (g *Gateway) Close() error {
	var err error
	if g.arp != nil {
		err = g.arp.Close()
	}
	if g.icmp != nil {
		err = errors.Join(err, g.icmp.Close())
	}
	return err
}

// realNow is for socket deadlines, which the kernel measures in real time.
var realNow = clock.Real().Now

// Probe runs one round now and waits for its answers up to Timeout (or ctx).
// It is not safe for concurrent use (Run calls it in turn).
func (g *Gateway) Probe(ctx context.Context) Result {
	r := Result{At: g.cfg.Clock.Now()}
	deadline := realNow().Add(g.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	note := func(err error) {
		if err != nil && r.Err == nil {
			r.Err = err
		}
	}
	if g.arp != nil {
		g.drainARP()
		for _, gw := range g.cfg.Gateways {
			if err := g.arp.Request(gw); err != nil {
				note(fmt.Errorf("tiebreak: ARP request for %s on %s: %w", gw, g.cfg.Interface, err))
			}
		}
	}
	if g.wit != nil {
		ok, err := g.probeWitness(ctx, deadline)
		r.Witness = ok
		note(err)
	}
	if g.arp != nil {
		answered, err := g.readARP(ctx, deadline)
		note(err)
		for _, gw := range g.cfg.Gateways {
			if answered[gw] {
				r.Answered = append(r.Answered, gw)
			}
		}
	}
	r.Reachable = len(r.Answered) > 0 || r.Witness
	return r
}

// drainARP discards replies that arrived after an earlier round ended.
func (g *Gateway) drainARP() {
	g.arp.SetReadDeadline(realNow().Add(-time.Second))
	for {
		if _, _, err := g.arp.Read(); err != nil {
			break
		}
	}
}

func (g *Gateway) readARP(ctx context.Context, deadline time.Time) (map[netip.Addr]bool, error) {
	answered := map[netip.Addr]bool{}
	want := map[netip.Addr]bool{}
	for _, gw := range g.cfg.Gateways {
		want[gw] = true
	}
	g.arp.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { g.arp.SetReadDeadline(realNow().Add(-time.Second)) })
	defer stop()
	for len(answered) < len(want) {
		p, _, err := g.arp.Read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return answered, nil
			}
			return answered, fmt.Errorf("tiebreak: read ARP on %s: %w", g.cfg.Interface, err)
		}
		// A reply to our request: from a gateway, to our MAC. Replies to
		// the peer's probes (flooded by a switch) must not count for us.
		if p.Operation == arp.OperationReply && want[p.SenderIP] && bytes.Equal(p.TargetHardwareAddr, g.mac) {
			answered[p.SenderIP] = true
		}
	}
	return answered, nil
}

func (g *Gateway) probeWitness(ctx context.Context, deadline time.Time) (bool, error) {
	switch g.wit.kind {
	case "tcp":
		ctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", g.wit.ap.String())
		if err == nil {
			c.Close()
			return true, nil
		}
		if errors.Is(err, errConnRefused) {
			return true, nil // a RST came back: the witness host is there
		}
		if ctx.Err() != nil {
			return false, nil
		}
		return false, fmt.Errorf("tiebreak: witness %s: %w", g.cfg.Witness, err)
	default:
		return g.ping(ctx, deadline)
	}
}

func (g *Gateway) ping(ctx context.Context, deadline time.Time) (bool, error) {
	g.seq = (g.seq + 1) & 0xffff
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: g.id, Seq: g.seq, Data: []byte("tandem tie-breaker")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return false, err
	}
	dst := &net.IPAddr{IP: g.wit.addr.AsSlice()}
	if _, err := g.icmp.WriteTo(b, dst); err != nil {
		return false, fmt.Errorf("tiebreak: witness %s: send echo: %w", g.cfg.Witness, err)
	}
	g.icmp.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { g.icmp.SetReadDeadline(realNow().Add(-time.Second)) })
	defer stop()
	buf := make([]byte, 1500)
	for {
		n, from, err := g.icmp.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return false, nil
			}
			return false, fmt.Errorf("tiebreak: witness %s: read: %w", g.cfg.Witness, err)
		}
		ip, ok := from.(*net.IPAddr)
		if !ok {
			continue
		}
		src, _ := netip.AddrFromSlice(ip.IP)
		if src.Unmap() != g.wit.addr {
			continue
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == g.id && e.Seq == g.seq {
			return true, nil
		}
	}
}

// Run probes at once and then every Interval, handing each Result to out
// on the caller's goroutine, until ctx ends.
func (g *Gateway) Run(ctx context.Context, out func(Result)) {
	tk := g.cfg.Clock.NewTicker(g.cfg.Interval)
	defer tk.Stop()
	for {
		r := g.Probe(ctx)
		if ctx.Err() != nil {
			return
		}
		out(r)
		select {
		case <-ctx.Done():
			return
		case <-tk.C():
		}
	}
}
