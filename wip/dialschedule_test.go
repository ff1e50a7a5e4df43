package wip

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// TestDialScheduleScripts runs the dial loop's timing as scripts: each step
// is how one attempt ended (a letter) and the wait the loop must take
// before the next attempt (0: at once).
//
//	p  progress: a session ran and was not refused
//	f  no progress: a failed dial, a session that never ran, a refusal
//	r  reset: the store was demoted, so the peer is the new primary
func TestDialScheduleScripts(t *testing.T) {
	ms := time.Millisecond
	type step struct {
		ev   byte
		wait time.Duration // after p or f
	}
	for _, tc := range []struct {
		name  string
		addrs int
		steps []step
	}{
		{"one link: failures double the wait up to 2 s", 1, []step{
			{'f', 20 * ms}, {'f', 40 * ms}, {'f', 80 * ms}, {'f', 160 * ms}, {'f', 320 * ms},
			{'f', 640 * ms}, {'f', 1280 * ms}, {'f', 2 * time.Second}, {'f', 2 * time.Second},
		}},
		{"one link: progress starts again from 20 ms", 1, []step{
			{'f', 20 * ms}, {'f', 40 * ms}, {'f', 80 * ms},
			{'p', 20 * ms}, {'f', 20 * ms}, {'f', 40 * ms},
		}},
		{"a session that keeps running and ending waits 20 ms each time", 1, []step{
			{'p', 20 * ms}, {'p', 20 * ms}, {'p', 20 * ms},
		}},
		{"a demotion resets the wait", 1, []step{
			{'f', 20 * ms}, {'f', 40 * ms}, {'f', 80 * ms}, {'r', 0}, {'f', 20 * ms},
		}},
		{"two links: a failure moves to the other link at once", 2, []step{
			{'f', 0}, {'f', 20 * ms}, {'f', 0}, {'f', 40 * ms}, {'f', 0}, {'f', 80 * ms},
		}},
		{"two links: a cut link costs no wait while the other serves", 2, []step{
			{'p', 20 * ms}, {'f', 0}, {'p', 20 * ms}, {'f', 0}, {'p', 20 * ms},
		}},
		{"two links: progress forgets a failure of the other link", 2, []step{
			{'f', 0}, {'p', 20 * ms}, {'f', 0}, {'f', 20 * ms},
		}},
		{"three links: a wait only after all three failed", 3, []step{
			{'f', 0}, {'f', 0}, {'f', 20 * ms}, {'f', 0}, {'f', 0}, {'f', 40 * ms},
		}},
		{"a demotion between links restarts the round", 2, []step{
			{'f', 0}, {'r', 0}, {'f', 0}, {'f', 20 * ms},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDialSchedule(tc.addrs)
			for i, st := range tc.steps {
				switch st.ev {
				case 'r':
					d.reset()
					continue
				case 'p', 'f':
					if got := d.ended(st.ev == 'p'); got != st.wait {
						t.Fatalf("step %d (%c): wait %v, want %v", i, st.ev, got, st.wait)
					}
				default:
					t.Fatalf("step %d: unknown event %q", i, st.ev)
				}
			}
		})
	}
}

// TestDialScheduleNoAddresses: a schedule made for no address behaves as
// for one, rather than looping without a wait.
func TestDialScheduleNoAddresses(t *testing.T) {
	d := newDialSchedule(0)
	if got := d.ended(false); got != backoffMin {
		t.Fatalf("wait %v, want %v", got, backoffMin)
	}
}

// TestRefusalIsNoProgress: the endings that count as refusals, so that the
// dial loop backs off after them however far the session ran, and keeps
// them in Status.LastError.
func TestRefusalIsNoProgress(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.EOF, false},
		{errors.New("read tcp: connection reset by peer"), false},
		{fmt.Errorf("%w: the primary cannot read its store: EIO", ErrRejected), true},
		{fmt.Errorf("session: %w", fmt.Errorf("%w: bad pair key", ErrRejected)), true},
		{&snapshotIOError{errors.New("ingest: no space left on device")}, true},
		{fmt.Errorf("snapshot: %w", &snapshotIOError{io.ErrUnexpectedEOF}), true},
	} {
		if got := refusal(tc.err); got != tc.want {
			t.Errorf("refusal(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestRefusedSecondaryBacksOffOnItsClock drives a secondary's dial loop on a
// clock that moves only when the test moves it. The primary refuses it (the
// wrong pair key): each refusal is kept with its time, and the next attempt
// comes 20 ms, then 40 ms, then 80 ms later, as Status.NextDialAt says
// while the loop waits.
func TestRefusedSecondaryBacksOffOnItsClock(t *testing.T) {
	start := time.Date(2026, 12, 7, 22, 0, 0, 0, time.UTC)
	clk := clock.NewManual(start)
	a, b := wrongKeyPair(t, Options{Clock: clk})
	elapsed := time.Duration(0)
	for i, wait := range []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond} {
		want := start.Add(elapsed + wait)
		waitFor(t, fmt.Sprintf("refusal %d and the wait after it", i+1), func() bool { return b.Status().NextDialAt.Equal(want) })
		st := b.Status()
		if !contains(st.LastError, "pair key") || !st.LastErrorAt.Equal(start.Add(elapsed)) {
			t.Fatalf("refusal %d: last error %q at %v; want the pair key's, at %v", i+1, st.LastError, st.LastErrorAt, start.Add(elapsed))
		}
		// Short of the wait the loop has not dialled: the timer is the
		// clock's, and only the test moves it.
		clk.Advance(wait - time.Millisecond)
		if got := b.Status().NextDialAt; !got.Equal(want) {
			t.Fatalf("refusal %d: next attempt %v before its time; want %v", i+1, got, want)
		}
		clk.Advance(time.Millisecond)
		elapsed += wait
	}
	if st := b.Status(); st.DurableLSN != 0 || st.PeerState != PeerDisconnected {
		t.Fatalf("b with the wrong key: %+v", st)
	}
	if st := a.Status(); !st.NextDialAt.IsZero() {
		t.Fatalf("the primary shows a next attempt: %v", st.NextDialAt)
	}
}

// TestPeerGoneIsNotARejection: a connection closed before its first frame
// (a peer that restarts or is killed, a port scan) is not a rejected frame
// on either side: it is not counted, nor kept as the last error. The
// waiting secondary says what ended its attempt (DialError).
func TestPeerGoneIsNotARejection(t *testing.T) {
	p := newPair(t, Options{})
	a := p.primary(func(o *Options) { o.PeerAddr = "" })
	// The primary's side: connect, send nothing, close; the primary
	// closes its side once it has dealt with it.
	c, err := net.Dial("tcp", p.addrA)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 64)); err != io.EOF {
		t.Fatalf("the primary answered a silent connection: %d bytes, %v", n, err)
	}
	c.Close()
	if st := a.Status(); st.Counters.RejectedFrames != 0 || st.LastError != "" {
		t.Fatalf("a connection closed before its hello: rejected frames %d, last error %q", st.Counters.RejectedFrames, st.LastError)
	}

	// The secondary's side: a "primary" that reads the hello and hangs up.
	ln, err := net.Listen("tcp", testenv.LoopbackAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, ln, func(c net.Conn) {
		_, _ = c.Read(make([]byte, 512))
		c.Close()
	})
	b := p.open("b", func(o *Options) { o.PeerAddr = ln.Addr().String() })
	defer b.Close()
	waitFor(t, "b waiting after its first attempt", func() bool { return !b.Status().NextDialAt.IsZero() })
	st := b.Status()
	if st.Counters.RejectedFrames != 0 || st.LastError != "" || !contains(st.DialError, "welcome from "+ln.Addr().String()) {
		t.Fatalf("b after the primary hung up: rejected frames %d, last error %q, dial error %q", st.Counters.RejectedFrames, st.LastError, st.DialError)
	}
}
