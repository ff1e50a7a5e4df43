package vip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// Wire constants. These are part of the formats the package sends and
// parses (RFC 826, RFC 5227, RFC 4861, RFC 8200); see the package doc.
const (
	ethHeaderLen  = 14
	ipv6HeaderLen = 40
	protoICMPv6   = 58
	ndpHopLimit   = 255 // RFC 4861: receivers drop ND with any other hop limit
	icmpTypeNA    = 136
	arpHWEthernet = 1
	arpProtoIPv4  = 0x0800
	arpHWLen      = 6
	arpProtoLen   = 4
)

var (
	macZero      = net.HardwareAddr{0, 0, 0, 0, 0, 0}
	allNodes     = netip.MustParseAddr("ff02::1")
	ipv4Unspec   = netip.IPv4Unspecified()
	errNotAClaim = errors.New("frame claims no address")
	errBadIPv6   = errors.New("malformed IPv6 packet")
	errBadICMPv6 = errors.New("malformed ICMPv6 neighbour advertisement")
	errBadARP    = errors.New("malformed ARP packet")
)

// ARP operations, short names.
const (
	arpRequest = arp.OperationRequest
	arpReply   = arp.OperationReply
)

// announceFrames returns the frames of one announcement round from mac:
// per IPv4 VIP a gratuitous ARP request then reply, per IPv6 VIP an
// unsolicited NA, in the order of vips.
func announceFrames(mac net.HardwareAddr, vips []netip.Prefix) ([][]byte, error) {
	var round [][]byte
	for _, p := range vips {
		a := p.Addr()
		if a.Is4() {
			req, err1 := garp(arpRequest, mac, a)
			rep, err2 := garp(arpReply, mac, a)
			if err := errors.Join(err1, err2); err != nil {
				return nil, err
			}
			round = append(round, req, rep)
			continue
		}
		na, err := unsolicitedNA(mac, a)
		if err != nil {
			return nil, err
		}
		round = append(round, na)
	}
	return round, nil
}

// probeFrames returns the frames of one probe round from mac: per IPv4 VIP
// an ARP probe, per IPv6 VIP a neighbour solicitation from ll (none if ll
// is invalid: a solicitation needs a source address of ours).
func probeFrames(mac net.HardwareAddr, ll netip.Addr, vips []netip.Prefix) ([][]byte, error) {
	var probes [][]byte
	for _, p := range vips {
		a := p.Addr()
		var f []byte
		var err error
		switch {
		case a.Is4():
			f, err = arpProbe(mac, a)
		case ll.IsValid():
			f, err = solicitationProbe(mac, ll, a)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		probes = append(probes, f)
	}
	return probes, nil
}

func hasIPv6(vips []netip.Prefix) bool {
	for _, p := range vips {
		if p.Addr().Is6() {
			return true
		}
	}
	return false
}

// ethFrame marshals one Ethernet II frame (padded to the 60-byte minimum by
// package ethernet).
func ethFrame(dst, src net.HardwareAddr, typ ethernet.EtherType, payload []byte) ([]byte, error) {
	f := ethernet.Frame{Destination: dst, Source: src, EtherType: typ, Payload: payload}
	return f.MarshalBinary()
}

// garp returns a gratuitous ARP of the given operation announcing that vip
// is at mac, broadcast. Sender and target protocol addresses are both the
// VIP. The request form carries a zero target hardware address (RFC 5227
// 2.3, "ARP Announcement"); the reply form carries mac there too, because
// Linux counts a reply as gratuitous (and lets it override the neighbour
// locktime) only when its target hardware address equals its sender's
// (net/ipv4/arp.c, arp_is_garp).
func garp(op arp.Operation, mac net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	tha := macZero
	if op == arpReply {
		tha = mac
	}
	p, err := arp.NewPacket(op, mac, vip, tha, vip)
	if err != nil {
		return nil, fmt.Errorf("vip: gratuitous ARP for %s: %w", vip, err)
	}
	b, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return ethFrame(ethernet.Broadcast, mac, ethernet.EtherTypeARP, b)
}

// arpProbe returns an RFC 5227 probe for vip from mac: sender protocol
// address 0.0.0.0, so no receiver updates a cache from it, while any host
// holding vip answers it with a reply unicast to mac.
func arpProbe(mac net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	p, err := arp.NewPacket(arpRequest, mac, ipv4Unspec, macZero, vip)
	if err != nil {
		return nil, fmt.Errorf("vip: ARP probe for %s: %w", vip, err)
	}
	b, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return ethFrame(ethernet.Broadcast, mac, ethernet.EtherTypeARP, b)
}

// unsolicitedNA returns an unsolicited neighbour advertisement for vip at
// mac to all nodes (ff02::1), with the Override flag so receivers replace
// the link-layer address of an existing entry (RFC 4861 7.2.6), Solicited
// clear (mandatory to a multicast destination), and the target link-layer
// address option. Its source is the VIP itself, an address of the sending
// interface in both modes, as Linux does for its own unsolicited NAs.
func unsolicitedNA(mac net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: vip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
	return ndpFrame(mac, vip, allNodes, na)
}

// solicitationProbe returns a neighbour solicitation for vip from src (a
// link-local address of ours) at mac, to vip's solicited-node group. A host
// holding vip answers with a solicited NA unicast to us. Unlike a DAD
// probe (source ::), which Linux answers with an NA to all nodes, with the
// Override flag, that would re-point every client at the other owner.
func solicitationProbe(mac net.HardwareAddr, src, vip netip.Addr) ([]byte, error) {
	group, err := ndp.SolicitedNodeMulticast(vip)
	if err != nil {
		return nil, fmt.Errorf("vip: solicited-node group of %s: %w", vip, err)
	}
	ns := &ndp.NeighborSolicitation{
		TargetAddress: vip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}},
	}
	return ndpFrame(mac, src, group, ns)
}

// ndpFrame wraps an NDP message in IPv6 (hop limit 255) and Ethernet, with
// the ICMPv6 checksum over the pseudo-header.
func ndpFrame(mac net.HardwareAddr, src, dst netip.Addr, m ndp.Message) ([]byte, error) {
	icmp, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		return nil, fmt.Errorf("vip: %v for %s: %w", m.Type(), src, err)
	}
	pkt := make([]byte, ipv6HeaderLen+len(icmp))
	pkt[0] = 6 << 4 // version 6, traffic class 0, flow label 0
	binary.BigEndian.PutUint16(pkt[4:6], uint16(len(icmp)))
	pkt[6] = protoICMPv6
	pkt[7] = ndpHopLimit
	s, d := src.As16(), dst.As16()
	copy(pkt[8:24], s[:])
	copy(pkt[24:40], d[:])
	copy(pkt[40:], icmp)
	return ethFrame(ipv6MulticastMAC(dst), mac, ethernet.EtherTypeIPv6, pkt)
}

// ipv6MulticastMAC maps an IPv6 multicast address to its Ethernet group
// (RFC 2464 7: 33:33 and the low 32 bits).
func ipv6MulticastMAC(a netip.Addr) net.HardwareAddr {
	b := a.As16()
	return net.HardwareAddr{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// Evidence says what kind of frame showed another owner.
type Evidence uint8

// Kinds of evidence.
const (
	// EvidenceARPRequest: an ARP request whose sender address is the VIP
	// (another host's gratuitous ARP, or its kernel resolving a neighbour
	// from the VIP).
	EvidenceARPRequest Evidence = iota + 1
	// EvidenceARPReply: an ARP reply whose sender address is the VIP
	// (typically the other host answering our probe).
	EvidenceARPReply
	// EvidenceNA: an IPv6 neighbour advertisement for the VIP.
	EvidenceNA
)

func (e Evidence) String() string {
	switch e {
	case EvidenceARPRequest:
		return "arp-request"
	case EvidenceARPReply:
		return "arp-reply"
	case EvidenceNA:
		return "neighbor-advertisement"
	}
	return fmt.Sprintf("evidence(%d)", uint8(e))
}

// claim is what one frame asserts: addr is at mac.
type claim struct {
	evidence Evidence
	addr     netip.Addr
	mac      net.HardwareAddr
}

// parseClaim decodes an Ethernet frame and reports the address-to-MAC
// binding it asserts, if any: an ARP request or reply with a specified
// sender protocol address, or a valid neighbour advertisement. Anything
// else (ARP probes, other traffic, malformed frames) returns an error; the
// caller only counts it. It never panics, whatever b holds (FuzzParseClaim).
func parseClaim(b []byte) (claim, error) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		return claim{}, fmt.Errorf("ethernet: %w", err)
	}
	switch f.EtherType {
	case ethernet.EtherTypeARP:
		return parseARPClaim(f.Payload)
	case ethernet.EtherTypeIPv6:
		return parseNAClaim(f.Source, f.Payload)
	}
	return claim{}, errNotAClaim
}

func parseARPClaim(b []byte) (claim, error) {
	// Check the fixed header before handing the packet to package arp:
	// it trusts the length fields, and only Ethernet/IPv4 ARP matters here.
	if len(b) < 8 {
		return claim{}, errBadARP
	}
	if binary.BigEndian.Uint16(b[0:2]) != arpHWEthernet || binary.BigEndian.Uint16(b[2:4]) != arpProtoIPv4 ||
		b[4] != arpHWLen || b[5] != arpProtoLen {
		return claim{}, errBadARP
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(b); err != nil {
		return claim{}, fmt.Errorf("%w: %v", errBadARP, err)
	}
	var ev Evidence
	switch p.Operation {
	case arpRequest:
		ev = EvidenceARPRequest
	case arpReply:
		ev = EvidenceARPReply
	default:
		return claim{}, errNotAClaim
	}
	if !p.SenderIP.IsValid() || p.SenderIP.IsUnspecified() {
		return claim{}, errNotAClaim // a probe claims nothing (RFC 5227)
	}
	return claim{evidence: ev, addr: p.SenderIP, mac: append(net.HardwareAddr(nil), p.SenderHardwareAddr...)}, nil
}

func parseNAClaim(src net.HardwareAddr, b []byte) (claim, error) {
	if len(b) < ipv6HeaderLen || b[0]>>4 != 6 {
		return claim{}, errBadIPv6
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if ipv6HeaderLen+plen > len(b) {
		return claim{}, errBadIPv6
	}
	// Receivers apply the same checks (RFC 4861 7.1.2): a neighbour
	// advertisement that any of them fails updates no cache, so it claims
	// nothing.
	if b[6] != protoICMPv6 || b[7] != ndpHopLimit {
		return claim{}, errNotAClaim
	}
	srcIP, _ := netip.AddrFromSlice(b[8:24])
	dstIP, _ := netip.AddrFromSlice(b[24:40])
	msg := b[ipv6HeaderLen : ipv6HeaderLen+plen] // drop Ethernet padding
	if len(msg) < 4 || msg[0] != icmpTypeNA {
		return claim{}, errNotAClaim
	}
	if msg[1] != 0 || icmpv6Checksum(srcIP, dstIP, msg) != 0 {
		return claim{}, errBadICMPv6
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		return claim{}, fmt.Errorf("%w: %v", errBadICMPv6, err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok || !na.TargetAddress.Is6() || na.TargetAddress.IsMulticast() {
		return claim{}, errBadICMPv6
	}
	mac := src
	for _, o := range na.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
			mac = lla.Addr
		}
	}
	return claim{evidence: EvidenceNA, addr: na.TargetAddress, mac: append(net.HardwareAddr(nil), mac...)}, nil
}

// icmpv6Checksum returns the Internet checksum of msg under the IPv6
// pseudo-header (RFC 8200 8.1). Over a message that carries its checksum it
// is 0 when the checksum is right.
func icmpv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(b[0])<<8 | uint32(b[1])
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(len(msg)))
	hdr[7] = protoICMPv6
	add(hdr[:])
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func sameMAC(a, b net.HardwareAddr) bool { return bytes.Equal(a, b) }
