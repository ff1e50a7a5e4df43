package vip

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
)

// vipAddrs returns the group's addresses found on host h (any link), as
// netlink reports them.
func (e *labEnv) vipAddrs(h *lab.Host) map[netip.Addr]netlink.Addr {
	e.t.Helper()
	nh := e.netlinkIn(h)
	links, err := nh.LinkList()
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[netip.Addr]netlink.Addr{}
	for _, l := range links {
		addrs, err := nh.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, a := range addrs {
			ip, _ := netip.AddrFromSlice(a.IP)
			for _, p := range labVIPs() {
				if ip.Unmap() == p.Addr() {
					a.LinkIndex = l.Attrs().Index
					out[p.Addr()] = a
				}
			}
		}
	}
	return out
}

func TestClaimAddsDeprecatedNoDADAddressesAndReleaseRemovesThem(t *testing.T) {
	e := newLabEnv(t)
	ctx := context.Background()
	m := e.manager(e.a, nil)
	idle := runtime.NumGoroutine()
	if err := m.Claim(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Claim(ctx); err != nil { // idempotent
		t.Fatalf("second Claim: %v", err)
	}
	got := e.vipAddrs(e.a)
	for _, p := range labVIPs() {
		a, ok := got[p.Addr()]
		if !ok {
			t.Fatalf("%s not on a after Claim:\n%s", p, e.addrs(e.a))
		}
		if bits, _ := a.Mask.Size(); bits != p.Bits() {
			t.Errorf("%s added with /%d", p, bits)
		}
		// Preferred lifetime 0 shows as the deprecated flag. (For an
		// IPv4 address valid forever the kernel reports both lifetimes as
		// forever, whatever it was given, but keeps the flag.)
		if a.Flags&unix.IFA_F_DEPRECATED == 0 {
			t.Errorf("%s not deprecated (flags %#x): preferred lifetime was not 0", p, a.Flags)
		}
		if p.Addr().Is6() && a.PreferedLft != 0 {
			t.Errorf("%s preferred lifetime %d, want 0", p, a.PreferedLft)
		}
		if a.Flags&unix.IFA_F_PERMANENT == 0 {
			t.Errorf("%s valid lifetime %d, want forever", p, a.ValidLft)
		}
		if p.Addr().Is6() && a.Flags&unix.IFA_F_NODAD == 0 {
			t.Errorf("%s without NODAD (flags %#x)", p, a.Flags)
		}
		if p.Addr().Is6() && a.Flags&unix.IFA_F_TENTATIVE != 0 {
			t.Errorf("%s is tentative", p)
		}
	}
	// Never a source address: the kernel picks the node's own address
	// for traffic it originates, even to the VIP's subnet.
	for _, dst := range []string{e.client.LAN4.String(), e.client.LAN6.String()} {
		out := e.sh(e.a, "ip", "route", "get", dst)
		if strings.Contains(out, "src "+lab.VIP4.String()+" ") || strings.Contains(out, "src "+lab.VIP6.String()+" ") {
			t.Errorf("route to %s uses the VIP as source: %s", dst, out)
		}
	}
	if !m.Owned() {
		t.Error("Owned() = false after Claim")
	}
	st := m.Status()
	if st.Link != lab.LANIf || st.MAC.String() != e.a.MAC.String() || st.Announcements < 2 || st.ClaimTook <= 0 {
		t.Errorf("status after two claims: %+v", st)
	}
	if err := m.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if left := e.vipAddrs(e.a); len(left) != 0 {
		t.Fatalf("after Release:\n%s", e.addrs(e.a))
	}
	if out := e.addrs(e.a); strings.Contains(out, lab.VIP4.String()) || strings.Contains(out, lab.VIP6.String()) {
		t.Fatalf("ip addr still shows a VIP:\n%s", out)
	}
	if err := m.Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if m.Owned() {
		t.Error("Owned() = true after Release")
	}
	if err := m.Announce(ctx); !errors.Is(err, ErrNotOwned) {
		t.Errorf("Announce after Release = %v, want ErrNotOwned", err)
	}
	// The release took the address from the kernel: the client cannot
	// reach it any more.
	if _, err := e.greet(e.client, lab.VIP4); err == nil {
		t.Error("VIP still reachable after Release")
	}
	// Nothing runs while the group is not owned (Host.Do's goroutines may
	// take a moment to exit after returning their result).
	waitGoroutines(t, idle)
	if err := m.Claim(ctx); err != nil {
		t.Fatal(err)
	}
	m.Close()
	waitGoroutines(t, idle)
}

// waitGoroutines waits until no more than n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for runtime.NumGoroutine() > n {
		if ctx.Err() != nil {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want <= %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		<-clock.Real().NewTimer(10 * time.Millisecond).C()
	}
}

// TestClaimWarnsWhenTheKernelWouldSourceFromAnIPv4VIP: an IPv4 VIP that is
// the only address of its subnet on the link becomes the preferred source
// of that subnet's route, deprecated or not. Claim says so; the usual
// set-up (the node's own address in the same subnet) gets no warning.
func TestClaimWarnsWhenTheKernelWouldSourceFromAnIPv4VIP(t *testing.T) {
	e := newLabEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		vip  netip.Prefix
		warn bool
	}{
		{netip.PrefixFrom(lab.VIP4, 24), false},            // secondary to a's 192.0.2.11/24
		{netip.MustParsePrefix("198.51.100.77/28"), true},  // alone in its subnet on lan0
		{netip.MustParsePrefix("198.51.100.99/32"), false}, // a /32 brings no route
	} {
		core, logs := observer.New(zap.WarnLevel)
		m := e.manager(e.a, func(c *Config) { c.VIPs = []netip.Prefix{tc.vip}; c.Logger = zap.New(core) })
		if err := m.Claim(ctx); err != nil {
			t.Fatal(err)
		}
		warned := logs.FilterMessageSnippet("source address").Len() > 0
		if warned != tc.warn {
			t.Errorf("%s: warned = %v, want %v (route: %s)", tc.vip, warned, tc.warn,
				e.sh(e.a, "ip", "route", "get", tc.vip.Masked().Addr().Next().String()))
		}
		if err := m.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
