package testenv

import (
	"net"
	"strconv"
	"testing"
)

// TestLoopbackAddrIsOutsideTheEphemeralRange: every port handed out lies
// outside the kernel's ephemeral range (so no :0 listener can be given
// it), is new, and can be listened on.
func TestLoopbackAddrIsOutsideTheEphemeralRange(t *testing.T) {
	low, high, err := ephemeralRange()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := 0; i < 3*portsBlock; i++ { // crosses into further blocks
		a := LoopbackAddr(t)
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
		_, ps, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(ps)
		if p < portsLow || p >= low && p <= high {
			t.Fatalf("%s below %d or inside the ephemeral range %d-%d", a, portsLow, low, high)
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("cannot listen on a handed-out address: %v", err)
		}
		ln.Close()
	}
	if len(ports.locks) < 3 {
		t.Fatalf("%d blocks reserved for %d ports, want 3 or more", len(ports.locks), 3*portsBlock)
	}
}

// TestLoopbackAddrBlocksAreHeld: the block's first port, its lock, stays
// bound, so another process's reserveBlock (the same bind, which the
// kernel refuses whichever process asks) passes it by.
func TestLoopbackAddrBlocksAreHeld(t *testing.T) {
	LoopbackAddr(t)
	ports.mu.Lock()
	lock := ports.locks[len(ports.locks)-1].Addr().String()
	ports.mu.Unlock()
	if ln, err := net.Listen("tcp", lock); err == nil {
		ln.Close()
		t.Fatalf("the block's lock %s could be bound again", lock)
	}
}

// TestBlockBases: blocks lie wholly outside the ephemeral range, from
// portsLow up: below it (Debian's 32768-60999), above it when it starts
// too low, and none when it covers everything.
func TestBlockBases(t *testing.T) {
	for _, c := range []struct {
		low, high   int
		first, last int // bases; 0, 0: none
		n           int
	}{
		{32768, 60999, 20000, 61000 + ((65536-61000)/portsBlock-1)*portsBlock, (32768-20000)/portsBlock + (65536-61000)/portsBlock},
		{1024, 65535, 0, 0, 0},
		{1024, 40000, 40001, 40001 + ((65536-40001)/portsBlock-1)*portsBlock, (65536 - 40001) / portsBlock},
		{20063, 65535, 0, 0, 0},
	} {
		got := blockBases(c.low, c.high)
		if len(got) != c.n {
			t.Errorf("range %d-%d: %d blocks, want %d", c.low, c.high, len(got), c.n)
			continue
		}
		for _, b := range got {
			if b < portsLow || b+portsBlock-1 >= c.low && b <= c.high || b+portsBlock > 65536 {
				t.Errorf("range %d-%d: block %d-%d overlaps it or leaves the ports", c.low, c.high, b, b+portsBlock-1)
			}
		}
		if c.n > 0 && (got[0] != c.first || got[len(got)-1] != c.last) {
			t.Errorf("range %d-%d: blocks %d..%d, want %d..%d", c.low, c.high, got[0], got[len(got)-1], c.first, c.last)
		}
	}
}
