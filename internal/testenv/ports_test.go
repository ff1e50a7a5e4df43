package testenv

import (
	"net"
	"strconv"
	"testing"
)

// TestLoopbackAddrIsOutsideTheEphemeralRange: every port handed out lies
// below the kernel's ephemeral range (so no :0 listener can be given it),
// is new, and can be listened on.
func TestLoopbackAddrIsOutsideTheEphemeralRange(t *testing.T) {
	low, err := ephemeralLow()
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
		if p < portsLow || p >= low {
			t.Fatalf("%s outside [%d, %d)", a, portsLow, low)
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
