package wip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// These constants are part of the wire format (see the package doc).
const (
	frameHeaderLen = 10       // length u32, crc u32, version u8, type u8
	maxFrameBody   = 64 << 20 // bytes after the header; larger frames are rejected
	// ProtocolVersion is the newest frame layout this build speaks. A build
	// speaking N accepts peers speaking N-1..N+1 and agrees on min(maxes).
	//
	// Version 2 adds the replication mode to Welcome and Auth (see the
	// package doc); version 1 peers still pair with a version 2 build, with
	// no mode check. Version 3 appends the primary's durable LSN to Data,
	// which lets a secondary drop the log records the primary holds too; a
	// version 2 peer pairs as before, and such a secondary keeps its whole
	// retained window.
	ProtocolVersion = 3
	// minProtocolVersion is the oldest layout this build still speaks.
	minProtocolVersion = 1
	// maxAcceptedVersion: headers with a version up to N+1 are decoded (the
	// header layout never changes); frames of unknown type are then rejected.
	maxAcceptedVersion = ProtocolVersion + 1
)

// Frame types. Values are part of the format and never reused.
const (
	frameHello     byte = 1  // secondary -> primary: version range, nonce, lineage
	frameWelcome   byte = 2  // primary -> secondary: chosen version, nonce, lineage, HMAC
	frameAuth      byte = 3  // secondary -> primary: HMAC over both hellos
	framePlan      byte = 4  // primary -> secondary: stream | snapshot | diverged
	frameData      byte = 5  // primary -> secondary: consecutive log entries
	frameSnapBegin byte = 6  // primary -> secondary: snapshot lineage and size
	frameSnapChunk byte = 7  // primary -> secondary: key/value pairs of the snapshot
	frameSnapEnd   byte = 8  // primary -> secondary: pair count, snapshot complete
	frameAck       byte = 9  // secondary -> primary: cumulative durable LSN
	frameInSync    byte = 10 // primary -> secondary: you hold every commit acked alone
	frameReject    byte = 11 // either way: reason text, then the connection closes
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame decoding errors; each rejection wraps one of these and names the field.
var (
	ErrFrameTruncated = errors.New("wip: frame truncated")
	ErrFrameTooLarge  = errors.New("wip: frame too large")
	ErrFrameChecksum  = errors.New("wip: frame checksum mismatch")
	ErrFrameVersion   = errors.New("wip: unsupported frame version")
	ErrFrameType      = errors.New("wip: unknown frame type")
	ErrFrameMalformed = errors.New("wip: malformed frame body")
)

// isFrameErr tells a frame the peer got wrong (rejected and counted) from
// the connection failing under it (a reset, a timeout, a cut link: the
// session ends, and no frame was rejected).
func isFrameErr(err error) bool {
	for _, e := range []error{ErrFrameTruncated, ErrFrameTooLarge, ErrFrameChecksum, ErrFrameVersion, ErrFrameType, ErrFrameMalformed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// frame is one decoded frame: the header fields and the raw body.
type frame struct {
	version byte
	typ     byte
	body    []byte
}

// appendFrame appends the encoding of a frame to dst.
func appendFrame(dst []byte, version, typ byte, body []byte) []byte {
	var h [frameHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(len(body)))
	h[8], h[9] = version, typ
	c := crc32.Update(0, castagnoli, h[8:10])
	c = crc32.Update(c, castagnoli, body)
	binary.BigEndian.PutUint32(h[4:8], c)
	dst = append(dst, h[:]...)
	return append(dst, body...)
}

// DecodeFrame decodes one frame from the start of b and returns the number of
// bytes it used. It never panics and never allocates more than the frame's
// declared length, which is bounded by maxFrameBody.
func decodeFrame(b []byte) (frame, int, error) {
	if len(b) < frameHeaderLen {
		return frame{}, 0, fmt.Errorf("%w: header has %d of %d bytes", ErrFrameTruncated, len(b), frameHeaderLen)
	}
	n := binary.BigEndian.Uint32(b[0:4])
	if n > maxFrameBody {
		return frame{}, 0, fmt.Errorf("%w: length %d > %d", ErrFrameTooLarge, n, maxFrameBody)
	}
	if uint64(len(b)) < uint64(frameHeaderLen)+uint64(n) {
		return frame{}, 0, fmt.Errorf("%w: body has %d of %d bytes", ErrFrameTruncated, len(b)-frameHeaderLen, n)
	}
	f, err := checkFrame(b[:frameHeaderLen], b[frameHeaderLen:frameHeaderLen+int(n)])
	return f, frameHeaderLen + int(n), err
}

func checkFrame(h, body []byte) (frame, error) {
	c := crc32.Update(0, castagnoli, h[8:10])
	c = crc32.Update(c, castagnoli, body)
	if want := binary.BigEndian.Uint32(h[4:8]); c != want {
		return frame{}, fmt.Errorf("%w: crc32c %08x, header says %08x", ErrFrameChecksum, c, want)
	}
	f := frame{version: h[8], typ: h[9], body: body}
	if f.version < minProtocolVersion || f.version > maxAcceptedVersion {
		return frame{}, fmt.Errorf("%w: version %d, this build accepts %d..%d", ErrFrameVersion, f.version, minProtocolVersion, maxAcceptedVersion)
	}
	if f.typ < frameHello || f.typ > frameReject {
		return frame{}, fmt.Errorf("%w: type %d", ErrFrameType, f.typ)
	}
	return f, nil
}

// readFrame reads one frame from r. buf is reused when large enough.
func readFrame(r io.Reader, buf []byte) (frame, []byte, error) {
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: header: %v", ErrFrameTruncated, err)
		}
		return frame{}, buf, err
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if n > maxFrameBody {
		return frame{}, buf, fmt.Errorf("%w: length %d > %d", ErrFrameTooLarge, n, maxFrameBody)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			// The peer closed the connection inside a frame.
			return frame{}, buf, fmt.Errorf("%w: body of %d bytes: %v", ErrFrameTruncated, n, err)
		}
		// The connection failed under the frame (reset, timeout, closed
		// here): a transport error like one between frames, not a frame
		// the peer got wrong, so not counted as a rejection.
		return frame{}, buf, fmt.Errorf("wip: reading a frame body of %d bytes: %w", n, err)
	}
	f, err := checkFrame(h[:], buf)
	return f, buf, err
}

// reader walks a frame body; the first short read sets err and every later
// read returns zero values, so decoders check err once at the end.
type reader struct {
	b     []byte
	err   error
	field string
}

func (r *reader) fail(field string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: field %s: %d bytes left", ErrFrameMalformed, field, len(r.b))
	}
	r.b = nil
}

func (r *reader) u8(field string) byte {
	if len(r.b) < 1 {
		r.fail(field)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u32(field string) uint32 {
	if len(r.b) < 4 {
		r.fail(field)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64(field string) uint64 {
	if len(r.b) < 8 {
		r.fail(field)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(field string, n int) []byte {
	if n < 0 || len(r.b) < n {
		r.fail(field)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// lenBytes reads a u32 length and that many bytes.
func (r *reader) lenBytes(field string) []byte {
	n := r.u32(field + ".len")
	if uint64(n) > uint64(len(r.b)) {
		r.fail(field)
		return nil
	}
	return r.bytes(field, int(n))
}

func (r *reader) done(field string) error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %s: %d trailing bytes", ErrFrameMalformed, field, len(r.b))
	}
	return r.err
}

func putU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func putU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func putBytes(b, v []byte) []byte      { return append(putU32(b, uint32(len(v))), v...) }

// lineage is what a node knows of its own history, exchanged at handshake.
type lineage struct {
	epoch        uint64 // epoch of the last applied batch
	lsn          uint64 // last durable LSN
	csum         uint64 // rolling checksum after lsn
	inconsistent bool   // mid-snapshot: the data is not a prefix of any history
	outdated     bool   // knows it missed commits acknowledged without it
	history      []histEntry
}

// histEntry: epoch e began at LSN first (DRBD's generation identifiers).
type histEntry struct {
	epoch, first uint64
}

const maxHistory = 4096

func appendLineage(b []byte, l lineage) []byte {
	b = putU64(b, l.epoch)
	b = putU64(b, l.lsn)
	b = putU64(b, l.csum)
	var fl byte
	if l.inconsistent {
		fl |= 1
	}
	if l.outdated {
		fl |= 2
	}
	b = append(b, fl)
	b = putU32(b, uint32(len(l.history)))
	for _, h := range l.history {
		b = putU64(b, h.epoch)
		b = putU64(b, h.first)
	}
	return b
}

func (r *reader) lineage() lineage {
	var l lineage
	l.epoch = r.u64("lineage.epoch")
	l.lsn = r.u64("lineage.lsn")
	l.csum = r.u64("lineage.csum")
	fl := r.u8("lineage.flags")
	l.inconsistent, l.outdated = fl&1 != 0, fl&2 != 0
	n := r.u32("lineage.history.count")
	if n > maxHistory || uint64(n)*16 > uint64(len(r.b)) {
		r.fail("lineage.history")
		return l
	}
	l.history = make([]histEntry, n)
	for i := range l.history {
		l.history[i] = histEntry{r.u64("history.epoch"), r.u64("history.first")}
	}
	return l
}

// hello is the body of Hello and Welcome (Welcome adds a MAC).
type hello struct {
	nodeID         byte
	minVer, maxVer byte
	nonce          [32]byte
	lin            lineage
	mode           byte   // Welcome from version 2 on: the primary's mode (0: absent)
	mac            []byte // Welcome only
}

func appendHello(b []byte, h hello) []byte {
	b = append(b, h.nodeID, h.minVer, h.maxVer)
	b = append(b, h.nonce[:]...)
	b = appendLineage(b, h.lin)
	if h.mode != 0 {
		b = append(b, h.mode)
	}
	if h.mac != nil {
		b = append(b, h.mac...)
	}
	return b
}

// decodeHello decodes a Hello (welcomeVer 0) or a Welcome framed at
// welcomeVer: from version 2 on a Welcome carries the primary's mode before
// its MAC.
func decodeHello(body []byte, welcomeVer byte) (hello, error) {
	r := &reader{b: body}
	var h hello
	h.nodeID = r.u8("hello.node")
	h.minVer = r.u8("hello.min_version")
	h.maxVer = r.u8("hello.max_version")
	copy(h.nonce[:], r.bytes("hello.nonce", 32))
	h.lin = r.lineage()
	if welcomeVer >= 2 {
		h.mode = r.u8("welcome.mode")
		if h.mode != wireSync && h.mode != wireAsync {
			return h, fmt.Errorf("%w: welcome.mode %d: want 1 (sync) or 2 (async)", ErrFrameMalformed, h.mode)
		}
	}
	if welcomeVer >= 1 {
		h.mac = r.bytes("welcome.mac", 32)
	}
	if err := r.done("hello"); err != nil {
		return h, err
	}
	if h.minVer > h.maxVer {
		return h, fmt.Errorf("%w: hello.min_version %d > max_version %d", ErrFrameMalformed, h.minVer, h.maxVer)
	}
	return h, nil
}

// Replication modes on the wire (Welcome and Auth, version 2 on).
const (
	wireSync  byte = 1
	wireAsync byte = 2
)

func wireMode(m Mode) byte {
	if m == Async {
		return wireAsync
	}
	return wireSync
}

// authParts are the parts Auth's MAC covers at version ver: the Hello and
// whole Welcome bodies, and from version 2 on the mode byte Auth carries.
func authParts(ver byte, hello, welcome []byte, mode byte) [][]byte {
	if ver >= 2 {
		return [][]byte{hello, welcome, {mode}}
	}
	return [][]byte{hello, welcome}
}

// errModeMismatch names both nodes' modes; peer describes the other node.
func errModeMismatch(primary, secondary byte, peer string) error {
	mode := func(b byte) Mode {
		if b == wireAsync {
			return Async
		}
		return Sync
	}
	return fmt.Errorf("%w: the primary runs %s, the secondary runs %s (peer %s); set the same replication mode on both nodes",
		ErrModeMismatch, mode(primary), mode(secondary), peer)
}

// decodeAuth decodes an Auth body framed at ver: mac [32] (version 1), or
// mode u8 | mac [32] (version 2 on).
func decodeAuth(body []byte, ver byte) (mode byte, mac []byte, err error) {
	r := &reader{b: body}
	if ver >= 2 {
		mode = r.u8("auth.mode")
		if r.err == nil && mode != wireSync && mode != wireAsync {
			return 0, nil, fmt.Errorf("%w: auth.mode %d: want 1 (sync) or 2 (async)", ErrFrameMalformed, mode)
		}
	}
	mac = r.bytes("auth.mac", 32)
	return mode, mac, r.done("auth")
}

// Plan kinds.
const (
	planStream   byte = 1
	planSnapshot byte = 2
	planDiverged byte = 3
)

type plan struct {
	kind         byte
	from         uint64 // stream: first LSN sent; diverged: first LSN of the losing suffix
	primaryLSN   uint64 // primary's durable LSN at handshake
	peerOutdated bool   // the primary acknowledged commits without this peer
	detail       string
}

func appendPlan(b []byte, p plan) []byte {
	b = append(b, p.kind)
	b = putU64(b, p.from)
	b = putU64(b, p.primaryLSN)
	if p.peerOutdated {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return putBytes(b, []byte(p.detail))
}

func decodePlan(body []byte) (plan, error) {
	r := &reader{b: body}
	p := plan{kind: r.u8("plan.kind"), from: r.u64("plan.from"), primaryLSN: r.u64("plan.primary_lsn")}
	p.peerOutdated = r.u8("plan.peer_outdated") != 0
	p.detail = string(r.lenBytes("plan.detail"))
	if err := r.done("plan"); err != nil {
		return p, err
	}
	if p.kind < planStream || p.kind > planDiverged {
		return p, fmt.Errorf("%w: plan.kind %d", ErrFrameMalformed, p.kind)
	}
	return p, nil
}

// entry is one committed batch in the log: its LSN, epoch, the rolling
// checksum after it, the commit time and its operations (see encodeOps).
type entry struct {
	lsn, epoch, csum uint64
	unixNano         int64
	ops              []byte
}

// Data body: first LSN u64, count u32, then per entry:
// epoch u64, csum u64, unix_nano u64, ops (u32 length + bytes).
// appendData encodes a Data body at version ver; from version 3 on it ends
// with durable, the primary's durable LSN when the frame was formed.
func appendData(b []byte, es []entry, ver byte, durable uint64) []byte {
	b = putU64(b, es[0].lsn)
	b = putU32(b, uint32(len(es)))
	for _, e := range es {
		b = putU64(b, e.epoch)
		b = putU64(b, e.csum)
		b = putU64(b, uint64(e.unixNano))
		b = putBytes(b, e.ops)
	}
	if ver >= 3 {
		b = putU64(b, durable)
	}
	return b
}

// decodeData decodes a Data body framed at ver: its entries and, from
// version 3 on, the primary's durable LSN (0 before).
func decodeData(body []byte, ver byte) (es []entry, durable uint64, err error) {
	r := &reader{b: body}
	first := r.u64("data.first_lsn")
	n := r.u32("data.count")
	if r.err == nil && (n == 0 || uint64(n)*28 > uint64(len(r.b))) {
		return nil, 0, fmt.Errorf("%w: data.count %d does not fit %d bytes", ErrFrameMalformed, n, len(r.b))
	}
	if first == 0 || first+uint64(n) < first {
		return nil, 0, fmt.Errorf("%w: data.first_lsn %d", ErrFrameMalformed, first)
	}
	es = make([]entry, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		e := entry{lsn: first + uint64(i), epoch: r.u64("data.epoch"), csum: r.u64("data.csum")}
		e.unixNano = int64(r.u64("data.time"))
		e.ops = r.lenBytes("data.ops")
		if r.err == nil {
			if err := checkOps(e.ops); err != nil {
				return nil, 0, fmt.Errorf("entry lsn %d: %w", e.lsn, err)
			}
		}
		es = append(es, e)
	}
	if ver >= 3 {
		durable = r.u64("data.primary_durable_lsn")
	}
	if err := r.done("data"); err != nil {
		return nil, 0, err
	}
	return es, durable, nil
}

// SnapBegin body: lineage of the snapshot, total bytes of user data (estimate).
// SnapChunk body: count u32, then per pair key (u32 len + bytes), value (u32 len + bytes).
// SnapEnd body: total pair count u64.
func decodeSnapChunk(body []byte, fn func(k, v []byte)) (int, error) {
	r := &reader{b: body}
	n := r.u32("snap.count")
	if r.err == nil && uint64(n)*8 > uint64(len(r.b)) {
		return 0, fmt.Errorf("%w: snap.count %d does not fit %d bytes", ErrFrameMalformed, n, len(r.b))
	}
	type kv struct{ k, v []byte }
	pairs := make([]kv, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		pairs = append(pairs, kv{r.lenBytes("snap.key"), r.lenBytes("snap.value")})
	}
	if err := r.done("snap_chunk"); err != nil {
		return 0, err
	}
	for _, p := range pairs {
		fn(p.k, p.v)
	}
	return len(pairs), nil
}

// Operation encoding inside an entry (also the value of log keys):
// a sequence of kind u8 (1 set, 2 delete), key (u32 len + bytes),
// and for set only, value (u32 len + bytes).
const (
	opSet    byte = 1
	opDelete byte = 2
)

func checkOps(ops []byte) error {
	return walkOps(ops, func(byte, []byte, []byte) {})
}

func walkOps(ops []byte, fn func(kind byte, k, v []byte)) error {
	r := &reader{b: ops}
	for len(r.b) > 0 && r.err == nil {
		kind := r.u8("op.kind")
		k := r.lenBytes("op.key")
		var v []byte
		switch kind {
		case opSet:
			v = r.lenBytes("op.value")
		case opDelete:
		default:
			return fmt.Errorf("%w: op.kind %d", ErrFrameMalformed, kind)
		}
		if r.err != nil {
			return r.err
		}
		fn(kind, k, v)
	}
	return r.err
}
