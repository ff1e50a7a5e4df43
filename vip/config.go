package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// Config describes one VIP group and how to claim it. The zero value of
// every optional field selects the documented default; Validate (called by
// New) rejects anything else that makes no sense, naming the field.
type Config struct {
	// Interface is the data interface the VIPs live on (or, with
	// VirtualMAC, the parent of the macvlan they live on). Required.
	Interface string

	// VIPs is the group: IPv4 and IPv6 addresses with their prefix length
	// (192.0.2.10/24, 2001:db8:0:1::10/64). They are claimed, announced
	// and released together. The prefix length is what the kernel gets;
	// it decides the on-link route the address brings with it.
	VIPs []netip.Prefix

	// VirtualMAC, if set, makes the VIPs live on a macvlan carrying a
	// fixed MAC that moves with the role: clients' neighbour caches never
	// change on failover, only the switches' forwarding tables.
	VirtualMAC *VirtualMAC

	// Announce is the announcement schedule (see Schedule).
	Announce Schedule

	// ProbeInterval is how often, while the group is owned, an ARP probe
	// (and an IPv6 neighbour solicitation) asks who else holds a VIP, so a
	// second owner that stays silent is still found. 0 means
	// DefaultProbeInterval; a negative value disables probing (conflicts are
	// then only seen when the other owner speaks).
	ProbeInterval time.Duration

	// AddrLifetime is the valid lifetime given to the addresses. 0 means
	// forever. A positive value (whole seconds, at least 3 s) turns the
	// address into a lease the owner renews every third of it: if the
	// daemon dies and nobody releases or recovers, the kernel removes the
	// VIP by itself when the lease runs out (Linux checks expiry about
	// once a second). The cost: an owner frozen for longer than the lease
	// (SIGSTOP, a paused VM) loses the VIP, and gets it back, announced,
	// within a second of running again.
	AddrLifetime time.Duration

	// Clock is the time source; nil means clock.Real().
	Clock clock.Clock
	// Logger receives the component's logs (named "vip"); nil discards them.
	Logger *zap.Logger

	// Netlink is the handle used for every link and address operation. Nil
	// means a handle the Manager opens (through Do) and closes itself. Tests
	// pass one bound to a lab namespace (netlink.NewHandleAt).
	Netlink *netlink.Handle

	// Do runs fn on a thread inside the network namespace of Interface;
	// the Manager opens its packet sockets and writes sysctls through it.
	// Nil runs fn directly (the daemon lives in that namespace). Tests pass
	// lab.Host.Do.
	Do func(fn func() error) error
}

// VirtualMAC configures the optional virtual MAC.
type VirtualMAC struct {
	// Name of the macvlan interface created on Config.Interface at claim
	// and deleted at release (at most 15 bytes).
	Name string
	// MAC is the virtual MAC: 6 bytes, unicast, not all zero. A locally
	// administered address (second-lowest bit of the first octet set, as
	// in 02:...) cannot collide with any vendor's.
	MAC net.HardwareAddr
}

// Defaults.
const (
	// DefaultRepeats and DefaultInterval: 5 repeats 1 s apart, as the
	// Linux neighbour locktime (1 s) drops non-gratuitous updates that
	// arrive sooner, and as MetalLB found a single burst gets lost.
	DefaultRepeats  = 5
	DefaultInterval = time.Second
	// DefaultProbeInterval bounds how long a silent second owner stays
	// unnoticed: half a second plus a round trip.
	DefaultProbeInterval = 500 * time.Millisecond
)

// Limits enforced by Validate.
const (
	maxVIPs          = 64
	maxRepeats       = 100
	minInterval      = 10 * time.Millisecond
	maxInterval      = time.Minute
	minRefresh       = time.Second
	minProbeInterval = 50 * time.Millisecond
	minAddrLifetime  = 3 * time.Second
	// maxAddrLifetime stays below 0xffffffff s, the kernel's "forever".
	maxAddrLifetime = (1<<32 - 2) * time.Second
	ifNameMax       = 15 // IFNAMSIZ - 1
)

// Validate checks c and returns an error wrapping ErrConfig that names the
// first offending field. It does not modify c.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
	}
	if err := validIfName(c.Interface); err != nil {
		return bad("Interface", "%v", err)
	}
	if len(c.VIPs) == 0 {
		return bad("VIPs", "at least one address is required")
	}
	if len(c.VIPs) > maxVIPs {
		return bad("VIPs", "%d addresses, at most %d", len(c.VIPs), maxVIPs)
	}
	seen := map[netip.Addr]int{}
	for i, p := range c.VIPs {
		field := fmt.Sprintf("VIPs[%d]", i)
		if !p.IsValid() {
			return bad(field, "not a valid prefix (want e.g. 192.0.2.10/24)")
		}
		a := p.Addr()
		if a.Zone() != "" {
			return bad(field, "%s: zoned addresses are not VIPs", p)
		}
		if a.Is4In6() {
			return bad(field, "%s: IPv4-mapped IPv6 address; write the IPv4 form", p)
		}
		if !a.IsGlobalUnicast() || a.IsLinkLocalUnicast() {
			return bad(field, "%s: a VIP must be a global unicast address (not loopback, link-local, multicast or unspecified)", p)
		}
		if p.Bits() < 1 {
			// A /0 VIP would bring an on-link route for the whole
			// address family with it.
			return bad(field, "%s: prefix length must be at least 1", p)
		}
		if j, dup := seen[a]; dup {
			return bad(field, "%s: same address as VIPs[%d]", p, j)
		}
		seen[a] = i
	}
	if v := c.VirtualMAC; v != nil {
		if err := validIfName(v.Name); err != nil {
			return bad("VirtualMAC.Name", "%v", err)
		}
		if v.Name == c.Interface {
			return bad("VirtualMAC.Name", "%q is the data interface itself; the macvlan needs its own name", v.Name)
		}
		if len(v.MAC) != 6 {
			return bad("VirtualMAC.MAC", "%q: want a 6-byte Ethernet MAC", v.MAC)
		}
		if v.MAC[0]&1 != 0 {
			return bad("VirtualMAC.MAC", "%s is a multicast MAC", v.MAC)
		}
		if isZeroMAC(v.MAC) {
			return bad("VirtualMAC.MAC", "all-zero MAC")
		}
	}
	s := c.Announce
	switch {
	case s.Repeats < -1:
		return bad("Announce.Repeats", "%d: want -1 (none), 0 (default %d) or up to %d", s.Repeats, DefaultRepeats, maxRepeats)
	case s.Repeats > maxRepeats:
		return bad("Announce.Repeats", "%d: at most %d", s.Repeats, maxRepeats)
	case s.Interval != 0 && (s.Interval < minInterval || s.Interval > maxInterval):
		return bad("Announce.Interval", "%v: want 0 (default %v) or %v..%v", s.Interval, DefaultInterval, minInterval, maxInterval)
	case s.Refresh < 0 || (s.Refresh > 0 && s.Refresh < minRefresh):
		return bad("Announce.Refresh", "%v: want 0 (off) or at least %v", s.Refresh, minRefresh)
	}
	if p := c.ProbeInterval; p > 0 && p < minProbeInterval {
		return bad("ProbeInterval", "%v: want 0 (default %v), negative (off) or at least %v", p, DefaultProbeInterval, minProbeInterval)
	}
	if l := c.AddrLifetime; l != 0 {
		switch {
		case l < minAddrLifetime:
			return bad("AddrLifetime", "%v: want 0 (forever) or at least %v", l, minAddrLifetime)
		case l > maxAddrLifetime:
			return bad("AddrLifetime", "%v: at most %v", l, maxAddrLifetime)
		case l%time.Second != 0:
			return bad("AddrLifetime", "%v: the kernel counts lifetimes in whole seconds", l)
		}
	}
	return nil
}

// withDefaults returns c with every zero optional field replaced by its
// default. c must be valid.
func (c Config) withDefaults() Config {
	c.VIPs = append([]netip.Prefix(nil), c.VIPs...)
	if c.VirtualMAC != nil {
		v := *c.VirtualMAC
		v.MAC = append(net.HardwareAddr(nil), v.MAC...)
		c.VirtualMAC = &v
	}
	c.Announce = c.Announce.normalized()
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeInterval < 0 {
		c.ProbeInterval = 0
	}
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Do == nil {
		c.Do = func(fn func() error) error { return fn() }
	}
	return c
}

func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > ifNameMax:
		return fmt.Errorf("%q is longer than %d bytes", name, ifNameMax)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not an interface name", name)
	case strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("%q holds a character not allowed in interface names", name)
	}
	return nil
}

func isZeroMAC(mac net.HardwareAddr) bool {
	for _, b := range mac {
		if b != 0 {
			return false
		}
	}
	return true
}
