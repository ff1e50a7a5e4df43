package wip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// pairT describes two stores that replicate to each other over loopback.
type pairT struct {
	t          *testing.T
	dirA, dirB string
	addrA      string
	addrB      string
	base       Options
}

func newPair(t *testing.T, base Options) *pairT {
	if base.PairKey == nil {
		base.PairKey = testKey
	}
	return &pairT{t: t, dirA: t.TempDir(), dirB: t.TempDir(), addrA: testenv.LoopbackAddr(t), addrB: testenv.LoopbackAddr(t), base: base}
}

func (p *pairT) open(node string, mod func(*Options)) *Store {
	o := p.base
	dir := p.dirA
	o.NodeID, o.ListenAddr, o.PeerAddr = 1, p.addrA, p.addrB
	if node == "b" {
		dir = p.dirB
		o.NodeID, o.ListenAddr, o.PeerAddr = 2, p.addrB, p.addrA
	}
	if mod != nil {
		mod(&o)
	}
	return openT(p.t, dir, o)
}

// synced opens a and b, promotes a in epoch 1 and waits until b is in
// sync. Closing them is the caller's (tests kill or reopen them).
func (p *pairT) synced() (a, b *Store) {
	p.t.Helper()
	a, b = p.open("a", nil), p.open("b", nil)
	if err := a.Promote(context.Background(), 1); err != nil {
		p.t.Fatal(err)
	}
	waitFor(p.t, "peer in sync", inSync(a))
	return a, b
}

// waitFor polls cond on the real clock; the bound only ends a hung test.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 3000; i++ {
		if cond() {
			return
		}
		clock.Sleep(context.Background(), clock.Real(), 5*time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func inSync(a *Store) func() bool {
	return func() bool { return a.Status().PeerState == PeerInSync }
}

// kill drops the replication connection first (nothing buffered is flushed),
// then stops the store, as a crashed process would leave its peer.
func (s *Store) kill() {
	s.mu.Lock()
	sess := s.sess
	s.mu.Unlock()
	if sess != nil {
		_ = sess.conn.Close()
	}
	_ = s.Close()
}

func TestI2SyncCommitIsOnPeerWhenAcknowledged(t *testing.T) {
	p := newPair(t, Options{})
	a, b := p.synced()
	defer a.Close()
	defer b.Close()
	for i := 0; i < 50; i++ {
		k := fmt.Sprintf("k%03d", i)
		lsn := commitKV(t, a, k, k)
		// Protocol C: acknowledged means durable on the peer.
		if st := b.Status(); st.DurableLSN < lsn {
			t.Fatalf("commit %d acknowledged while the peer is at %d", lsn, st.DurableLSN)
		}
		mustGet(t, b, k, k)
	}
	st := a.Status()
	if st.PeerAckedLSN != 50 || st.PeerState != PeerInSync || st.LagBatches != 0 {
		t.Fatalf("primary status %+v", st)
	}
	if err := b.Promote(context.Background(), 2); !errors.Is(err, ErrNotPromotable) {
		t.Fatalf("promoting a secondary connected to a live primary: %v", err)
	}
	// Planned switchover: demote a, promote b, a follows b.
	if err := a.Demote(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit(context.Background(), a.NewBatch()); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("commit after demote: %v", err)
	}
	waitFor(t, "b's session to end", func() bool { return b.Status().PeerState == PeerDisconnected })
	if err := b.Promote(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a in sync with b", inSync(b))
	lsn := commitKV(t, b, "after-switchover", "x")
	if lsn != 51 {
		t.Fatalf("lsn %d", lsn)
	}
	mustGet(t, a, "after-switchover", "x")
	if st := a.Status(); st.Epoch != 2 || st.Role != Secondary {
		t.Fatalf("a after switchover: %+v", st)
	}
}

// writers commits from n goroutines until stop, recording what was acked.
type writers struct {
	mu    sync.Mutex
	acked map[string]string
	wg    sync.WaitGroup
	stop  context.CancelFunc
}

func startWriters(s *Store, n, valueSize int) *writers {
	return startWritersPrefixed(s, "", n, valueSize)
}

// startWritersPrefixed is startWriters with keys under prefix, so that
// successive sets of writers never reuse a key. A commit that has not
// returned within 30 s counts as not acknowledged.
func startWritersPrefixed(s *Store, prefix string, n, valueSize int) *writers {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writers{acked: map[string]string{}, stop: cancel}
	for g := 0; g < n; g++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				k := fmt.Sprintf("%sw%d/%06d", prefix, g, i)
				v := fmt.Sprintf("%s-%s", k, bytes.Repeat([]byte("v"), valueSize))
				b := s.NewBatch()
				b.Set([]byte(k), []byte(v))
				cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := s.Commit(cctx, b)
				ccancel()
				if err != nil {
					if errors.Is(err, ErrClosed) || ctx.Err() != nil || errors.Is(err, ErrNotPrimary) {
						return
					}
					continue
				}
				w.mu.Lock()
				w.acked[k] = v
				w.mu.Unlock()
			}
		}()
	}
	return w
}

func (w *writers) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *writers) snapshot() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]string, len(w.acked))
	for k, v := range w.acked {
		out[k] = v
	}
	return out
}

func (w *writers) halt() map[string]string {
	w.stop()
	w.wg.Wait()
	return w.snapshot()
}

func checkAll(t *testing.T, s *Store, want map[string]string) {
	t.Helper()
	checkAllIn(t, "the store", s, want)
}

// checkAllIn fails unless s holds every key of want with its value; the
// failure names the store (what), how many are missing and the first.
func checkAllIn(t *testing.T, what string, s *Store, want map[string]string) {
	t.Helper()
	missing := 0
	var first string
	for k, v := range want {
		got, ok, err := s.Get([]byte(k))
		if err != nil || !ok || string(got) != v {
			if missing == 0 {
				first = fmt.Sprintf("%s: got %d bytes, ok %v, err %v", k, len(got), ok, err)
			}
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%s: %d of %d acknowledged commits missing or wrong; first %s", what, missing, len(want), first)
	}
}

// TestI2PrimaryKilledMidStream: writers on a, a is killed (connection cut
// without flushing, then closed); every commit a acknowledged is on b, which
// then promotes without force.
func TestI2PrimaryKilledMidStream(t *testing.T) {
	p := newPair(t, Options{})
	a, b := p.synced()
	defer b.Close()
	w := startWriters(a, 16, 100)
	waitFor(t, "commits", func() bool { return w.count() > 500 })
	before := w.snapshot()
	a.kill()
	acked := w.halt()
	if len(acked) < len(before) {
		t.Fatal("lost track of acks")
	}
	waitFor(t, "b to notice", func() bool { return b.Status().PeerState == PeerDisconnected })
	checkAll(t, b, acked)
	if err := b.Promote(context.Background(), 2); err != nil {
		t.Fatalf("b after a's crash: %v", err)
	}
	t.Logf("%d commits acknowledged by a, all on b (b at LSN %d)", len(acked), b.Status().DurableLSN)
}

// TestReceiverAndSenderRestartedMidStream: under load, b is closed and reopened,
// then a is; the pair catches up and b holds every acknowledged commit.
func TestReceiverAndSenderRestartedMidStream(t *testing.T) {
	p := newPair(t, Options{PeerAckTimeout: 300 * time.Millisecond})
	a, b := p.synced()
	w := startWriters(a, 8, 100)
	waitFor(t, "commits", func() bool { return w.count() > 200 })
	b.kill()
	n := w.count()
	waitFor(t, "more commits (degraded)", func() bool { return w.count() > n+200 })
	if !a.Status().PeerOutdated {
		t.Fatalf("peer not marked outdated: %+v", a.Status())
	}
	b = p.open("b", nil)
	waitFor(t, "b back in sync", inSync(a))
	acked := w.halt()
	// In sync again: this commit returns once b holds it and all before it.
	commitKV(t, a, "last", "1")
	_ = a.Close()
	waitFor(t, "b disconnected", func() bool { return b.Status().PeerState == PeerDisconnected })
	checkAll(t, b, acked)
	if st := b.Status(); st.Outdated {
		t.Fatalf("b still outdated after catching up: %+v", st)
	}
	// The sender restarts: a reopens as secondary, is promoted again, b catches up.
	a = p.open("a", nil)
	defer a.Close()
	defer b.Close()
	if err := a.Promote(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b in sync with restarted a", inSync(a))
	lsn := commitKV(t, a, "after-restart", "1")
	mustGet(t, b, "after-restart", "1")
	if st := b.Status(); st.DurableLSN != lsn {
		t.Fatalf("b at %d, a committed %d", st.DurableLSN, lsn)
	}
}

func TestPeerLossDegradeMarksOutdatedAndPeerLearnsIt(t *testing.T) {
	var mu sync.Mutex
	var events []Event
	p := newPair(t, Options{PeerAckTimeout: 200 * time.Millisecond})
	a := p.open("a", func(o *Options) {
		o.Events = func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }
	})
	defer a.Close()
	b := p.open("b", nil)
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "in sync", inSync(a))
	commitKV(t, a, "one", "1")
	b.kill()
	two := commitKV(t, a, "two", "2") // waits PeerAckTimeout, then goes on alone
	st := a.Status()
	if !st.PeerOutdated || st.PeerState != PeerOutdated || st.Counters.Degradations != 1 {
		t.Fatalf("after peer loss: %+v", st)
	}
	mu.Lock()
	found := false
	for _, e := range events {
		found = found || e.Kind == EventPeerOutdated
	}
	mu.Unlock()
	if !found {
		t.Fatal("no peer-outdated event")
	}
	// b comes back as a plain store: it is told it is outdated and catches up.
	b = openT(t, p.dirB, Options{NodeID: 2, PeerAddr: p.addrA, PairKey: testKey})
	defer b.Close()
	waitFor(t, "b caught up", func() bool { return b.Status().DurableLSN >= two })
	mustGet(t, b, "two", "2")
	waitFor(t, "b no longer outdated", func() bool { return !b.Status().Outdated })
	if a.Status().PeerOutdated {
		t.Fatal("a still counts b as outdated")
	}
}

func TestPeerLossBlockWaitsForPeer(t *testing.T) {
	p := newPair(t, Options{PeerAckTimeout: 100 * time.Millisecond, PeerLoss: Block})
	a := p.open("a", nil)
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	b := a.NewBatch()
	b.Set([]byte("k"), []byte("v"))
	if _, err := a.Commit(ctx, b); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("block mode without a peer: %v", err)
	}
	if st := a.Status(); st.PeerOutdated || st.LagBatches != 1 {
		t.Fatalf("block mode status %+v", st)
	}
	// The group waits, durable here, though its caller gave up: Status
	// says since when (the daemon's alarm), and no refusal (Block asks
	// no hook).
	if st := a.Status(); st.AckWaitSince.IsZero() || st.GoAloneRefusal != "" {
		t.Fatalf("block mode: ack wait since %v, refusal %q; want the waiting group's time and none", st.AckWaitSince, st.GoAloneRefusal)
	}
	done := make(chan error, 1)
	go func() {
		b := a.NewBatch()
		b.Set([]byte("k2"), []byte("v"))
		_, err := a.Commit(context.Background(), b)
		done <- err
	}()
	sb := p.open("b", nil)
	defer sb.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mustGet(t, sb, "k", "v")
	mustGet(t, sb, "k2", "v")
	if st := a.Status(); !st.AckWaitSince.IsZero() {
		t.Fatalf("the peer acked everything; ack wait since %v", st.AckWaitSince)
	}
}

func TestAsyncModeShowsLagAndCatchesUp(t *testing.T) {
	p := newPair(t, Options{Mode: Async})
	a := p.open("a", nil)
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		commitKV(t, a, fmt.Sprint(i), "v") // no peer: async never waits
	}
	if st := a.Status(); st.LagBatches != 20 || st.PeerOutdated {
		t.Fatalf("async status %+v", st)
	}
	b := p.open("b", nil)
	defer b.Close()
	waitFor(t, "caught up", func() bool { return a.Status().PeerAckedLSN == 20 })
	mustGet(t, b, "19", "v")
	if st := a.Status(); st.LagBatches != 0 {
		t.Fatalf("lag after catch-up: %+v", st)
	}
}

// primary opens a (mod changes its options, if set), promotes it in epoch
// 1 and closes it at the test's end.
func (p *pairT) primary(mod func(*Options)) *Store {
	p.t.Helper()
	a := p.open("a", mod)
	p.t.Cleanup(func() { a.Close() })
	if err := a.Promote(context.Background(), 1); err != nil {
		p.t.Fatal(err)
	}
	return a
}

// wrongKeyPair opens a, promoted in epoch 1, and b, its secondary with
// another pair key; they close at the test's end.
func wrongKeyPair(t *testing.T, base Options) (a, b *Store) {
	t.Helper()
	p := newPair(t, base)
	a = p.primary(nil)
	b = p.open("b", func(o *Options) { o.PairKey = []byte("another-key-of-32-bytes-xxxxxxxx") })
	t.Cleanup(func() { b.Close() })
	return a, b
}

func TestWrongPairKeyRejectedNothingApplied(t *testing.T) {
	a, b := wrongKeyPair(t, Options{})
	// Each side finds the other's mac wrong and says so: the secondary
	// checks the welcome first and tells the primary why it hangs up.
	waitFor(t, "rejections counted on both sides", func() bool {
		return a.Status().Counters.RejectedAuth > 0 && b.Status().Counters.RejectedAuth > 0
	})
	if st := b.Status(); st.DurableLSN != 0 || st.PeerState != PeerDisconnected {
		t.Fatalf("b with the wrong key: %+v", st)
	}
	for name, s := range map[string]*Store{"a": a, "b": b} {
		if st := s.Status(); !contains(st.LastError, "pair key") || st.Counters.RejectedFrames != 0 {
			t.Fatalf("%s: rejection reason %q, rejected frames %d; want the pair key named, no frame counted", name, st.LastError, st.Counters.RejectedFrames)
		}
	}
}

// TestI4DivergenceLandsInQuarantine: a and b both commit in epochs the other
// never saw; b, reconnecting as secondary, exports its suffix and resyncs.
func TestI4DivergenceLandsInQuarantine(t *testing.T) {
	p := newPair(t, Options{PeerAckTimeout: 100 * time.Millisecond})
	a, b := p.open("a", nil), p.open("b", nil)
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "in sync", inSync(a))
	for i := 0; i < 5; i++ {
		commitKV(t, a, fmt.Sprint("common", i), "c")
	}
	a.Close()
	b.Close()
	// Split brain: each promotes alone.
	bo := openT(t, p.dirB, Options{Mode: Async})
	if err := bo.Promote(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		commitKV(t, bo, fmt.Sprint("b-only", i), "b")
	}
	bo.Close()
	ao := openT(t, p.dirA, Options{Mode: Async, ListenAddr: p.addrA, PairKey: testKey})
	defer ao.Close()
	if err := ao.Promote(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		commitKV(t, ao, fmt.Sprint("a-only", i), "a")
	}
	var mu sync.Mutex
	var div *Event
	b = p.open("b", func(o *Options) {
		o.Mode = Async // as ao: a pair runs one mode (ErrModeMismatch)
		o.Events = func(e Event) {
			if e.Kind == EventDiverged {
				mu.Lock()
				div = &e
				mu.Unlock()
			}
		}
	})
	defer b.Close()
	waitFor(t, "b resynced", func() bool { return b.Status().DurableLSN == 9 && !b.Status().Inconsistent })
	mu.Lock()
	defer mu.Unlock()
	if div == nil {
		t.Fatal("no divergence event")
	}
	msg := div.Err.Error()
	for _, want := range []string{"LSN 6..8", "epochs [2]", "epoch 3"} {
		if !contains(msg, want) {
			t.Errorf("divergence error %q does not name %q", msg, want)
		}
	}
	q, err := os.ReadFile(div.File)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(div.File) != filepath.Join(p.dirB, "quarantine") || !bytes.Contains(q, []byte(`"lsn":8`)) ||
		bytes.Count(q, []byte("\n")) != 4 {
		t.Fatalf("quarantine file %s:\n%s", div.File, q)
	}
	mustGet(t, b, "a-only3", "a")
	if _, ok, _ := b.Get([]byte("b-only0")); ok {
		t.Fatal("b's losing suffix still in its store")
	}
	t.Logf("quarantined: %s", msg)
}

// TestBadHandshakesRejectedAndCounted: a corrupted frame, a peer speaking
// only future versions, and a half-sent frame at Close: each is rejected
// with its reason and counted, nothing is applied, and Close cuts the
// half-open connection.
func TestBadHandshakesRejectedAndCounted(t *testing.T) {
	p := newPair(t, Options{})
	a := p.open("a", nil)
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	send := func(b []byte) string {
		c, err := net.Dial("tcp", p.addrA)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		f, _, err := readFrame(c, nil)
		if err != nil || f.typ != frameReject {
			t.Fatalf("answer to a bad handshake: %v %+v", err, f)
		}
		return string(f.body)
	}
	good := appendFrame(nil, 1, frameHello, appendHello(nil, hello{nodeID: 2, minVer: 1, maxVer: 1}))
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 0x40
	if r := send(bad); !contains(r, "checksum") {
		t.Fatalf("corrupted hello answered %q", r)
	}
	future := appendFrame(nil, 1, frameHello, appendHello(nil, hello{nodeID: 2, minVer: 5, maxVer: 6}))
	if r := send(future); !contains(r, "5..6") {
		t.Fatalf("future-only hello answered %q", r)
	}
	st := a.Status()
	if st.Counters.RejectedFrames != 1 || st.Counters.RejectedVersion != 1 || st.PeerState != PeerDisconnected {
		t.Fatalf("counters after bad handshakes: %+v", st)
	}
	// Half a frame, then the store closes: Close must not wait for it.
	c, err := net.Dial("tcp", p.addrA)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(good[:7]); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}

// A pair whose nodes run different replication modes does not replicate:
// the promotion rules of the secondary would not match what the primary
// acknowledges (a "behind" sync secondary may promote, an async one may
// not). Both nodes report it, name the modes and count it; once the
// secondary runs the primary's mode the pair syncs.
func TestModeMismatchRefusedOnBothSides(t *testing.T) {
	p := newPair(t, Options{PeerAckTimeout: 100 * time.Millisecond})
	type seen struct {
		mu       sync.Mutex
		mismatch []string
		started  int
	}
	record := func(r *seen) func(*Options) {
		return func(o *Options) {
			o.Events = func(e Event) {
				r.mu.Lock()
				defer r.mu.Unlock()
				switch e.Kind {
				case EventModeMismatch:
					r.mismatch = append(r.mismatch, e.Detail)
				case EventSessionStarted:
					r.started++
				}
			}
		}
	}
	var ra, rb seen
	a := p.open("a", record(&ra))
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	b := p.open("b", func(o *Options) { record(&rb)(o); o.Mode = Async })
	has := func(r *seen) bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.mismatch) > 0 }
	waitFor(t, "both sides report the mismatch", func() bool { return has(&ra) && has(&rb) })
	for _, c := range []struct {
		name string
		r    *seen
		s    *Store
	}{{"primary", &ra, a}, {"secondary", &rb, b}} {
		c.r.mu.Lock()
		d, started := c.r.mismatch[0], c.r.started
		c.r.mu.Unlock()
		if !contains(d, "async") || !contains(d, "sync") || !contains(d, "same replication mode") {
			t.Errorf("%s: mismatch reported as %q", c.name, d)
		}
		st := c.s.Status()
		if started != 0 || st.Counters.Sessions != 0 || st.Counters.RejectedMode == 0 {
			t.Errorf("%s: %d sessions started, counters %+v", c.name, started, st.Counters)
		}
		if !contains(st.LastError, ErrModeMismatch.Error()) {
			t.Errorf("%s: last error %v, want ErrModeMismatch", c.name, st.LastError)
		}
	}
	commitKV(t, a, "k", "v") // degrades after PeerAckTimeout: nothing reached b
	if st := b.Status(); st.DurableLSN != 0 {
		t.Fatalf("the async secondary applied LSN %d across a refused session", st.DurableLSN)
	}
	b.Close()
	b = p.open("b", record(&rb))
	defer b.Close()
	waitFor(t, "b catches up in the primary's mode", func() bool { return b.Status().DurableLSN == 1 })
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.started == 0 {
		t.Fatal("no EventSessionStarted on the secondary")
	}
}

// A version 1 secondary (no mode in Auth) still pairs with this build: the
// primary answers at version 1, and the session goes on to its plan.
func TestVersion1SecondaryPairs(t *testing.T) {
	p := newPair(t, Options{})
	a := p.open("a", nil)
	defer a.Close()
	if err := a.Promote(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.addrA)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hb := appendHello(nil, hello{nodeID: 2, minVer: 1, maxVer: 1})
	if _, err := c.Write(appendFrame(nil, 1, frameHello, hb)); err != nil {
		t.Fatal(err)
	}
	f, _, err := readFrame(c, nil)
	if err != nil || f.typ != frameWelcome || f.version != 1 {
		t.Fatalf("welcome to a version 1 hello: %v, type %d version %d", err, f.typ, f.version)
	}
	w, err := decodeHello(f.body, 1)
	if err != nil || w.maxVer != 1 || w.mode != 0 {
		t.Fatalf("version 1 welcome: %+v, %v", w, err)
	}
	if _, err := c.Write(appendFrame(nil, 1, frameAuth, a.mac("tandem-wip auth", hb, f.body))); err != nil {
		t.Fatal(err)
	}
	f, _, err = readFrame(c, nil)
	if err != nil || f.typ != framePlan {
		t.Fatalf("after a version 1 auth: %v, type %d %q", err, f.typ, f.body)
	}
	if _, err := decodePlan(f.body); err != nil {
		t.Fatal(err)
	}
}

// TestRejectionLogIsRateLimited: a peer refused at every reconnect is
// logged once a minute per class, with the count of the lines not logged;
// every rejection is still counted. A new class is logged at once.
func TestRejectionLogIsRateLimited(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	core, logs := observer.New(zap.WarnLevel)
	s := openT(t, t.TempDir(), Options{Mode: Async, Clock: clk, Logger: zap.New(core)})
	defer s.Close()
	auth := func(i int) error { return fmt.Errorf("from 192.0.2.1:%d: %w", 40000+i, ErrAuth) }
	for i := range 30 { // a minute of reconnects, one every 2 s
		s.reject("auth", auth(i))
		clk.Advance(2 * time.Second)
	}
	s.reject("frame", fmt.Errorf("data: %w", ErrFrameChecksum))
	lines := logs.FilterMessage("replication frame rejected").All()
	if len(lines) != 2 || lines[0].ContextMap()["kind"] != "auth" || lines[1].ContextMap()["kind"] != "frame" {
		t.Fatalf("%d lines %v; want the first auth and the frame rejection", len(lines), lines)
	}
	s.reject("auth", auth(30)) // a minute after the first
	lines = logs.FilterMessage("replication frame rejected").All()
	if len(lines) != 3 || lines[2].ContextMap()["not_logged_since_last"] != uint64(29) {
		t.Fatalf("after a minute: %d lines, last %v; want a third counting 29 not logged", len(lines), lines[len(lines)-1].ContextMap())
	}
	if c := s.Status().Counters; c.RejectedAuth != 31 || c.RejectedFrames != 1 {
		t.Fatalf("counters %+v; want every rejection counted", c)
	}
}

// snapRefusalCount is how many snapshots the primary refused since the
// last one failed reading its store.
func (s *Store) snapRefusalCount() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapRefusals
}
