package vip

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/test/lab"
)

// leftovers lists what `ip -n a addr` shows of the group: VIPs and the macvlan.
func (e *labEnv) leftovers(h *lab.Host) []string {
	e.t.Helper()
	out := e.addrs(h)
	var found []string
	for _, s := range []string{lab.VIP4.String() + "/", lab.VIP6.String() + "/", vmacName + "@"} {
		if strings.Contains(out, s) {
			found = append(found, strings.TrimRight(s, "/@"))
		}
	}
	return found
}

// TestNothingLeftBehind: after a release, and after a crash followed by a
// restart that recovers or releases, `ip -n a addr` shows no VIP and no
// macvlan.
func TestNothingLeftBehind(t *testing.T) {
	for _, vmac := range []bool{false, true} {
		for _, how := range []string{"release", "crash-recover", "crash-release"} {
			t.Run(modeName(vmac)+"/"+how, func(t *testing.T) {
				e := newLabEnv(t)
				ctx := context.Background()
				edit := func(c *Config) {
					if vmac {
						withVMAC(c)
					}
				}
				if how == "release" {
					m := e.manager(e.a, edit)
					if err := m.Claim(ctx); err != nil {
						t.Fatal(err)
					}
					if len(e.leftovers(e.a)) == 0 {
						t.Fatal("Claim put nothing in place")
					}
					if err := m.Release(ctx); err != nil {
						t.Fatal(err)
					}
				} else {
					e.startClaimer(e.a, vmac).Kill()
					want := 2
					if vmac {
						want = 3
					}
					if got := e.leftovers(e.a); len(got) != want {
						t.Fatalf("the crashed claimer left %v, want the VIPs (and the macvlan)", got)
					}
					m := e.manager(e.a, edit) // the restarted daemon
					if how == "crash-recover" {
						found, err := m.Recover(ctx)
						if err != nil {
							t.Fatal(err)
						}
						t.Logf("Recover found %v", found)
						wantFound := "[192.0.2.10/24 on lan0 2001:db8:0:1::10/64 on lan0]"
						if vmac {
							wantFound = "[macvlan vmac0]" // the VIPs went with it
						}
						if got := fmtLeftovers(found); got != wantFound {
							t.Errorf("Recover found %s, want %s", got, wantFound)
						}
						if again, err := m.Recover(ctx); err != nil || len(again) != 0 {
							t.Errorf("second Recover: %v, %v; want nothing", again, err)
						}
					} else if err := m.Release(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if got := e.leftovers(e.a); len(got) != 0 {
					t.Errorf("left behind: %v\n%s", got, e.addrs(e.a))
				}
				if out := e.sh(e.a, "ip", "link", "show"); strings.Contains(out, vmacName) {
					t.Errorf("macvlan left behind:\n%s", out)
				}
			})
		}
	}
}

func fmtLeftovers(ls []Leftover) string {
	var s []string
	for _, l := range ls {
		s = append(s, l.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}

// TestClaimIsAllOrNothing: when one VIP of the group cannot be added (IPv6
// is disabled on the interface), Claim fails and leaves no VIP behind.
func TestClaimIsAllOrNothing(t *testing.T) {
	e := newLabEnv(t)
	e.sh(e.a, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/lan0/disable_ipv6")
	m := e.manager(e.a, nil)
	err := m.Claim(context.Background())
	if err == nil || !strings.Contains(err.Error(), "VIPs[1]") {
		t.Fatalf("Claim = %v, want an error naming VIPs[1]", err)
	}
	t.Logf("Claim: %v", err)
	if got := e.leftovers(e.a); len(got) != 0 {
		t.Errorf("a failed Claim left %v", got)
	}
	if m.Owned() {
		t.Error("Owned after a failed Claim")
	}
}

func TestClaimErrorsNameTheProblem(t *testing.T) {
	e := newLabEnv(t)
	ctx := context.Background()
	m := e.manager(e.a, func(c *Config) { c.Interface = "nope0" })
	if err := m.Claim(ctx); !errors.Is(err, ErrNoInterface) || !strings.Contains(err.Error(), "nope0") {
		t.Errorf("Claim on a missing interface = %v", err)
	}
	// A virtual-MAC name that belongs to an operator's link: refused,
	// untouched, nothing added.
	m = e.manager(e.a, func(c *Config) { c.VirtualMAC = &VirtualMAC{Name: lab.HA1If, MAC: lab.VMAC} })
	if err := m.Claim(ctx); !errors.Is(err, ErrLinkConflict) || !strings.Contains(err.Error(), lab.HA1If) {
		t.Errorf("Claim with VirtualMAC.Name = ha1: %v", err)
	}
	if out := e.sh(e.a, "ip", "link", "show", lab.HA1If); !strings.Contains(out, "UP") {
		t.Errorf("ha1 was changed:\n%s", out)
	}
	if got := e.leftovers(e.a); len(got) != 0 {
		t.Errorf("left %v", got)
	}
	if _, err := m.Recover(ctx); !errors.Is(err, ErrLinkConflict) {
		t.Errorf("Recover with VirtualMAC.Name = ha1: %v, want ErrLinkConflict", err)
	}
	m2 := e.manager(e.a, nil)
	if err := m2.Claim(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Recover(ctx); !errors.Is(err, ErrOwned) {
		t.Errorf("Recover while owned = %v, want ErrOwned", err)
	}
	m2.Close()
	if err := m2.Claim(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Claim after Close = %v, want ErrClosed", err)
	}
	if _, ok := <-m2.Conflicts(); ok {
		t.Error("Conflicts not closed by Close")
	}
	// Close leaves the addresses, as a crash would.
	if got := e.leftovers(e.a); len(got) != 2 {
		t.Errorf("after Close without Release: %v, want both VIPs still there", got)
	}
}

// TestLeaseKeepsTheAddressAndExpiresAfterACrash: with AddrLifetime the
// owner renews the address every third of it; once the owner is gone
// without releasing, the kernel removes the VIP by itself.
func TestLeaseKeepsTheAddressAndExpiresAfterACrash(t *testing.T) {
	e := newLabEnv(t)
	const lease = 3 * time.Second
	m := e.manager(e.a, func(c *Config) { c.AddrLifetime = lease })
	if err := m.Claim(context.Background()); err != nil {
		t.Fatal(err)
	}
	claimed := e.clk.Now()
	for _, a := range e.vipAddrs(e.a) {
		if a.ValidLft <= 0 || a.ValidLft > int(lease.Seconds()) {
			t.Errorf("valid lifetime %d, want <= %v", a.ValidLft, lease)
		}
	}
	waitUntil(e, claimed.Add(2*lease))
	if got := e.leftovers(e.a); len(got) != 2 {
		t.Fatalf("after two lease periods, renewed: %v, want both VIPs", got)
	}
	if n := m.Status().LeaseRenewals; n < 4 {
		t.Errorf("%d renewals in %v, want about 6", n, 2*lease)
	}
	m.Close() // the owner dies; nobody releases
	closed := e.clk.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*lease)
	defer cancel()
	for len(e.leftovers(e.a)) != 0 {
		if ctx.Err() != nil {
			t.Fatalf("VIPs still there %v after the owner died:\n%s", e.clk.Since(closed), e.addrs(e.a))
		}
		waitUntil(e, e.clk.Now().Add(100*time.Millisecond))
	}
	t.Logf("the kernel removed the VIPs %v after the owner died (lease %v)", e.clk.Since(closed), lease)
}

// TestRemovedVIPIsRestored: while the group is owned, a VIP removed by
// hand, or flushed because its link went down and up (Linux drops IPv6
// addresses then), is put back by the owner's once-a-second check, and
// announced again.
func TestRemovedVIPIsRestored(t *testing.T) {
	e := newLabEnv(t)
	m := e.manager(e.b, nil)
	if err := m.Claim(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.serve(e.b)
	back := func(what string) {
		t.Helper()
		start := e.clk.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for len(e.leftovers(e.b)) != 2 {
			if ctx.Err() != nil {
				t.Fatalf("%s: VIPs not restored:\n%s", what, e.addrs(e.b))
			}
			waitUntil(e, e.clk.Now().Add(50*time.Millisecond))
		}
		t.Logf("%s: both VIPs back within %v", what, e.clk.Since(start))
	}
	e.sh(e.b, "ip", "addr", "del", lab.VIP6.String()+"/64", "dev", lab.LANIf)
	back("ip addr del")
	e.sh(e.b, "ip", "link", "set", lab.LANIf, "down")
	e.sh(e.b, "ip", "link", "set", lab.LANIf, "up")
	back("link down and up")
	if n := m.Status().AddrRestores; n < 2 {
		t.Errorf("Status.AddrRestores = %d, want >= 2", n)
	}
	e.mustGreet(e.client, lab.VIP6, "b")
}
