package vip

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// lookupLink returns the named link, wrapping ErrNoInterface when it does
// not exist.
func (m *Manager) lookupLink(name string) (netlink.Link, error) {
	l, err := m.nl.LinkByName(name)
	if err != nil {
		if isLinkNotFound(err) {
			return nil, fmt.Errorf("%w: %s", ErrNoInterface, name)
		}
		return nil, fmt.Errorf("vip: look up link %s: %w", name, err)
	}
	return l, nil
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// nlAddr is the netlink form of one VIP: preferred lifetime 0, so it is
// "deprecated" from the start (RFC 4862 5.5.4) and IPv6 never picks it as
// a source address (IPv4 ignores the flag: see warnIfSource); valid lifetime forever or the configured lease;
// IPv6 without duplicate address detection, because DAD would keep the
// address tentative (unusable) for a second or more, and the address is
// meant to move while a crashed owner may still hold it.
func (m *Manager) nlAddr(p netip.Prefix) *netlink.Addr {
	a := p.Addr()
	na := &netlink.Addr{
		IPNet:       &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())},
		PreferedLft: 0,
		ValidLft:    math.MaxUint32, // INFINITY_LIFE_TIME
	}
	if l := m.cfg.AddrLifetime; l > 0 {
		na.ValidLft = int(l.Seconds())
	}
	if a.Is6() {
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

// addAddrs puts every VIP on link (or renews it: RTM_NEWADDR with
// NLM_F_REPLACE updates an existing address in place, its lifetimes
// included, without removing it even for a moment).
func (m *Manager) addAddrs(link netlink.Link) error {
	for i, p := range m.cfg.VIPs {
		if err := m.nl.AddrReplace(link, m.nlAddr(p)); err != nil {
			return fmt.Errorf("vip: add VIPs[%d] %s to %s: %w", i, p, link.Attrs().Name, err)
		}
	}
	return nil
}

// maintainInterval is how often an owner checks that its VIPs are still
// on their link. One address dump per second is nothing; a VIP removed by
// hand, or flushed when its link was set down (Linux drops IPv6 addresses
// then, unless keep_addr_on_down is set), is back within a second.
const maintainInterval = time.Second

// maintainer returns the speaker's maintain step for link: put back every
// VIP that is missing, and renew them all when a third of AddrLifetime has
// passed since the last renewal. It runs on the speaker's goroutine only.
func (m *Manager) maintainer(link netlink.Link) func() (int, error) {
	lastRenew := m.clk.Now()
	return func() (int, error) {
		addrs, err := m.nl.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return 0, fmt.Errorf("vip: list addresses of %s: %w", link.Attrs().Name, err)
		}
		have := map[netip.Addr]bool{}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				have[ip.Unmap()] = true
			}
		}
		// The step runs once per maintainInterval, a little late or early:
		// half an interval of slack keeps the renewals every third of the
		// lease instead of slipping to every other tick.
		now := m.clk.Now()
		renew := m.cfg.AddrLifetime > 0 && now.Sub(lastRenew)+maintainInterval/2 >= m.cfg.AddrLifetime/3
		restored := 0
		var errs []error
		for i, p := range m.cfg.VIPs {
			missing := !have[p.Addr()]
			if !missing && !renew {
				continue
			}
			if err := m.nl.AddrReplace(link, m.nlAddr(p)); err != nil {
				errs = append(errs, fmt.Errorf("vip: add VIPs[%d] %s to %s: %w", i, p, link.Attrs().Name, err))
				continue
			}
			if missing {
				restored++
				m.log.Warn("VIP was removed while owned; restored", zap.Stringer("vip", p), zap.String("link", link.Attrs().Name))
			}
		}
		if renew && len(errs) == 0 {
			lastRenew = now
			m.st.mu.Lock()
			m.st.renewals++
			m.st.mu.Unlock()
		}
		return restored, errors.Join(errs...)
	}
}

// delAddrs removes every VIP from link; one that is absent is no error.
// It tries them all and returns what failed.
func (m *Manager) delAddrs(link netlink.Link) (removed []netip.Prefix, err error) {
	var errs []error
	for i, p := range m.cfg.VIPs {
		switch err := m.nl.AddrDel(link, m.nlAddr(p)); {
		case err == nil:
			removed = append(removed, p)
		case errors.Is(err, unix.EADDRNOTAVAIL), errors.Is(err, unix.ENODEV):
		default:
			errs = append(errs, fmt.Errorf("vip: remove VIPs[%d] %s from %s: %w", i, p, link.Attrs().Name, err))
		}
	}
	return removed, errors.Join(errs...)
}

// ensureMacvlan returns the virtual-MAC macvlan on parent, creating it if
// needed: bridge mode (the host's other macvlans on the parent can reach
// it), no IPv6 address generation (a link-local derived from the virtual
// MAC would be the same on both nodes and fail DAD whenever both hold the
// macvlan), MAC set, up. A macvlan of that name on another parent is a
// leftover of an older configuration and is replaced; a link of that name
// that is not a macvlan is an operator's, and is left alone with an error.
func (m *Manager) ensureMacvlan(parent netlink.Link) (netlink.Link, error) {
	v := m.cfg.VirtualMAC
	l, err := m.nl.LinkByName(v.Name)
	switch {
	case err == nil:
		mv, ok := l.(*netlink.Macvlan)
		if !ok {
			return nil, fmt.Errorf("%w: %s is a %s link, not a macvlan; rename it or choose another VirtualMAC.Name",
				ErrLinkConflict, v.Name, l.Type())
		}
		if mv.Attrs().ParentIndex != parent.Attrs().Index {
			m.log.Warn("replacing macvlan on another parent", zap.String("link", v.Name), zap.Int("parentIndex", mv.Attrs().ParentIndex))
			if err := m.nl.LinkDel(mv); err != nil && !isLinkNotFound(err) {
				return nil, fmt.Errorf("vip: delete stale macvlan %s: %w", v.Name, err)
			}
			return m.createMacvlan(parent)
		}
		if !sameMAC(mv.Attrs().HardwareAddr, v.MAC) {
			if err := m.nl.LinkSetHardwareAddr(mv, v.MAC); err != nil {
				return nil, fmt.Errorf("vip: set MAC of %s to %s: %w", v.Name, v.MAC, err)
			}
		}
		if err := m.nl.LinkSetUp(mv); err != nil {
			return nil, fmt.Errorf("vip: set %s up: %w", v.Name, err)
		}
		return m.lookupLink(v.Name)
	case isLinkNotFound(err):
		return m.createMacvlan(parent)
	default:
		return nil, fmt.Errorf("vip: look up link %s: %w", v.Name, err)
	}
}

func (m *Manager) createMacvlan(parent netlink.Link) (netlink.Link, error) {
	v := m.cfg.VirtualMAC
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: v.Name, ParentIndex: parent.Attrs().Index, HardwareAddr: v.MAC},
		Mode:      netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := m.nl.LinkAdd(mv); err != nil {
		return nil, fmt.Errorf("vip: create macvlan %s on %s with MAC %s: %w", v.Name, parent.Attrs().Name, v.MAC, err)
	}
	l, err := m.lookupLink(v.Name)
	if err != nil {
		return nil, err
	}
	if err := m.nl.LinkSetIP6AddrGenMode(l, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
		return nil, fmt.Errorf("vip: disable IPv6 address generation on %s: %w", v.Name, err)
	}
	if err := m.nl.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("vip: set %s up: %w", v.Name, err)
	}
	m.log.Info("created macvlan", zap.String("link", v.Name), zap.Stringer("mac", v.MAC), zap.String("parent", parent.Attrs().Name))
	return m.lookupLink(v.Name)
}

// deleteMacvlan deletes the virtual-MAC macvlan (and with it every address
// on it). It reports whether there was one.
func (m *Manager) deleteMacvlan() (bool, error) {
	v := m.cfg.VirtualMAC
	l, err := m.nl.LinkByName(v.Name)
	if err != nil {
		if isLinkNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("vip: look up link %s: %w", v.Name, err)
	}
	if _, ok := l.(*netlink.Macvlan); !ok {
		return false, fmt.Errorf("%w: %s is a %s link, not our macvlan; not deleting it", ErrLinkConflict, v.Name, l.Type())
	}
	if err := m.nl.LinkDel(l); err != nil && !isLinkNotFound(err) {
		return false, fmt.Errorf("vip: delete macvlan %s: %w", v.Name, err)
	}
	return true, nil
}

// arpSysctls are the parent's settings virtual-MAC mode needs, with the
// least value that works. Without arp_ignore >= 1 the parent answers ARP
// requests for the VIP (which lives on the macvlan) with its own MAC;
// without arp_announce = 2 it sends ARP requests with the VIP as sender
// address from its own MAC. Either teaches clients the physical MAC ("ARP
// flux") and defeats the virtual MAC. keepalived sets the same for its VMAC.
var arpSysctls = []struct {
	key string
	min int
}{{"arp_ignore", 1}, {"arp_announce", 2}}

// tuneParentARP raises the parent's arp_ignore and arp_announce to the
// values above (never lowers them). Failures are logged, not returned: the
// VIP still works without them, only the virtual MAC may leak.
func (m *Manager) tuneParentARP(parent string) {
	err := m.cfg.Do(func() error {
		var errs []error
		for _, s := range arpSysctls {
			path := filepath.Join("/proc/sys/net/ipv4/conf", parent, s.key)
			b, err := os.ReadFile(path)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			cur, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q: %w", path, b, err))
				continue
			}
			if cur >= s.min {
				continue
			}
			if err := os.WriteFile(path, []byte(strconv.Itoa(s.min)), 0o644); err != nil {
				errs = append(errs, err)
				continue
			}
			m.log.Info("raised parent ARP setting for the virtual MAC",
				zap.String("sysctl", "net.ipv4.conf."+parent+"."+s.key), zap.Int("from", cur), zap.Int("to", s.min))
		}
		return errors.Join(errs...)
	})
	if err != nil {
		m.log.Warn("cannot tune the parent's ARP settings; clients may learn its physical MAC for the VIP", zap.Error(err))
	}
}

// linkLocal returns a usable IPv6 link-local address of link, or the zero
// Addr.
func (m *Manager) linkLocal(link netlink.Link) netip.Addr {
	addrs, err := m.nl.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return netip.Addr{}
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
			return ip
		}
	}
	return netip.Addr{}
}

// ifiOf is the net.Interface package packet needs (it uses the index).
func ifiOf(l netlink.Link) *net.Interface {
	a := l.Attrs()
	return &net.Interface{Index: a.Index, Name: a.Name, HardwareAddr: a.HardwareAddr, MTU: a.MTU, Flags: a.Flags}
}

// warnIfSource logs when an IPv4 VIP would be the source address of the
// node's own traffic to the VIP's subnet. Linux honours the deprecated flag
// (preferred lifetime 0) for IPv6 only: for IPv4 the prefix route of a VIP
// that is the primary address of its subnet on the link carries the VIP as
// preferred source. It is not when the link also holds the node's own
// address in that subnet (the VIP is then secondary) or the VIP is a /32.
func (m *Manager) warnIfSource() {
	for _, p := range m.cfg.VIPs {
		a := p.Addr()
		if !a.Is4() || p.Bits() >= 31 {
			continue
		}
		probe := p.Masked().Addr().Next()
		if probe == a {
			probe = probe.Next()
		}
		routes, err := m.nl.RouteGet(net.IP(probe.AsSlice()))
		if err != nil || len(routes) == 0 {
			continue
		}
		if src, ok := netip.AddrFromSlice(routes[0].Src); ok && src.Unmap() == a {
			m.log.Warn("the kernel uses this IPv4 VIP as source address for its subnet (IPv4 ignores the preferred lifetime); "+
				"give the interface its own address in the subnet, or use a /32 VIP",
				zap.Stringer("vip", p), zap.Stringer("probe", probe))
		}
	}
}
