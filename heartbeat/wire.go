package heartbeat

import (
	"crypto/hmac"
	"encoding/binary"
	"fmt"
	"hash"
	"net/netip"
)

// These constants are part of the wire format (see the package doc).
const (
	// Magic opens every datagram: "THB1".
	Magic uint32 = 0x54484231
	// Version is the protocol version this package sends. Receivers accept
	// any version >= 1 whose body is at least BodyLen bytes: later
	// versions only append fields before the MAC, so N and N+1 interoperate.
	Version uint8 = 2
	// BodyLen is the length of the version-1 body (everything before the MAC).
	BodyLen = 100
	// BodyLenV2 is the length of the version-2 body: BodyLen and the
	// peer boot id.
	BodyLenV2 = BodyLen + 8
	// MACLen is the length of the HMAC-SHA256 trailer.
	MACLen = 32
	// FrameLen is the length of a version-1 datagram, the shortest accepted.
	FrameLen = BodyLen + MACLen
	// FrameLenV2 is the length of a version-2 datagram, what this package
	// sends; later versions are at least as long.
	FrameLenV2 = BodyLenV2 + MACLen
	// MaxFrameLen bounds what a receiver reads; longer datagrams are malformed.
	MaxFrameLen = 512
	// MinKeyLen is the shortest pair key accepted.
	MinKeyLen = 16
)

// Field offsets of the version-1 body.
const (
	offMagic     = 0
	offVersion   = 4
	offFlags     = 5
	offNode      = 6
	offRole      = 7
	offPair      = 8
	offBoot      = 12
	offSeq       = 20
	offEpoch     = 28
	offCommitted = 36
	offApplied   = 44
	offHealth    = 52
	offHandover  = 56
	offPathID    = 57
	offReserved  = 58
	offGen       = 60
	offTx        = 68
	offEcho      = 76
	offHold      = 84
	offRound     = 92
	offPeerBoot  = 100 // version 2
)

// frame is one decoded datagram.
type frame struct {
	Version uint8
	NodeID  uint8
	PairID  uint32
	BootID  uint64
	Seq     uint64
	// Round numbers the sender's rounds (every path of one round carries
	// the same value); a payload older than the newest seen is not news.
	Round   uint64
	PathID  uint8
	Payload Payload
	// TxNanos is the sender's monotonic send time; EchoNanos is the last
	// TxNanos the sender received from us on this path and HoldNanos how
	// long it held it before this send (RTT = now - EchoNanos - HoldNanos).
	TxNanos, EchoNanos, HoldNanos uint64
	// PeerBoot (version 2) is the receiver's boot id as the sender last
	// accepted it (0: none yet, or a version-1 sender). A receiver that
	// finds it above its own boot id restarted with a smaller one and
	// raises its own past it (see Heartbeat).
	PeerBoot uint64
}

// appendBody appends the version-2 body of f to dst.
func appendBody(dst []byte, f *frame) []byte {
	var b [BodyLenV2]byte
	be := binary.BigEndian
	be.PutUint32(b[offMagic:], Magic)
	b[offVersion] = Version
	b[offFlags] = 0
	b[offNode] = f.NodeID
	b[offRole] = f.Payload.Role
	be.PutUint32(b[offPair:], f.PairID)
	be.PutUint64(b[offBoot:], f.BootID)
	be.PutUint64(b[offSeq:], f.Seq)
	be.PutUint64(b[offEpoch:], f.Payload.Epoch)
	be.PutUint64(b[offCommitted:], f.Payload.CommittedLSN)
	be.PutUint64(b[offApplied:], f.Payload.AppliedLSN)
	be.PutUint32(b[offHealth:], f.Payload.Health)
	b[offHandover] = f.Payload.Handover
	b[offPathID] = f.PathID
	be.PutUint16(b[offReserved:], 0)
	be.PutUint64(b[offGen:], f.Payload.Generation)
	be.PutUint64(b[offTx:], f.TxNanos)
	be.PutUint64(b[offEcho:], f.EchoNanos)
	be.PutUint64(b[offHold:], f.HoldNanos)
	be.PutUint64(b[offRound:], f.Round)
	be.PutUint64(b[offPeerBoot:], f.PeerBoot)
	return append(dst, b[:]...)
}

// destBytes is the destination the MAC binds a datagram to: the IPv6 (or
// IPv4-mapped) address and the port, 18 bytes. It is not sent: a datagram
// replayed to another path's address fails authentication.
func destBytes(dst *[18]byte, dest netip.AddrPort) {
	// As16 of an IPv4 address is its IPv4-mapped form, so "198.51.100.2"
	// and "::ffff:198.51.100.2" bind the same way.
	a := dest.Addr().Unmap().As16()
	copy(dst[:16], a[:])
	binary.BigEndian.PutUint16(dst[16:], dest.Port())
}

// sum computes the MAC of body for dest with m (an HMAC-SHA256 keyed with
// the pair key), appending it to out. The destination is written after the
// body through out's spare capacity when it has room, so the hot path does
// not allocate.
func sum(m hash.Hash, body []byte, dest netip.AddrPort, out []byte) []byte {
	m.Reset()
	m.Write(body)
	if cap(out)-len(out) >= 18+MACLen {
		d := (*[18]byte)(out[len(out) : len(out)+18])
		destBytes(d, dest)
		m.Write(d[:])
	} else {
		var d [18]byte
		destBytes(&d, dest)
		m.Write(d[:])
	}
	return m.Sum(out)
}

// encode appends the full datagram (body and MAC) for dest.
func encode(dst []byte, m hash.Hash, f *frame, dest netip.AddrPort) []byte {
	start := len(dst)
	dst = appendBody(dst, f)
	return sum(m, dst[start:], dest, dst)
}

// decode parses the structure of a datagram without checking its MAC. It
// accepts versions >= 1 with a body of at least BodyLen bytes (fields a
// later version appends are ignored).
func decode(b []byte) (frame, error) {
	var f frame
	if len(b) < FrameLen {
		return f, fmt.Errorf("%w: %d bytes, want at least %d", ErrMalformed, len(b), FrameLen)
	}
	if len(b) > MaxFrameLen {
		return f, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(b), MaxFrameLen)
	}
	be := binary.BigEndian
	if m := be.Uint32(b[offMagic:]); m != Magic {
		return f, fmt.Errorf("%w: magic %#08x", ErrMalformed, m)
	}
	f.Version = b[offVersion]
	if f.Version < 1 {
		return f, fmt.Errorf("%w: version %d", ErrMalformed, f.Version)
	}
	if f.Version == 1 && len(b) != FrameLen {
		return f, fmt.Errorf("%w: version 1 datagram of %d bytes, want %d", ErrMalformed, len(b), FrameLen)
	}
	if f.Version == 2 && len(b) != FrameLenV2 {
		return f, fmt.Errorf("%w: version 2 datagram of %d bytes, want %d", ErrMalformed, len(b), FrameLenV2)
	}
	if f.Version > 2 && len(b) < FrameLenV2 {
		return f, fmt.Errorf("%w: version %d datagram of %d bytes, want at least %d", ErrMalformed, f.Version, len(b), FrameLenV2)
	}
	f.NodeID = b[offNode]
	f.PairID = be.Uint32(b[offPair:])
	f.BootID = be.Uint64(b[offBoot:])
	f.Seq = be.Uint64(b[offSeq:])
	f.PathID = b[offPathID]
	f.Payload = Payload{
		Epoch:        be.Uint64(b[offEpoch:]),
		Role:         b[offRole],
		CommittedLSN: be.Uint64(b[offCommitted:]),
		AppliedLSN:   be.Uint64(b[offApplied:]),
		Health:       be.Uint32(b[offHealth:]),
		Handover:     b[offHandover],
		Generation:   be.Uint64(b[offGen:]),
	}
	f.TxNanos = be.Uint64(b[offTx:])
	f.EchoNanos = be.Uint64(b[offEcho:])
	f.HoldNanos = be.Uint64(b[offHold:])
	f.Round = be.Uint64(b[offRound:])
	if f.Version >= 2 {
		f.PeerBoot = be.Uint64(b[offPeerBoot:])
	}
	if f.BootID == 0 || f.Seq == 0 || f.Round == 0 {
		return f, fmt.Errorf("%w: zero boot id, sequence or round", ErrMalformed)
	}
	return f, nil
}

// verify checks the MAC trailer of a structurally valid datagram b for
// dest; scratch is reused to avoid allocation.
func verify(m hash.Hash, b []byte, dest netip.AddrPort, scratch []byte) bool {
	body, mac := b[:len(b)-MACLen], b[len(b)-MACLen:]
	return hmac.Equal(sum(m, body, dest, scratch[:0]), mac)
}
