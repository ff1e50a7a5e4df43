package heartbeat

import (
	"context"
	"sync"
)

// eventQueue decouples the detector from the Events reader: the receivers
// and the watcher never block on a slow reader. Transitions are queued
// without limit (they are bounded by how often paths can flap); a
// PeerAlive that only updates the payload replaces a PeerAlive still
// waiting at the tail, so a lagging reader gets the newest payload.
type eventQueue struct {
	mu     sync.Mutex
	q      []Event
	signal chan struct{} // cap 1
	out    chan Event
}

func newEventQueue() *eventQueue {
	return &eventQueue{signal: make(chan struct{}, 1), out: make(chan Event, 16)}
}

func (q *eventQueue) push(evs []Event) {
	if len(evs) == 0 {
		return
	}
	q.mu.Lock()
	for _, e := range evs {
		if n := len(q.q); n > 0 && e.Kind == PeerAlive && q.q[n-1].Kind == PeerAlive {
			q.q[n-1] = e
			continue
		}
		q.q = append(q.q, e)
	}
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// pump moves queued events to out until ctx ends.
func (q *eventQueue) pump(ctx context.Context) {
	for {
		q.mu.Lock()
		var e Event
		have := len(q.q) > 0
		if have {
			e = q.q[0]
		}
		q.mu.Unlock()
		if !have {
			select {
			case <-ctx.Done():
				return
			case <-q.signal:
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case q.out <- e:
			q.mu.Lock()
			// While we were blocked, a newer PeerAlive may have replaced
			// the head (when it was also the tail): then keep it for the
			// next round; otherwise drop what we sent.
			if len(q.q) > 0 && q.q[0] == e {
				q.q = q.q[1:]
			}
			q.mu.Unlock()
		case <-q.signal:
			// New events: if the head was a PeerAlive it may have been
			// replaced; take the fresh head.
		}
	}
}
