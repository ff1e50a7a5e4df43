package wip

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
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
