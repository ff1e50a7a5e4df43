package vip

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

var vmac = net.HardwareAddr{0x02, 0x74, 0x64, 0x00, 0x00, 0x10}

type monitorRig struct {
	clk    *clock.Manual
	node   *hubConn // the monitor's socket
	other  *hubConn // a third host
	loop   *hubConn // frames coming back from the wire
	mon    *monitor
	events chan Conflict
	ctx    context.Context
	done   chan struct{}
}

func newMonitorRig(t *testing.T, own net.HardwareAddr, virtual bool) *monitorRig {
	t.Helper()
	clk := clock.NewManual(epoch)
	h := newHub(clk)
	r := &monitorRig{clk: clk, node: h.conn("node"), other: h.conn("x"), loop: h.conn("loop"),
		events: make(chan Conflict, 16), done: make(chan struct{})}
	r.mon = &monitor{conn: r.node, clk: clk, log: zap.NewNop(), own: own, virtual: virtual,
		vips: map[netip.Addr]bool{vip4: true, vip6: true}, emit: func(c Conflict) { r.events <- c }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	r.ctx = ctx
	go func() { defer close(r.done); r.mon.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		r.node.Close()
		<-r.done
	})
	return r
}

func (r *monitorRig) send(t *testing.T, from *hubConn, b []byte) {
	t.Helper()
	if _, err := from.WriteTo(b, nil); err != nil {
		t.Fatal(err)
	}
}

func (r *monitorRig) expect(t *testing.T, want Conflict) {
	t.Helper()
	select {
	case got := <-r.events:
		if got.VIP != want.VIP || !bytes.Equal(got.MAC, want.MAC) || got.Evidence != want.Evidence ||
			got.DuplicateMAC != want.DuplicateMAC || !got.At.Equal(r.clk.Now()) {
			t.Fatalf("conflict %+v, want %+v at %v", got, want, r.clk.Now())
		}
	case <-r.ctx.Done():
		t.Fatalf("no conflict reported, want %+v", want)
	}
}

// arpReplyTo is what a Linux host holding vip answers to our probe: a
// reply unicast to the prober, target protocol address 0.0.0.0.
func arpReplyTo(t *testing.T, from, to net.HardwareAddr, vip netip.Addr) []byte {
	p, err := arp.NewPacket(arp.OperationReply, from, vip, to, netip.IPv4Unspecified())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.MarshalBinary()
	return must(t)(ethFrame(to, from, ethernet.EtherTypeARP, b))
}

// Every frame that must be ignored is followed by a sentinel that must be
// reported, from a MAC used for nothing else: the monitor handles frames in
// order, so had the first been reported, the expectation would see it
// instead of the sentinel.
func TestMonitorReportsOtherOwners(t *testing.T) {
	r := newMonitorRig(t, macB, false)
	sentinel := func() {
		t.Helper()
		r.send(t, r.other, must(t)(garp(arpRequest, macA, vip4)))
		r.expect(t, Conflict{VIP: vip4, MAC: macA, Evidence: EvidenceARPRequest})
		if n := len(r.events); n != 0 {
			t.Fatalf("%d unexpected conflicts reported", n)
		}
	}
	// Another host's gratuitous ARP for our VIP.
	r.send(t, r.other, must(t)(garp(arpRequest, macX, vip4)))
	r.expect(t, Conflict{VIP: vip4, MAC: macX, Evidence: EvidenceARPRequest})
	// Its reply to our probe.
	r.send(t, r.other, arpReplyTo(t, macX, macB, vip4))
	r.expect(t, Conflict{VIP: vip4, MAC: macX, Evidence: EvidenceARPReply})
	// Its NA for our IPv6 VIP.
	r.send(t, r.other, must(t)(unsolicitedNA(macX, vip6)))
	r.expect(t, Conflict{VIP: vip6, MAC: macX, Evidence: EvidenceNA})

	for name, b := range map[string][]byte{
		"probe for our VIP (claims nothing)":        must(t)(arpProbe(macX, vip4)),
		"gratuitous ARP for another address":        must(t)(garp(arpRequest, macX, netip.MustParseAddr("192.0.2.99"))),
		"NA for another address":                    must(t)(unsolicitedNA(macX, netip.MustParseAddr("2001:db8:0:1::99"))),
		"solicitation for our VIP (asks, no claim)": must(t)(solicitationProbe(macX, llB, vip6)),
		"garbage": {1, 2, 3},
	} {
		t.Log(name)
		r.send(t, r.other, b)
		sentinel()
		r.clk.Advance(time.Second)
	}
	// Our own physical MAC coming back from the wire is a reflection of
	// our own frame, not another owner.
	r.send(t, r.loop, must(t)(garp(arpReply, macB, vip4)))
	sentinel()
}

func TestMonitorFlagsADuplicateVirtualMAC(t *testing.T) {
	r := newMonitorRig(t, vmac, true)
	// From the wire with our virtual MAC: a second holder of the macvlan.
	r.send(t, r.loop, must(t)(garp(arpRequest, vmac, vip4)))
	r.expect(t, Conflict{VIP: vip4, MAC: vmac, Evidence: EvidenceARPRequest, DuplicateMAC: true})
	r.send(t, r.loop, must(t)(unsolicitedNA(vmac, vip6)))
	r.expect(t, Conflict{VIP: vip6, MAC: vmac, Evidence: EvidenceNA, DuplicateMAC: true})
	// A different MAC is an ordinary conflict.
	r.send(t, r.other, arpReplyTo(t, macX, vmac, vip4))
	r.expect(t, Conflict{VIP: vip4, MAC: macX, Evidence: EvidenceARPReply})
}

func TestMonitorBacksOffOnReadErrors(t *testing.T) {
	clk := clock.NewManual(epoch)
	h := newHub(clk)
	node, other := h.conn("node"), h.conn("x")
	node.readErrs = []error{errors.New("recvfrom: network is down"), errors.New("recvfrom: network is down")}
	events := make(chan Conflict, 1)
	m := &monitor{conn: node, clk: clk, log: zap.NewNop(), own: macB, vips: map[netip.Addr]bool{vip4: true},
		emit: func(c Conflict) { events <- c }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); m.run(ctx) }()
	other.WriteTo(must(t)(garp(arpRequest, macX, vip4)), nil)
	// First error: back off readBackoffMin; second: twice that.
	for _, d := range []time.Duration{readBackoffMin, 2 * readBackoffMin} {
		if err := clk.WaitForTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(d - time.Millisecond)
		if clk.Pending() != 1 {
			t.Fatalf("back-off of %v ended early", d)
		}
		clk.Advance(time.Millisecond)
	}
	select {
	case c := <-events:
		if c.VIP != vip4 || !bytes.Equal(c.MAC, macX) {
			t.Fatalf("conflict %+v", c)
		}
	case <-ctx.Done():
		t.Fatal("monitor did not resume after read errors")
	}
	cancel()
	node.Close()
	<-done
}

func TestMonitorStopsWhenItsSocketCloses(t *testing.T) {
	h := newHub(nil)
	node := h.conn("node")
	m := &monitor{conn: node, clk: clock.NewManual(epoch), log: zap.NewNop(), own: macB, vips: map[netip.Addr]bool{},
		emit: func(Conflict) {}}
	done := make(chan struct{})
	go func() { defer close(done); m.run(context.Background()) }()
	node.Close() // even without a cancelled context
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("monitor kept running after its socket closed")
	}
}

func TestEmitHoldsOffRepeatsAndNeverBlocks(t *testing.T) {
	m := &Manager{log: zap.NewNop(), conflicts: make(chan Conflict, 2)}
	m.st.recent = map[conflictKey]time.Time{}
	c := Conflict{VIP: vip4, MAC: macX, At: epoch, Evidence: EvidenceARPReply}
	m.emit(c)
	c.At = epoch.Add(conflictHoldoff - time.Millisecond)
	m.emit(c) // same VIP and MAC within the hold-off: counted once
	if len(m.conflicts) != 1 || m.st.conflicts != 1 {
		t.Fatalf("after a repeat: %d queued, %d counted; want 1, 1", len(m.conflicts), m.st.conflicts)
	}
	c.At = epoch.Add(conflictHoldoff)
	m.emit(c)
	d := c
	d.MAC = macA
	m.emit(d) // another MAC: its own event, but the channel is full
	if len(m.conflicts) != 2 || m.st.conflicts != 3 || m.st.dropped != 1 {
		t.Fatalf("queued %d, counted %d, dropped %d; want 2, 3, 1", len(m.conflicts), m.st.conflicts, m.st.dropped)
	}
	if s := m.Status(); s.LastConflict == nil || !bytes.Equal(s.LastConflict.MAC, macA) || s.ConflictsDropped != 1 {
		t.Fatalf("status %+v", s)
	}
}
