package vip

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
)

// hub is an in-memory Ethernet segment for the packet code's unit tests:
// every conn sits on a named port; a frame written on one port reaches the
// conns of every other port (like a hub, or a switch flooding), never the
// writer's own port. That is what the real sockets see: the monitor's
// kernel filter drops what its own host sends.
type hub struct {
	clk clock.Clock // stamps frames; may be nil

	mu    sync.Mutex
	conns []*hubConn
}

type stamped struct {
	b  []byte
	at time.Time
}

type hubConn struct {
	h    *hub
	port string
	in   chan stamped

	mu        sync.Mutex
	readErrs  []error // returned by the next reads, in order
	writeErr  error   // returned by every write while set
	failNext  int     // the next failNext writes fail
	closed    chan struct{}
	closeOnce sync.Once
}

func newHub(clk clock.Clock) *hub { return &hub{clk: clk} }

func (h *hub) conn(port string) *hubConn {
	c := &hubConn{h: h, port: port, in: make(chan stamped, 4096), closed: make(chan struct{})}
	h.mu.Lock()
	h.conns = append(h.conns, c)
	h.mu.Unlock()
	return c
}

func (c *hubConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.mu.Lock()
	werr := c.writeErr
	if c.failNext > 0 {
		c.failNext--
		werr = errors.New("hub: injected write failure")
	}
	c.mu.Unlock()
	if werr != nil {
		return 0, werr
	}
	var at time.Time
	if c.h.clk != nil {
		at = c.h.clk.Now()
	}
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	for _, o := range c.h.conns {
		if o.port == c.port {
			continue
		}
		select {
		case o.in <- stamped{b: append([]byte(nil), b...), at: at}:
		default:
			panic("hub: receive queue full; the test reads too little")
		}
	}
	return len(b), nil
}

func (c *hubConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.mu.Lock()
	if len(c.readErrs) > 0 {
		err := c.readErrs[0]
		c.readErrs = c.readErrs[1:]
		c.mu.Unlock()
		return 0, nil, err
	}
	c.mu.Unlock()
	select {
	case f := <-c.in:
		return copy(b, f.b), nil, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *hubConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *hubConn) LocalAddr() net.Addr                { return nil }
func (c *hubConn) SetDeadline(t time.Time) error      { return errors.ErrUnsupported }
func (c *hubConn) SetReadDeadline(t time.Time) error  { return errors.ErrUnsupported }
func (c *hubConn) SetWriteDeadline(t time.Time) error { return errors.ErrUnsupported }

// next returns the next frame that reached c, failing the test if none
// arrives within a generous real-time bound (the sender is a goroutine).
func (c *hubConn) next(t *testing.T) stamped {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case f := <-c.in:
		return f
	case <-ctx.Done():
		t.Fatalf("port %s: no frame arrived", c.port)
		return stamped{}
	}
}

// pending is how many frames wait in c's queue.
func (c *hubConn) pending() int { return len(c.in) }
