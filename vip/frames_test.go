package vip

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

var (
	macA   = net.HardwareAddr{0x02, 0x74, 0x64, 0x00, 0x01, 0x11}
	macB   = net.HardwareAddr{0x02, 0x74, 0x64, 0x00, 0x01, 0x12}
	macX   = net.HardwareAddr{0x02, 0x74, 0x64, 0x00, 0x01, 0x20}
	vip4   = netip.MustParseAddr("192.0.2.10")
	vip6   = netip.MustParseAddr("2001:db8:0:1::10")
	llB    = netip.MustParseAddr("fe80::74:64ff:fe00:112")
	group4 = []netip.Prefix{netip.PrefixFrom(vip4, 24), netip.PrefixFrom(vip6, 64)}
)

// must fails tb on a frame builder's error: must(t)(garp(...)).
func must(tb testing.TB) func([]byte, error) []byte {
	return func(b []byte, err error) []byte {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
}

// decodeARP splits an ARP frame with the library, independently of parseClaim.
func decodeARP(t *testing.T, b []byte) (ethernet.Frame, arp.Packet) {
	t.Helper()
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if f.EtherType != ethernet.EtherTypeARP {
		t.Fatalf("EtherType %v, want ARP", f.EtherType)
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		t.Fatal(err)
	}
	return f, p
}

func TestGratuitousARPForms(t *testing.T) {
	for _, tc := range []struct {
		op      arp.Operation
		wantTHA net.HardwareAddr
	}{
		// RFC 5227 announcement: target hardware address zero.
		{arpRequest, macZero},
		// Reply form: target hardware address = sender's, or Linux does
		// not treat it as gratuitous and its locktime applies.
		{arpReply, macB},
	} {
		f, p := decodeARP(t, must(t)(garp(tc.op, macB, vip4)))
		if !bytes.Equal(f.Destination, ethernet.Broadcast) || !bytes.Equal(f.Source, macB) {
			t.Errorf("%v: Ethernet %s -> %s, want %s -> broadcast", tc.op, f.Source, f.Destination, macB)
		}
		if p.Operation != tc.op || p.HardwareType != 1 || p.ProtocolType != 0x0800 || p.HardwareAddrLength != 6 || p.IPLength != 4 {
			t.Errorf("%v: header %+v", tc.op, p)
		}
		if !bytes.Equal(p.SenderHardwareAddr, macB) || p.SenderIP != vip4 || p.TargetIP != vip4 {
			t.Errorf("%v: sender %s/%s target %s, want %s/%s target %s", tc.op, p.SenderHardwareAddr, p.SenderIP, p.TargetIP, macB, vip4, vip4)
		}
		if !bytes.Equal(p.TargetHardwareAddr, tc.wantTHA) {
			t.Errorf("%v: target MAC %s, want %s", tc.op, p.TargetHardwareAddr, tc.wantTHA)
		}
	}
}

func TestARPProbeClaimsNothing(t *testing.T) {
	b := must(t)(arpProbe(macB, vip4))
	_, p := decodeARP(t, b)
	if p.Operation != arpRequest || p.SenderIP != netip.IPv4Unspecified() || p.TargetIP != vip4 ||
		!bytes.Equal(p.SenderHardwareAddr, macB) || !bytes.Equal(p.TargetHardwareAddr, macZero) {
		t.Fatalf("probe = %+v", p)
	}
	if c, err := parseClaim(b); err == nil {
		t.Fatalf("probe parsed as claim %+v", c)
	}
}

// decodeIPv6 checks the IPv6 header of an NDP frame and returns the ICMPv6 message.
func decodeIPv6(t *testing.T, b []byte, wantSrc, wantDst netip.Addr) (ethernet.Frame, []byte) {
	t.Helper()
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if f.EtherType != ethernet.EtherTypeIPv6 {
		t.Fatalf("EtherType %v", f.EtherType)
	}
	ip := f.Payload
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	src, _ := netip.AddrFromSlice(ip[8:24])
	dst, _ := netip.AddrFromSlice(ip[24:40])
	if ip[0]>>4 != 6 || ip[6] != 58 || ip[7] != 255 || src != wantSrc || dst != wantDst || len(ip) < 40+plen {
		t.Fatalf("IPv6 header: version %d next %d hop %d %s -> %s (want %s -> %s)", ip[0]>>4, ip[6], ip[7], src, dst, wantSrc, wantDst)
	}
	msg := ip[40 : 40+plen]
	if icmpv6Checksum(src, dst, msg) != 0 {
		t.Fatal("ICMPv6 checksum does not verify")
	}
	return f, msg
}

func TestUnsolicitedNA(t *testing.T) {
	b := must(t)(unsolicitedNA(macB, vip6))
	f, msg := decodeIPv6(t, b, vip6, allNodes)
	if !bytes.Equal(f.Destination, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}) || !bytes.Equal(f.Source, macB) {
		t.Errorf("Ethernet %s -> %s", f.Source, f.Destination)
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		t.Fatalf("message %T", m)
	}
	if !na.Override || na.Solicited || na.Router || na.TargetAddress != vip6 {
		t.Errorf("NA flags/target: %+v", na)
	}
	if len(na.Options) != 1 {
		t.Fatalf("options %v", na.Options)
	}
	if lla, ok := na.Options[0].(*ndp.LinkLayerAddress); !ok || lla.Direction != ndp.Target || !bytes.Equal(lla.Addr, macB) {
		t.Errorf("option %+v, want target link-layer address %s", na.Options[0], macB)
	}
	c, err := parseClaim(b)
	if err != nil || c.evidence != EvidenceNA || c.addr != vip6 || !bytes.Equal(c.mac, macB) {
		t.Errorf("parseClaim = %+v, %v", c, err)
	}
}

func TestSolicitationProbe(t *testing.T) {
	b := must(t)(solicitationProbe(macB, llB, vip6))
	group := netip.MustParseAddr("ff02::1:ff00:10")
	f, msg := decodeIPv6(t, b, llB, group)
	if !bytes.Equal(f.Destination, net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 0x10}) {
		t.Errorf("Ethernet destination %s", f.Destination)
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok || ns.TargetAddress != vip6 || len(ns.Options) != 1 {
		t.Fatalf("message %+v", m)
	}
	if lla, ok := ns.Options[0].(*ndp.LinkLayerAddress); !ok || lla.Direction != ndp.Source || !bytes.Equal(lla.Addr, macB) {
		t.Errorf("option %+v, want source link-layer address %s", ns.Options[0], macB)
	}
	if c, err := parseClaim(b); err == nil {
		t.Errorf("solicitation parsed as claim %+v", c)
	}
}

func TestAnnounceAndProbeRounds(t *testing.T) {
	vips := []netip.Prefix{group4[0], group4[1], netip.MustParsePrefix("198.51.100.77/32")}
	round, err := announceFrames(macB, vips)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		ev   Evidence
		addr netip.Addr
	}{{EvidenceARPRequest, vip4}, {EvidenceARPReply, vip4}, {EvidenceNA, vip6},
		{EvidenceARPRequest, vips[2].Addr()}, {EvidenceARPReply, vips[2].Addr()}}
	if len(round) != len(want) {
		t.Fatalf("round has %d frames, want %d", len(round), len(want))
	}
	for i, w := range want {
		c, err := parseClaim(round[i])
		if err != nil || c.evidence != w.ev || c.addr != w.addr || !bytes.Equal(c.mac, macB) {
			t.Errorf("frame %d: %+v, %v; want %v for %s", i, c, err, w.ev, w.addr)
		}
	}
	probes, err := probeFrames(macB, llB, vips)
	if err != nil || len(probes) != 3 {
		t.Fatalf("probes: %d, %v", len(probes), err)
	}
	probes, err = probeFrames(macB, netip.Addr{}, vips)
	if err != nil || len(probes) != 2 {
		t.Fatalf("probes without a link-local: %d, %v; want the 2 ARP probes", len(probes), err)
	}
}

func TestChecksumAgreesWithNDP(t *testing.T) {
	na := &ndp.NeighborAdvertisement{Solicited: true, TargetAddress: vip6}
	b, err := ndp.MarshalMessageChecksum(na, llB, vip6)
	if err != nil {
		t.Fatal(err)
	}
	if icmpv6Checksum(llB, vip6, b) != 0 {
		t.Fatal("our checksum rejects ndp's")
	}
	b[len(b)-1] ^= 1
	if icmpv6Checksum(llB, vip6, b) == 0 {
		t.Fatal("a flipped bit still verifies")
	}
	odd := []byte{1, 2, 3}
	sum := icmpv6Checksum(llB, vip6, odd)
	if sum == 0 {
		t.Fatal("odd-length message: unexpected zero checksum")
	}
}

// naVariant builds an NA frame with the header fields a test wants to
// break, then fixes the ICMPv6 checksum (unless the checksum is the point)
// so that only the mutated field can be the reason for a rejection.
func naVariant(t *testing.T, mutate func(ip []byte), fixSum bool) []byte {
	t.Helper()
	b := must(t)(unsolicitedNA(macX, vip6))
	ip := b[ethHeaderLen:]
	mutate(ip)
	if fixSum {
		plen := int(binary.BigEndian.Uint16(ip[4:6]))
		msg := ip[40 : 40+plen]
		msg[2], msg[3] = 0, 0
		src, _ := netip.AddrFromSlice(ip[8:24])
		dst, _ := netip.AddrFromSlice(ip[24:40])
		binary.BigEndian.PutUint16(msg[2:4], icmpv6Checksum(src, dst, msg))
	}
	return b
}

func TestParseClaimRejects(t *testing.T) {
	good := must(t)(garp(arpRequest, macX, vip4))
	cases := map[string][]byte{
		"empty":     nil,
		"short eth": good[:10],
		"short arp": good[:ethHeaderLen+7],
		"IPv4 frame": must(t)(ethFrame(macB, macX, ethernet.EtherTypeIPv4,
			make([]byte, 40))),
		"ARP for another protocol": func() []byte {
			b := append([]byte(nil), good...)
			b[ethHeaderLen+3] = 0x06 // ptype 0x0806
			return b
		}(),
		"ARP with odd hlen": func() []byte {
			b := append([]byte(nil), good...)
			b[ethHeaderLen+4] = 8
			return b
		}(),
		"ARP op 3": func() []byte {
			b := append([]byte(nil), good...)
			b[ethHeaderLen+7] = 3
			return b
		}(),
		"NA hop limit 64":     naVariant(t, func(ip []byte) { ip[7] = 64 }, true),
		"NA bad checksum":     naVariant(t, func(ip []byte) { ip[len(ip)-1] ^= 0xff }, false),
		"NA code 1":           naVariant(t, func(ip []byte) { ip[41] = 1 }, true),
		"NA multicast target": naVariant(t, func(ip []byte) { copy(ip[48:64], allNodes.AsSlice()) }, true),
		"NA payload long":     naVariant(t, func(ip []byte) { binary.BigEndian.PutUint16(ip[4:6], 2000) }, false),
		"IPv6 version 4":      naVariant(t, func(ip []byte) { ip[0] = 0x40 }, true),
		"not ICMPv6 (UDP)":    naVariant(t, func(ip []byte) { ip[6] = 17 }, true),
		"ICMPv6 echo":         naVariant(t, func(ip []byte) { ip[40] = 128 }, true),
	}
	for name, b := range cases {
		if c, err := parseClaim(b); err == nil {
			t.Errorf("%s: parsed as claim %+v", name, c)
		}
	}
	// Ethernet padding after an NA is not part of it.
	padded := append(must(t)(unsolicitedNA(macX, vip6)), make([]byte, 20)...)
	if c, err := parseClaim(padded); err != nil || c.addr != vip6 {
		t.Errorf("padded NA: %+v, %v", c, err)
	}
	// Without the option the Ethernet source names the owner.
	na := &ndp.NeighborAdvertisement{Override: true, TargetAddress: vip6}
	noOpt, err := ndpFrame(macX, vip6, allNodes, na)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := parseClaim(noOpt); err != nil || !bytes.Equal(c.mac, macX) {
		t.Errorf("NA without option: %+v, %v", c, err)
	}
}

// FuzzParseClaim: parseClaim never panics, and whatever it accepts is a
// well-formed claim: re-encoding the claim and parsing that gives it back.
func FuzzParseClaim(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseClaim(b)
		if err != nil {
			return
		}
		if !c.addr.IsValid() || len(c.mac) == 0 {
			t.Fatalf("accepted claim without address or MAC: %+v", c)
		}
		var again []byte
		switch c.evidence {
		case EvidenceARPRequest, EvidenceARPReply:
			if !c.addr.Is4() || len(c.mac) != 6 {
				t.Fatalf("ARP claim %+v", c)
			}
			op := arpRequest
			if c.evidence == EvidenceARPReply {
				op = arpReply
			}
			again, err = garp(op, c.mac, c.addr)
		case EvidenceNA:
			if !c.addr.Is6() {
				t.Fatalf("NA claim for %s", c.addr)
			}
			if len(c.mac) != 6 {
				return // a non-Ethernet link-layer option: nothing to re-encode
			}
			again, err = unsolicitedNA(c.mac, c.addr)
		default:
			t.Fatalf("claim with evidence %v", c.evidence)
		}
		if err != nil {
			t.Fatalf("re-encode %+v: %v", c, err)
		}
		c2, err := parseClaim(again)
		if err != nil || c2.evidence != c.evidence || c2.addr != c.addr || !bytes.Equal(c2.mac, c.mac) {
			t.Fatalf("round trip: %+v -> %+v, %v", c, c2, err)
		}
	})
}

func fuzzSeeds(tb testing.TB) [][]byte {
	return [][]byte{
		must(tb)(garp(arpRequest, macX, vip4)),
		must(tb)(garp(arpReply, macX, vip4)),
		must(tb)(arpProbe(macX, vip4)),
		must(tb)(unsolicitedNA(macX, vip6)),
		must(tb)(solicitationProbe(macX, llB, vip6)),
	}
}

// TestResolves: the takeover test's filter for "the client tried to learn
// a neighbour's MAC" takes ARP and neighbour solicitations only.
func TestResolves(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"ARP probe", must(t)(arpProbe(macB, group4[0].Addr())), true},
		{"neighbour solicitation", must(t)(solicitationProbe(macB, llB, vip6)), true},
		{"unsolicited NA", must(t)(unsolicitedNA(macB, vip6)), false},
		{"runt", []byte{1, 2, 3}, false},
	} {
		if got := resolves(tc.b); got != tc.want {
			t.Errorf("%s: resolves = %v, want %v", tc.name, got, tc.want)
		}
	}
}
