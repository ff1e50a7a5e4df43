package wip

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
)

func seedFrames() [][]byte {
	lin := lineage{epoch: 3, lsn: 42, csum: 0xdeadbeef, outdated: true, history: []histEntry{{1, 1}, {3, 40}}}
	h := appendHello(nil, hello{nodeID: 1, minVer: 1, maxVer: 2, lin: lin})
	var ops Batch
	ops.Set([]byte("k"), []byte("v"))
	ops.Delete([]byte("gone"))
	es := []entry{{lsn: 7, epoch: 3, csum: 9, unixNano: 1, ops: ops.ops}, {lsn: 8, epoch: 3, csum: 10, ops: nil}}
	data := appendData(nil, es, 1, 0)
	chunk := putU32(nil, 1)
	chunk = putBytes(putBytes(chunk, []byte("key")), []byte("value"))
	return [][]byte{
		appendFrame(nil, 1, frameHello, h),
		appendFrame(nil, 1, frameWelcome, append(append([]byte(nil), h...), make([]byte, 32)...)),
		appendFrame(nil, 1, frameAuth, make([]byte, 32)),
		appendFrame(nil, 1, framePlan, appendPlan(nil, plan{kind: planStream, from: 5, primaryLSN: 9, detail: "x"})),
		appendFrame(nil, 1, frameData, data),
		appendFrame(nil, 1, frameSnapBegin, putU64(appendLineage(nil, lin), 1000)),
		appendFrame(nil, 1, frameSnapChunk, chunk),
		appendFrame(nil, 1, frameSnapEnd, putU64(nil, 1)),
		appendFrame(nil, 1, frameAck, putU64(nil, 8)),
		appendFrame(nil, 2, frameInSync, putU64(nil, 8)),
		appendFrame(nil, 1, frameReject, []byte("not primary")),
		// Version 2: Welcome and Auth carry the replication mode.
		appendFrame(nil, 2, frameWelcome, append(appendHello(nil, hello{nodeID: 1, minVer: 2, maxVer: 2, lin: lin, mode: wireAsync}), make([]byte, 32)...)),
		appendFrame(nil, 2, frameAuth, append([]byte{wireSync}, make([]byte, 32)...)),
		// Version 3: Data ends with the primary's durable LSN.
		appendFrame(nil, 3, frameData, appendData(nil, es, 3, 7)),
	}
}

// decodeAny decodes a frame and its body as the receiving side would.
func decodeAny(b []byte) error {
	f, _, err := decodeFrame(b)
	if err != nil {
		return err
	}
	switch f.typ {
	case frameHello:
		_, err = decodeHello(f.body, 0)
	case frameWelcome:
		_, err = decodeHello(f.body, f.version)
	case frameAuth:
		_, _, err = decodeAuth(f.body, f.version)
	case framePlan:
		_, err = decodePlan(f.body)
	case frameData:
		var es []entry
		var durable uint64
		es, durable, err = decodeData(f.body, f.version)
		if err == nil {
			// Round trip: re-encoding gives the same body.
			if again := appendData(nil, es, f.version, durable); !bytes.Equal(again, f.body) {
				panic("data round trip differs")
			}
		}
	case frameSnapBegin:
		r := &reader{b: f.body}
		r.lineage()
		r.u64("total")
		err = r.done("snap_begin")
	case frameSnapChunk:
		_, err = decodeSnapChunk(f.body, func(k, v []byte) {})
	}
	return err
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = decodeAny(b)
		// Whatever decodes re-encodes to the same bytes.
		if fr, n, err := decodeFrame(b); err == nil {
			if again := appendFrame(nil, fr.version, fr.typ, fr.body); !bytes.Equal(again, b[:n]) {
				t.Fatalf("frame round trip differs")
			}
		}
	})
}

func TestDecodeFrameRejectsWithReason(t *testing.T) {
	good := seedFrames()[4]
	for _, s := range seedFrames() {
		if err := decodeAny(s); err != nil {
			t.Fatalf("seed frame type %d: %v", s[9], err)
		}
	}
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)-3] ^= 1
	badVer := appendFrame(nil, 9, frameAck, putU64(nil, 1))
	badType := appendFrame(nil, 1, 99, nil)
	shortBody := appendFrame(nil, 1, frameData, []byte{0, 0, 0})
	huge := []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 1}
	badMode := appendFrame(nil, 2, frameAuth, append([]byte{7}, make([]byte, 32)...))
	v1Auth := appendFrame(nil, 2, frameAuth, make([]byte, 32)) // no mode byte in a version 2 frame
	es := []entry{{lsn: 7, epoch: 3, csum: 9}}
	v2Data := appendFrame(nil, 3, frameData, appendData(nil, es, 2, 0))    // no durable LSN in a version 3 frame
	v3DataAt2 := appendFrame(nil, 2, frameData, appendData(nil, es, 3, 7)) // a durable LSN a version 2 peer does not know
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"truncated header", good[:5], ErrFrameTruncated},
		{"truncated body", good[:len(good)-1], ErrFrameTruncated},
		{"corrupted", corrupt, ErrFrameChecksum},
		{"version", badVer, ErrFrameVersion},
		{"type", badType, ErrFrameType},
		{"malformed", shortBody, ErrFrameMalformed},
		{"too large", huge, ErrFrameTooLarge},
		{"mode", badMode, ErrFrameMalformed},
		{"auth without mode", v1Auth, ErrFrameMalformed},
		{"version 3 data without the durable LSN", v2Data, ErrFrameMalformed},
		{"version 2 data with a durable LSN", v3DataAt2, ErrFrameMalformed},
	} {
		if err := decodeAny(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestIsFrameErr: a frame the peer got wrong is a rejection; a connection
// failing under the session (reset, timeout, a clean close) is not.
func TestIsFrameErr(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("from peer: %w", ErrFrameChecksum), true},
		{fmt.Errorf("%w: header: unexpected EOF", ErrFrameTruncated), true},
		{ErrFrameMalformed, true},
		{io.EOF, false},
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ETIMEDOUT}, false},
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
	} {
		if got := isFrameErr(tc.err); got != tc.want {
			t.Errorf("isFrameErr(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// failAfter yields b, then err.
type failAfter struct {
	b   []byte
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, f.err
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

// TestReadFrameCutMidBody: a peer that closes inside a frame sent a
// truncated frame (a rejection); a connection reset or timed out inside a
// frame is a transport failure, as it would be between frames, and an HA
// link cut or a peer killed mid-send must not show up as rejected frames.
func TestReadFrameCutMidBody(t *testing.T) {
	good := seedFrames()[4]
	half := good[:frameHeaderLen+(len(good)-frameHeaderLen)/2]
	for _, tc := range []struct {
		name      string
		err       error
		frameErr  bool
		truncated bool
	}{
		{"closed by the peer", io.EOF, true, true},
		{"reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false, false},
		{"timed out", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ETIMEDOUT}, false, false},
		{"closed here", net.ErrClosed, false, false},
	} {
		_, _, err := readFrame(&failAfter{b: bytes.Clone(half), err: tc.err}, nil)
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		if got := isFrameErr(err); got != tc.frameErr {
			t.Errorf("%s: isFrameErr(%v) = %t, want %t", tc.name, err, got, tc.frameErr)
		}
		if got := errors.Is(err, ErrFrameTruncated); got != tc.truncated {
			t.Errorf("%s: %v is truncation: %t, want %t", tc.name, err, got, tc.truncated)
		}
		if !tc.truncated && !errors.Is(err, tc.err) {
			t.Errorf("%s: %v does not wrap %v", tc.name, err, tc.err)
		}
		if !strings.Contains(err.Error(), "body of") {
			t.Errorf("%s: %v does not say where the frame was cut", tc.name, err)
		}
	}
}

func TestRejectTextIsBounded(t *testing.T) {
	for _, tc := range []struct {
		body []byte
		want string
	}{
		{[]byte("not primary"), "not primary"},
		{[]byte("bad \xff byte"), "bad ? byte"},
		{bytes.Repeat([]byte("x"), 600), strings.Repeat("x", 512) + "... (600 bytes)"},
	} {
		if got := rejectText(tc.body); got != tc.want {
			t.Errorf("rejectText(%d bytes) = %q, want %q", len(tc.body), got, tc.want)
		}
	}
}
