package wip

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A primary that went on alone shows its returning peer in sync, and
// clears its persisted peer-outdated flag, only once the peer has acked
// what the stream had sent when it caught up: until then the peer may
// still be applying it (or ingesting a snapshot) and hold less.
func TestInSyncWaitsForThePeersAck(t *testing.T) {
	p := newPair(t, Options{PeerAckTimeout: 100 * time.Millisecond})
	a := p.primary(nil)
	b := p.open("b", nil)
	waitFor(t, "in sync", inSync(a))
	commitKV(t, a, "before", "x")
	b.Close()
	lsn := commitKV(t, a, "alone", "x") // acknowledged alone, after the timeout
	if st := a.Status(); !st.PeerOutdated {
		t.Fatalf("a after going on alone: peer outdated %v, state %v", st.PeerOutdated, st.PeerState)
	}

	release := make(chan struct{})
	var once sync.Once
	var held atomic.Bool
	b = p.open("b", func(o *Options) {
		o.testBeforeAck = func(acking uint64) {
			if acking >= lsn {
				held.Store(true)
				<-release
			}
		}
	})
	defer b.Close()
	defer once.Do(func() { close(release) }) // before Close: a failure must not leave b's acks held
	waitFor(t, "b holding its ack of the catch-up", held.Load)
	if st := b.Status(); st.DurableLSN < lsn {
		t.Fatalf("b holds LSN %d before its ack; want %d", st.DurableLSN, lsn)
	}
	// The stream has sent everything (b holds it), but b has not acked it.
	a.mu.Lock()
	live := a.peerState == PeerInSync
	a.mu.Unlock()
	if !live {
		t.Fatal("a's stream caught up but a does not wait for its peer on commits")
	}
	if st := a.Status(); st.PeerState != PeerCatchingUp || !st.PeerOutdated || st.PeerAckedLSN >= lsn {
		t.Fatalf("a before b's ack: peer %v, peer outdated %v, acked %d; want catching-up, outdated, below %d", st.PeerState, st.PeerOutdated, st.PeerAckedLSN, lsn)
	}
	once.Do(func() { close(release) })
	waitFor(t, "in sync after b's ack", inSync(a))
	if st := a.Status(); st.PeerOutdated || st.PeerAckedLSN < lsn {
		t.Fatalf("a in sync: peer outdated %v, acked %d; want cleared, at least %d", st.PeerOutdated, st.PeerAckedLSN, lsn)
	}
	commitKV(t, a, "after", "x")
}
