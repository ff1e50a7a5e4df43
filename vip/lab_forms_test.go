package vip

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/test/lab"
)

// rawSender is a packet socket on h's lan0 for hand-made frames.
type rawSender struct {
	t  testing.TB
	pc net.PacketConn
}

func (e *labEnv) rawSender(h *lab.Host) *rawSender {
	e.t.Helper()
	var pc net.PacketConn
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(lab.LANIf)
		if err != nil {
			return err
		}
		pc, err = packet.Listen(ifi, packet.Raw, 0, nil)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { pc.Close() })
	return &rawSender{t: e.t, pc: pc}
}

func (s *rawSender) send(b []byte) {
	s.t.Helper()
	if _, err := s.pc.WriteTo(b, &packet.Addr{HardwareAddr: net.HardwareAddr(b[0:6])}); err != nil {
		s.t.Fatal(err)
	}
}

// TestEachAnnouncementFormBeatsLocktime checks, against the real kernel,
// the reason for each field of the announcements: right after a client's
// entry for the VIP was updated (inside its 1 s locktime), our GARP request
// alone, our GARP reply alone (target MAC = sender MAC) and our NA alone
// (Override set) each re-point it at once; a reply with a broadcast target
// MAC, as some daemons send, is ignored until the locktime has passed, and
// an NA without Override never moves an entry. If the kernel ever changes
// this, the design notes in doc.go are wrong and this test says so.
func TestEachAnnouncementFormBeatsLocktime(t *testing.T) {
	e := newLabEnv(t)
	ctx := context.Background()
	am := e.manager(e.a, func(c *Config) { c.Announce.Repeats = -1; c.ProbeInterval = -1 })
	if err := am.Claim(ctx); err != nil {
		t.Fatal(err)
	}
	e.serve(e.a)
	e.mustGreet(e.client, lab.VIP4, "a") // creates the entries
	e.mustGreet(e.client, lab.VIP6, "a")
	watch := e.watchNeigh(e.client.NS)
	from := e.rawSender(e.b)
	bMAC := e.b.MAC

	// reset moves the client's entry for vip to b and back to a (with a's
	// own announcement), so that it has just changed, and returns when it
	// changed back: the start of a locktime window.
	clientNL := e.netlinkIn(e.client)
	current := func(vip netip.Addr) net.HardwareAddr {
		t.Helper()
		ns, err := clientNL.NeighList(0, netlinkFamily(vip))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == vip {
				return n.HardwareAddr
			}
		}
		return nil
	}
	reset := func(vip netip.Addr) (time.Time, int) {
		t.Helper()
		n := len(watch.since(time.Time{}))
		if string(current(vip)) != string(bMAC) {
			if vip.Is4() {
				from.send(must(t)(garp(arpRequest, bMAC, vip)))
			} else {
				from.send(must(t)(unsolicitedNA(bMAC, vip)))
			}
			_, i, ok := watch.waitFor(n, 10*time.Second, neighFor(vip, bMAC))
			if !ok {
				t.Fatalf("entry for %s did not move to b", vip)
			}
			n = i + 1
		}
		if err := am.Announce(ctx); err != nil {
			t.Fatal(err)
		}
		ev, i, ok := watch.waitFor(n, 10*time.Second, neighFor(vip, e.a.MAC))
		if !ok {
			t.Fatalf("entry for %s did not return to a", vip)
		}
		return ev.at, i + 1
	}
	moves := func(after int, vip netip.Addr, d time.Duration) (time.Time, bool) {
		ev, _, ok := watch.waitFor(after, d, neighFor(vip, bMAC))
		return ev.at, ok
	}
	replyBroadcastTHA := func() []byte {
		p, err := arp.NewPacket(arp.OperationReply, bMAC, lab.VIP4, ethernet.Broadcast, lab.VIP4)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := p.MarshalBinary()
		return must(t)(ethFrame(ethernet.Broadcast, bMAC, ethernet.EtherTypeARP, b))
	}()
	naNoOverride := must(t)(ndpFrame(bMAC, lab.VIP6, allNodes, &ndp.NeighborAdvertisement{
		TargetAddress: lab.VIP6,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: bMAC}},
	}))

	for _, tc := range []struct {
		name  string
		vip   netip.Addr
		frame []byte
		moves bool
	}{
		{"our GARP request", lab.VIP4, must(t)(garp(arpRequest, bMAC, lab.VIP4)), true},
		{"our GARP reply (tha = sha)", lab.VIP4, must(t)(garp(arpReply, bMAC, lab.VIP4)), true},
		{"ARP reply with broadcast tha", lab.VIP4, replyBroadcastTHA, false},
		{"our unsolicited NA (Override)", lab.VIP6, must(t)(unsolicitedNA(bMAC, lab.VIP6)), true},
		{"NA without Override", lab.VIP6, naNoOverride, false},
	} {
		updated, idx := reset(tc.vip)
		from.send(tc.frame)
		sent := e.clk.Now()
		at, moved := moves(idx, tc.vip, 300*time.Millisecond)
		switch {
		case moved != tc.moves:
			t.Errorf("%s, %v into the locktime: entry moved = %v, want %v", tc.name, sent.Sub(updated), moved, tc.moves)
		case moved:
			t.Logf("%s, sent %v into the locktime: entry moved after %v", tc.name, sent.Sub(updated), at.Sub(sent))
		default:
			t.Logf("%s, sent %v into the locktime: ignored, as expected", tc.name, sent.Sub(updated))
		}
		if tc.name == "ARP reply with broadcast tha" {
			// The same frame after the locktime does move it: it is the
			// locktime, not the frame, that held it back. This is what
			// the 1 s repeats are for.
			waitUntil(e, updated.Add(1100*time.Millisecond))
			from.send(tc.frame)
			if _, ok := moves(idx, tc.vip, 2*time.Second); !ok {
				t.Errorf("%s after the locktime: entry did not move", tc.name)
			}
		}
	}
}

func netlinkFamily(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
