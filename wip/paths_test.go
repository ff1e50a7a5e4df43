package wip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/testenv"
)

// relay stands for one HA link in the loopback tests: it forwards every
// connection made to its address to target, counts the sessions and the
// bytes sent towards target, and cut drops them all and stops listening
// (the secondary sees its session end and its next dial refused).
type relay struct {
	ln       net.Listener
	target   string
	sessions atomic.Int64
	upBytes  atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.cut)
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", r.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		r.mu.Lock()
		r.conns = append(r.conns, c, u)
		r.mu.Unlock()
		r.sessions.Add(1)
		r.wg.Add(2)
		go func() { defer r.wg.Done(); _, _ = io.Copy(countW{u, &r.upBytes}, c); _ = u.Close() }()
		go func() { defer r.wg.Done(); _, _ = io.Copy(c, u); _ = c.Close() }()
	}
}

type countW struct {
	w io.Writer
	n *atomic.Int64
}

func (c countW) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// cut closes the listener and every forwarded connection, and waits for
// the relay's goroutines.
func (r *relay) cut() {
	_ = r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}

// linkPair opens a with two listeners (HA links 1 and 2) and b dialling
// link 1 through a relay and link 2 directly, promotes a and waits until
// b is in sync through the relay.
func linkPair(t *testing.T, o Options) (a, b *Store, link1 *relay) {
	t.Helper()
	p := newPair(t, o)
	a = p.open("a", func(o *Options) { o.ExtraListenAddrs = []string{"127.0.0.1:0"} })
	if got := len(a.ListenAddrs()); got != 2 {
		t.Fatalf("a listens on %d addresses, want 2", got)
	}
	// a is primary before b dials: a secondary that reaches a node not yet
	// primary is refused and moves on to the next address.
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	link1 = newRelay(t, a.ListenAddrs()[0])
	b = p.open("b", func(o *Options) {
		o.PeerAddr = link1.addr()
		o.ExtraPeerAddrs = []string{a.ListenAddrs()[1]}
	})
	t.Cleanup(func() { b.Close(); a.Close() })
	waitFor(t, "in sync", inSync(a))
	// a counts b in sync once the handshake is done (at LSN 0 nothing is
	// to be streamed), which can be before b has read a's plan and
	// recorded its session: wait for b's side too.
	waitFor(t, "b's session recorded", func() bool { return b.Status().SessionPeer != "" })
	if link1.sessions.Load() == 0 {
		t.Fatal("b is in sync but not through HA link 1 (its first address)")
	}
	if got := b.Status().SessionPeer; got != link1.addr() {
		t.Fatalf("b's status shows its session to %q, want HA link 1's %s", got, link1.addr())
	}
	return a, b, link1
}

// TestSecondaryMovesToTheNextHALink: with HA link 1 gone (its sessions
// dropped, its address refusing), the secondary reconnects over HA link 2
// by itself. PeerAckTimeout is a minute, so the commits made after the cut
// complete because b acks them over link 2, not because a went on alone;
// the peer is never marked outdated.
func TestSecondaryMovesToTheNextHALink(t *testing.T) {
	a, b, link1 := linkPair(t, Options{PeerAckTimeout: time.Minute})
	commitKV(t, a, "before", "1")
	link1.cut()
	for i := 0; i < 20; i++ {
		k := fmt.Sprint("after", i)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		bt := a.NewBatch()
		bt.Set([]byte(k), []byte("v"))
		_, err := a.Commit(ctx, bt)
		cancel()
		if err != nil {
			t.Fatalf("commit %s after HA link 1 was cut: %v", k, err)
		}
	}
	st := a.Status()
	if st.PeerOutdated || st.PeerState != PeerInSync {
		t.Fatalf("after the move to link 2: peer state %v, outdated %v; want in sync, not outdated", st.PeerState, st.PeerOutdated)
	}
	if got, want := a.Status().SessionLocal, a.ListenAddrs()[1]; got != want {
		t.Errorf("a's status shows its session on %q, want HA link 2's listener %s", got, want)
	}
	if got, want := b.Status().SessionPeer, a.ListenAddrs()[1]; got != want {
		t.Errorf("b's status shows its session to %q, want %s", got, want)
	}
	waitFor(t, "b holding every commit", func() bool { return b.Status().DurableLSN == st.CommittedLSN })
	mustGet(t, b, "after19", "v")
}

// TestSecondaryDialsPastADeadAddress: the first peer address refuses from
// the start; the secondary gets in sync over the second.
func TestSecondaryDialsPastADeadAddress(t *testing.T) {
	p := newPair(t, Options{})
	a := p.open("a", func(o *Options) { o.ExtraListenAddrs = []string{"127.0.0.1:0"} })
	dead := testenv.LoopbackAddr(t) // nothing listens there
	b := p.open("b", func(o *Options) {
		o.PeerAddr = dead
		o.ExtraPeerAddrs = []string{a.ListenAddrs()[1]}
	})
	defer a.Close()
	defer b.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "in sync over the second address", inSync(a))
	lsn := commitKV(t, a, "k", "v")
	if got := b.Status().DurableLSN; got < lsn {
		t.Fatalf("acknowledged LSN %d, b durable at %d", lsn, got)
	}
}

// TestIdleSecondaryReacks: an idle in-sync secondary repeats its last ack
// (DeadSessionAfter/4) so that its TCP finds a cut link while nothing is
// committed. The relay sees bytes from b with no commit being made.
func TestIdleSecondaryReacks(t *testing.T) {
	a, _, link1 := linkPair(t, Options{DeadSessionAfter: 200 * time.Millisecond})
	commitKV(t, a, "k", "v") // b repeats only an ack it has made in the session
	from := link1.upBytes.Load()
	// An ack frame is 18 bytes; wait for three of them.
	waitFor(t, "repeated acks from the idle secondary", func() bool { return link1.upBytes.Load() >= from+3*18 })
}

// TestPathOptionsValidated: extra addresses need the first one, and a
// negative DeadSessionAfter is refused; each error names the option.
func TestPathOptionsValidated(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		name string
	}{
		{Options{PairKey: testKey, ExtraListenAddrs: []string{"127.0.0.1:0"}}, "ExtraListenAddrs"},
		{Options{PairKey: testKey, ExtraPeerAddrs: []string{"127.0.0.1:1"}}, "ExtraPeerAddrs"},
		{Options{DeadSessionAfter: -time.Second}, "DeadSessionAfter"},
	} {
		_, err := Open(t.TempDir(), tc.o)
		if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s: %v, want ErrOptions naming it", tc.name, err)
		}
	}
	// A second listener that cannot be opened fails Open and leaves the
	// first one closed.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	first := testenv.LoopbackAddr(t)
	_, err = Open(t.TempDir(), Options{PairKey: testKey, ListenAddr: first, ExtraListenAddrs: []string{busy.Addr().String()}})
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("busy second listener: %v, want an error naming %s", err, busy.Addr())
	}
	ln, err := net.Listen("tcp", first)
	if err != nil {
		t.Fatalf("the first listener was left open after the failed Open: %v", err)
	}
	_ = ln.Close()
}
