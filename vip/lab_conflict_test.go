package vip

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/test/lab"
)

// conflictBound is the acceptance bound of issue 5 for a third host.
const conflictBound = time.Second

// awaitConflict waits for a conflict matching want (VIP, MAC, evidence),
// skipping others, and returns it.
func awaitConflict(t *testing.T, m *Manager, want Conflict) Conflict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		select {
		case c, ok := <-m.Conflicts():
			if !ok {
				t.Fatal("Conflicts closed")
			}
			if c.VIP == want.VIP && bytes.Equal(c.MAC, want.MAC) && c.Evidence == want.Evidence && c.DuplicateMAC == want.DuplicateMAC {
				return c
			}
			t.Logf("other conflict: %+v", c)
		case <-ctx.Done():
			t.Fatalf("no conflict %+v reported (status %+v)", want, m.Status())
			return Conflict{}
		}
	}
}

// TestConflictWithAThirdHost: while b owns the group, svc starts holding
// the VIPs (its kernel then answers for them, as a misconfigured host or a
// second daemon would). b reports each within 1 s (the acceptance), through
// its probes; a gratuitous ARP or NA from yet another MAC is reported as
// soon as it arrives.
func TestConflictWithAThirdHost(t *testing.T) {
	for _, vmac := range []bool{false, true} {
		t.Run(modeName(vmac), func(t *testing.T) {
			e := newLabEnv(t)
			ctx := context.Background()
			bm := e.manager(e.b, func(c *Config) {
				if vmac {
					withVMAC(c)
				}
			})
			if err := bm.Claim(ctx); err != nil {
				t.Fatal(err)
			}
			svc := e.svc
			for _, step := range []struct {
				addr netip.Addr
				cmd  []string
				ev   Evidence
			}{
				{lab.VIP4, []string{"ip", "addr", "add", lab.VIP4.String() + "/32", "dev", lab.LANIf}, EvidenceARPReply},
				{lab.VIP6, []string{"ip", "addr", "add", lab.VIP6.String() + "/128", "dev", lab.LANIf, "nodad"}, EvidenceNA},
			} {
				e.sh(svc, step.cmd...)
				start := e.clk.Now() // svc answers for the VIP from now on
				c := awaitConflict(t, bm, Conflict{VIP: step.addr, MAC: svc.MAC, Evidence: step.ev})
				d := c.At.Sub(start)
				t.Logf("ACCEPTANCE conflict %s: svc (%s) answers for %s; reported %v after it began to (%v)",
					modeName(vmac), svc.MAC, step.addr, d, c.Evidence)
				if d > conflictBound {
					t.Errorf("conflict for %s reported after %v, want <= %v", step.addr, d, conflictBound)
				}
			}

			// Unsolicited claims from another MAC are seen at once.
			forged := net.HardwareAddr{0x02, 0x74, 0x64, 0x00, 0x09, 0x99}
			raw := e.rawSender(svc)
			for _, step := range []struct {
				frame []byte
				want  Conflict
			}{
				{must(t)(garp(arpRequest, forged, lab.VIP4)), Conflict{VIP: lab.VIP4, MAC: forged, Evidence: EvidenceARPRequest}},
				{must(t)(unsolicitedNA(forged, lab.VIP6)), Conflict{VIP: lab.VIP6, MAC: forged, Evidence: EvidenceNA}},
			} {
				start := e.clk.Now()
				raw.send(step.frame)
				c := awaitConflict(t, bm, step.want)
				t.Logf("conflict %s: announcement from %s for %s reported %v after it was sent", modeName(vmac), forged, c.VIP, c.At.Sub(start))
			}
			st := bm.Status()
			if st.Conflicts < 4 || st.LastConflict == nil {
				t.Errorf("status after 4 conflicts: %+v", st)
			}

			// Detection stops with the ownership: a claim made while b is
			// released is never reported. Claim again and send a claim from
			// a third MAC: the events up to it must not include the first.
			e.sh(svc, "ip", "addr", "flush", "dev", lab.LANIf, "to", lab.VIP4.String()+"/32")
			e.sh(svc, "ip", "addr", "flush", "dev", lab.LANIf, "to", lab.VIP6.String()+"/128")
			if err := bm.Release(ctx); err != nil {
				t.Fatal(err)
			}
			raw.send(must(t)(garp(arpRequest, forged, lab.VIP4)))
			if err := bm.Claim(ctx); err != nil {
				t.Fatal(err)
			}
			other := net.HardwareAddr{0x02, 0x74, 0x64, 0x00, 0x09, 0x98}
			raw.send(must(t)(garp(arpReply, other, lab.VIP4)))
			deadline, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
		wait:
			for {
				select {
				case c := <-bm.Conflicts():
					if bytes.Equal(c.MAC, forged) {
						t.Errorf("reported a claim made while the group was released: %+v", c)
					}
					if bytes.Equal(c.MAC, other) {
						break wait
					}
				case <-deadline.Done():
					t.Fatal("no conflict after claiming again")
				}
			}
			if err := bm.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
