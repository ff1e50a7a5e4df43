package heartbeat

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash"
	"net/netip"
	"testing"
	"time"
)

var (
	testKey  = []byte("0123456789abcdef-pair-key")
	testDest = netip.MustParseAddrPort("198.51.100.2:7405")
)

func sampleFrame() frame {
	return frame{NodeID: 1, PairID: 42, BootID: 0x1122334455667788, Seq: 9, Round: 4, PathID: 1,
		Payload: Payload{Epoch: 7, Role: 2, CommittedLSN: 1000, AppliedLSN: 990, Health: 0x5, Handover: 3, Generation: 0xabcdef},
		TxNanos: 123, EchoNanos: 100, HoldNanos: 7, PeerBoot: 0x1122334455667700}
}

// v1Datagram is f as a version-1 sender (before PeerBoot) sends it.
func v1Datagram(m hash.Hash, f frame) []byte {
	body := appendBody(nil, &f)[:BodyLen]
	body[offVersion] = 1
	return sum(m, body, testDest, body)
}

func TestWireRoundTrip(t *testing.T) {
	m := hmac.New(sha256.New, testKey)
	f := sampleFrame()
	b := encode(nil, m, &f, testDest)
	if len(b) != FrameLenV2 || b[offVersion] != 2 {
		t.Fatalf("datagram of %d bytes, version %d, want %d, 2", len(b), b[offVersion], FrameLenV2)
	}
	g, err := decode(b)
	if err != nil {
		t.Fatal(err)
	}
	g.Version = 0
	if g != f {
		t.Fatalf("decoded %+v, want %+v", g, f)
	}
	if !verify(m, b, testDest, nil) {
		t.Fatal("MAC does not verify")
	}
}

func TestWireMACBindsKeyDestinationAndEveryByte(t *testing.T) {
	m := hmac.New(sha256.New, testKey)
	f := sampleFrame()
	b := encode(nil, m, &f, testDest)
	if verify(hmac.New(sha256.New, []byte("another-pair-key-0123")), b, testDest, nil) {
		t.Fatal("verified with another key")
	}
	if verify(m, b, netip.MustParseAddrPort("198.51.100.6:7405"), nil) {
		t.Fatal("verified for another path's address")
	}
	if !verify(m, b, netip.MustParseAddrPort("[::ffff:198.51.100.2]:7405"), nil) {
		t.Fatal("IPv4-mapped form of the same destination refused")
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		if _, err := decode(c); err == nil && verify(m, c, testDest, nil) {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
}

func TestWireNextVersionWithAppendedFieldsIsAccepted(t *testing.T) {
	m := hmac.New(sha256.New, testKey)
	f := sampleFrame()
	body := appendBody(nil, &f)
	body[offVersion] = 3
	body = append(body, 0xde, 0xad, 0xbe, 0xef) // a field of version 3
	b := sum(m, body, testDest, body)
	g, err := decode(b)
	if err != nil {
		t.Fatalf("version 3 datagram refused: %v", err)
	}
	if g.Version != 3 || g.Payload != f.Payload || g.PeerBoot != f.PeerBoot || !verify(m, b, testDest, nil) {
		t.Fatalf("version 3 decoded as %+v", g)
	}
}

// TestWireVersion1IsAccepted: a peer that predates PeerBoot (a rolling
// upgrade) is heard; its datagrams carry no floor.
func TestWireVersion1IsAccepted(t *testing.T) {
	m := hmac.New(sha256.New, testKey)
	f := sampleFrame()
	b := v1Datagram(m, f)
	g, err := decode(b)
	if err != nil {
		t.Fatalf("version 1 datagram refused: %v", err)
	}
	f.PeerBoot, g.Version = 0, 0
	if g != f || !verify(m, b, testDest, nil) {
		t.Fatalf("version 1 decoded as %+v, want %+v", g, f)
	}
}

func TestWireMalformed(t *testing.T) {
	m := hmac.New(sha256.New, testKey)
	f := sampleFrame()
	good := encode(nil, m, &f, testDest)
	cases := map[string][]byte{
		"empty":       nil,
		"short":       good[:FrameLen-1],
		"v1 too long": append(v1Datagram(m, f), 0),
		"v2 too long": append(bytes.Clone(good), 0),
		"v2 as long as v1": func() []byte {
			c := v1Datagram(m, f)
			c[offVersion] = 2
			return c
		}(),
		"v3 too short":  func() []byte { c := bytes.Clone(good); c[offVersion] = 3; return c[:FrameLen] }(),
		"huge":          make([]byte, MaxFrameLen+1),
		"bad magic":     func() []byte { c := bytes.Clone(good); c[0] = 'X'; return c }(),
		"version 0":     func() []byte { c := bytes.Clone(good); c[offVersion] = 0; return c }(),
		"zero sequence": func() []byte { g := f; g.Seq = 0; return encode(nil, m, &g, testDest) }(),
		"zero boot":     func() []byte { g := f; g.BootID = 0; return encode(nil, m, &g, testDest) }(),
		"zero round":    func() []byte { g := f; g.Round = 0; return encode(nil, m, &g, testDest) }(),
	}
	for name, b := range cases {
		if _, err := decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzDecode: the decoder never panics, and whatever it accepts re-encodes
// to the same body (versions 1 and 2), so no two byte strings mean the
// same thing.
func FuzzDecode(f *testing.F) {
	m := hmac.New(sha256.New, testKey)
	fr := sampleFrame()
	f.Add(encode(nil, m, &fr, testDest))
	f.Add([]byte("THB1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		verify(m, b, testDest, nil) // must not panic either
		n := map[uint8]int{1: BodyLen, 2: BodyLenV2}[g.Version]
		if n == 0 {
			return
		}
		body := appendBody(nil, &g)[:n]
		body[offVersion] = g.Version
		// flags and reserved are ignored on receipt and zero on send.
		want := bytes.Clone(b[:n])
		want[offFlags] = 0
		want[offReserved], want[offReserved+1] = 0, 0
		if !bytes.Equal(body, want) {
			t.Fatalf("re-encoded body differs:\n got %x\nwant %x", body, want)
		}
	})
}

// FuzzReceive feeds arbitrary datagrams to the full receive path (decode,
// stranger checks, MAC, replay window, detector) of a node whose peer is
// silent: without the pair key nothing can revive it, and every datagram
// is counted under exactly one reason.
func FuzzReceive(f *testing.F) {
	m := hmac.New(sha256.New, testKey)
	fr := sampleFrame()
	fr.NodeID = 2
	f.Add(encode(nil, m, &fr, testDest)) // MAC for another destination than the node's
	f.Add([]byte("THB1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		local := netip.MustParseAddrPort("198.51.100.1:7405")
		remote := testDest
		h := newWithConns(Config{PairID: 42, NodeID: 1, Key: []byte("the-fuzzers-do-not-know-this"),
			Paths:    []Path{{Name: "ha1", Local: local, Remote: remote}},
			Interval: time.Second, DeadAfter: 4 * time.Second}, nil)
		evs, err := h.receive(0, b, remote, remote, t0, hmac.New(sha256.New, h.cfg.Key), nil, nil)
		if err == nil || len(evs) != 0 {
			t.Fatalf("unauthenticated datagram accepted: err %v, events %v", err, evs)
		}
		d := h.Stats()[0].Dropped
		if d.Malformed+d.Stranger+d.BadMAC+d.Replay != 1 {
			t.Fatalf("drop counted %+v, want exactly one reason", d)
		}
	})
}
