package vip

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// Conflict reports another owner of a VIP seen while this node owns it: a
// possible split brain for the state machine to judge.
type Conflict struct {
	// VIP is the address claimed by someone else.
	VIP netip.Addr
	// MAC is the other owner's MAC (the ARP sender hardware address, or
	// the NA's target link-layer address). With DuplicateMAC it is our own
	// virtual MAC.
	MAC net.HardwareAddr
	// At is when the frame was read, on the Manager's clock.
	At time.Time
	// Evidence is the kind of frame that showed it.
	Evidence Evidence
	// DuplicateMAC is set in virtual-MAC mode when the frame came from
	// another host (it arrived from the wire) yet carries our virtual MAC:
	// another node holds the macvlan too, typically a peer that crashed
	// without releasing. Switches then flap the MAC between two ports.
	DuplicateMAC bool
}

// monitor reads the frames the monitor socket lets through (incoming ARP
// and neighbour advertisements; see monitorFilter) and reports every one
// that claims one of our VIPs for another MAC. It owns no socket: the
// session closes conn to stop it.
type monitor struct {
	conn    net.PacketConn
	clk     clock.Clock
	log     *zap.Logger
	own     net.HardwareAddr // the MAC we announce the VIPs with
	virtual bool             // own is a virtual MAC
	vips    map[netip.Addr]bool
	emit    func(Conflict)
}

// judge decides whether a claim seen on the wire conflicts with our
// ownership. Only frames from other hosts reach it (the kernel filter drops
// our own outgoing frames).
func (m *monitor) judge(c claim) (Conflict, bool) {
	if !m.vips[c.addr] {
		return Conflict{}, false
	}
	if !sameMAC(c.mac, m.own) {
		return Conflict{VIP: c.addr, MAC: c.mac, Evidence: c.evidence}, true
	}
	if m.virtual {
		// Our own virtual MAC, arriving from outside: a second holder.
		return Conflict{VIP: c.addr, MAC: c.mac, Evidence: c.evidence, DuplicateMAC: true}, true
	}
	// Our physical MAC from outside: a copy of our own frame (a switching
	// loop reflects it). Not another owner.
	return Conflict{}, false
}

// Read-error back-off bounds: a socket error (the interface went down)
// is retried, never spun on.
const (
	readBackoffMin = 50 * time.Millisecond
	readBackoffMax = 2 * time.Second
)

// run reads until ctx ends and the session closes conn.
func (m *monitor) run(ctx context.Context) {
	buf := make([]byte, 2048)
	backoff := readBackoffMin
	for {
		n, _, err := m.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return
			}
			m.log.Warn("conflict monitor read failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
			if clock.Sleep(ctx, m.clk, backoff) != nil {
				return
			}
			backoff = min(2*backoff, readBackoffMax)
			continue
		}
		backoff = readBackoffMin
		c, err := parseClaim(buf[:n])
		if err != nil {
			continue
		}
		if cf, ok := m.judge(c); ok {
			cf.At = m.clk.Now()
			m.emit(cf)
		}
	}
}
