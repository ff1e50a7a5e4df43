package testenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Loopback ports for tests that must know an address before anything
// listens on it (a store's peer address, an address nothing answers on).
//
// Asking the kernel for a free port (listen on :0, close) and using it
// later is a race: the port comes from the ephemeral range, and any
// :0 listener or outgoing connection made in between, in this process
// or another, can be handed the same port (CI at 0c8e7fa: a relay's :0
// listener took a store's address between the pick and the store's
// Open). So the ports handed out here lie outside the kernel's ephemeral
// range (below it, or above it where there is no room below), which the
// kernel never hands out by itself, and each process
// reserves a block of them by holding a listener on the block's first
// port for its lifetime, so that two test processes (go test runs
// packages in parallel) never hand out the same port. The design is
// that of HashiCorp's consul/sdk/freeport, without its module.
const (
	portsLow   = 20000 // the lowest port handed out; most fixed service ports lie below
	portsBlock = 64    // ports per reservation, the first being its lock
)

var ports struct {
	mu    sync.Mutex
	locks []net.Listener // held for the life of the process: the reservations
	next  int            // next port to try in the current block; 0 = none
	end   int
}

// LoopbackAddr returns "127.0.0.1:port", a TCP address that nothing in
// this process or another test process using LoopbackAddr is given,
// and that the kernel does not hand out to :0 listeners or outgoing
// connections. Nothing listens on it when it is returned. Each call
// returns a new port.
func LoopbackAddr(t testing.TB) string {
	t.Helper()
	p, err := nextPort()
	if err != nil {
		t.Fatalf("testenv: no loopback port to hand out: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

func nextPort() (int, error) {
	ports.mu.Lock()
	defer ports.mu.Unlock()
	for tries := 0; tries < 1000; tries++ {
		if ports.next == 0 || ports.next >= ports.end {
			if err := reserveBlock(); err != nil {
				return 0, err
			}
		}
		p := ports.next
		ports.next++
		// A service with a fixed port (a database the connector tests
		// started) may hold it: skip what cannot be bound now.
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p))); err == nil {
			_ = ln.Close()
			return p, nil
		}
	}
	return 0, errors.New("1000 ports tried, none could be bound")
}

// reserveBlock takes a block no other process holds: the first port of
// a block is its lock.
func reserveBlock() error {
	low, high, err := ephemeralRange()
	if err != nil {
		return err
	}
	bases := blockBases(low, high)
	if len(bases) == 0 {
		return fmt.Errorf("the ephemeral range %d-%d leaves no block of %d ports from %d up outside it", low, high, portsBlock, portsLow)
	}
	start := rand.IntN(len(bases))
	for i := range bases {
		base := bases[(start+i)%len(bases)]
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base)))
		if err != nil {
			continue // another process's block, or a service's port
		}
		ports.locks = append(ports.locks, ln)
		ports.next, ports.end = base+1, base+portsBlock
		return nil
	}
	return fmt.Errorf("all %d blocks outside the ephemeral range %d-%d are taken", len(bases), low, high)
}

// blockBases lists the first ports of the blocks that lie wholly outside
// the ephemeral range [low, high]: between portsLow and low, then above
// high (a machine whose range starts low, 1024 say, may have room only
// there).
func blockBases(low, high int) []int {
	var bases []int
	add := func(from, to int) { // blocks within [from, to)
		for b := from; b+portsBlock <= to; b += portsBlock {
			bases = append(bases, b)
		}
	}
	add(portsLow, low)
	add(max(portsLow, high+1), 65536)
	return bases
}

// ephemeralRange reads the kernel's ephemeral port range (both ends
// included).
func ephemeralRange() (low, high int, err error) {
	const f = "/proc/sys/net/ipv4/ip_local_port_range"
	b, err := os.ReadFile(f)
	if err != nil {
		return 0, 0, err
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0, 0, fmt.Errorf("%s: %q, want two ports", f, b)
	}
	if low, err = strconv.Atoi(fields[0]); err == nil {
		high, err = strconv.Atoi(fields[1])
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", f, err)
	}
	return low, high, nil
}
