package wip

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/clock"
)

const (
	handshakeTimeout = 5 * time.Second
	backoffMin       = 20 * time.Millisecond
	backoffMax       = 2 * time.Second
	maxDataFrame     = 1 << 20 // entries per Data frame are cut at this many bytes

)

// snapChunkBytes cuts snapshot chunks (a variable so tests use small ones).
var snapChunkBytes = 1 << 20

// session is one authenticated replication connection.
type session struct {
	s       *Store
	conn    net.Conn
	primary bool
	once    sync.Once
	done    chan struct{}
	err     error
	// primary side, guarded by s.mu: an InSync notice for the sender to send.
	inSyncPending bool
	inSyncLSN     uint64
}

func (ss *session) close(err error) {
	ss.once.Do(func() {
		ss.err = err
		close(ss.done)
		_ = ss.conn.Close()
		ss.s.mu.Lock()
		ss.s.cond.Broadcast()
		ss.s.mu.Unlock()
	})
}

func (ss *session) closed() bool {
	select {
	case <-ss.done:
		return true
	default:
		return false
	}
}

func (s *Store) startRepl() error {
	var lns []net.Listener
	if s.o.ListenAddr != "" {
		for _, a := range append([]string{s.o.ListenAddr}, s.o.ExtraListenAddrs...) {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				for _, c := range s.lnClosers {
					_ = c()
				}
				s.lnClosers = nil
				return fmt.Errorf("wip: replication listener on %s: %w", a, err)
			}
			lns = append(lns, ln)
			s.lnClosers = append(s.lnClosers, ln.Close)
			s.listenAddrs = append(s.listenAddrs, ln.Addr().String())
		}
	}
	// Started only once every listener is open: a failed Open leaves no
	// goroutine behind.
	for _, ln := range lns {
		s.wg.Add(1)
		go s.acceptLoop(ln)
	}
	if s.o.PeerAddr != "" {
		s.wg.Add(1)
		go s.dialLoop()
	}
	return nil
}

// ListenAddr returns the first replication listener's address ("" if
// none); useful with port 0.
func (s *Store) ListenAddr() string {
	if len(s.listenAddrs) == 0 {
		return ""
	}
	return s.listenAddrs[0]
}

// ListenAddrs returns every replication listener's address, ListenAddr's
// first.
func (s *Store) ListenAddrs() []string { return append([]string(nil), s.listenAddrs...) }

func (s *Store) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-s.closing:
				return
			default:
			}
			s.log.Warn("replication accept", zap.Error(err))
			if clock.Sleep(s.ctx(), s.clk, backoffMin) != nil {
				return
			}
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			// A dead secondary host leaves an idle session open until
			// probed; the status would show it in sync meanwhile. No
			// TCP_USER_TIMEOUT here: a slow secondary that fills the
			// window must not lose its session for it (see dialer).
			_ = tc.SetKeepAliveConfig(s.keepAlive())
		}
		if !s.track(c) {
			_ = c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.servePeer(c)
		}()
	}
}

// track registers a connection so Close can cut it even mid-handshake;
// it reports false once the store is closing.
func (s *Store) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Store) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// ctx returns a context cancelled when the store closes.
func (s *Store) ctx() context.Context {
	s.ctxOnce.Do(func() {
		var cancel context.CancelFunc
		s.ctxv, cancel = context.WithCancel(context.Background())
		go func() { <-s.closing; cancel() }()
	})
	return s.ctxv
}

// dialLoop is the secondary's side: while secondary, it keeps one session to
// the peer's listener, reconnecting as dialSchedule says: with several peer
// addresses (one per HA link) it moves to the next address whenever a
// session ends or a dial fails, and backs off only once every address has
// failed in a row, so a cut link costs one dial timeout at most.
func (s *Store) dialLoop() {
	defer s.wg.Done()
	addrs := append([]string{s.o.PeerAddr}, s.o.ExtraPeerAddrs...)
	sched := newDialSchedule(len(addrs))
	d := s.dialer()
	next := 0
	for {
		s.mu.Lock()
		// A failed store stops replicating: its disk is not trustworthy.
		waited := false
		for !s.closed && (s.role != Secondary || s.failed != nil) {
			s.cond.Wait()
			waited = true
		}
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return
		}
		if waited { // demoted (a handover): the new primary is coming up now
			sched.reset()
			select {
			case <-s.redial: // this Demote's; the loop was not backing off
			default:
			}
		}
		addr := addrs[next]
		next = (next + 1) % len(addrs)
		c, err := d.DialContext(s.ctx(), "tcp", addr)
		if err == nil && !s.track(c) {
			_ = c.Close()
			return
		}
		var ran bool
		if err == nil {
			ran, err = s.runSecondary(c)
			s.untrack(c)
		}
		// Refused by the primary (its store cannot be read, the pair key,
		// a mode), or a snapshot that this store could not take (a disk
		// that fails under it): Status says why, and the next attempt
		// backs off like a failed dial rather than follow at once.
		if refusal(err) {
			s.mu.Lock()
			s.setLastErrLocked(err)
			s.mu.Unlock()
		}
		if err != nil {
			lvl := zap.DebugLevel
			if len(addrs) > 1 && (ran || sched.failed == 0) {
				lvl = zap.InfoLevel // the operator sees the move to the other link
			}
			s.log.Log(lvl, "replication session ended", zap.String("peer", addr), zap.Bool("ran", ran),
				zap.String("next", addrs[next]), zap.Error(err))
		}
		wait := sched.ended(ran && !refusal(err))
		if wait == 0 {
			continue // another address has not been tried since the last session
		}
		s.mu.Lock()
		s.nextDial = s.clk.Now().Add(wait) // Status: the operator sees when, and why
		s.dialErr = ""
		if err != nil {
			s.dialErr = err.Error()
		}
		s.mu.Unlock()
		t := s.clk.NewTimer(wait)
		select {
		case <-s.ctx().Done():
			t.Stop()
			return
		case <-s.redial:
			// Demoted during the backoff (promoted and demoted again, as
			// in a switchover back): the peer is the primary now.
			t.Stop()
			sched.reset()
		case <-t.C():
		}
		s.mu.Lock()
		s.nextDial, s.dialErr = time.Time{}, ""
		s.mu.Unlock()
	}
}

// setLastErrLocked keeps err as Status.LastError, with when it happened.
func (s *Store) setLastErrLocked(err error) {
	s.lastErr, s.lastErrAt = err, s.clk.Now()
}

// refusal reports whether a session ended because it was refused: by the
// primary (a reject frame: its store cannot be read, the pair key, a
// mode), or by this store, whose disk failed under a snapshot. A refused
// session is no progress, however far it ran.
func refusal(err error) bool {
	var sio *snapshotIOError
	return errors.Is(err, ErrRejected) || errors.As(err, &sio)
}

// dialSchedule is the dial loop's timing, kept apart from the network and
// the clock so that it is tested as a script (dialschedule_test.go).
//
// After an attempt that made progress (a session that ran and was not
// refused) the next one follows backoffMin later. Attempts that made no
// progress move on to the next address at once until every address has
// failed in a row; then the loop waits, backoffMin the first time and
// twice as long each time after, up to backoffMax. Progress, or a
// demotion (reset), starts the schedule again from its minimum.
type dialSchedule struct {
	addrs  int           // the peer addresses, tried in turn
	wait   time.Duration // the next wait once every address has failed
	failed int           // attempts without progress since the last wait
}

func newDialSchedule(addrs int) *dialSchedule {
	return &dialSchedule{addrs: max(addrs, 1), wait: backoffMin}
}

// ended records how an attempt ended and returns how long to wait before
// the next one: 0 for at once.
func (d *dialSchedule) ended(progressed bool) time.Duration {
	if progressed {
		d.reset()
		return backoffMin
	}
	d.failed++
	if d.failed < d.addrs {
		return 0
	}
	w := d.wait
	d.wait = min(d.wait*2, backoffMax)
	d.failed = 0
	return w
}

// reset starts the schedule again: the peer changed role, or a session
// made progress.
func (d *dialSchedule) reset() { d.wait, d.failed = backoffMin, 0 }

// keepAlive is both sides' TCP keepalive: probes after DeadSessionAfter/2
// idle, every DeadSessionAfter/2, 3 unanswered end the connection (Linux
// counts these times in whole seconds, so at least 1 s each).
func (s *Store) keepAlive() net.KeepAliveConfig {
	probe := max(s.o.DeadSessionAfter/2, time.Second)
	return net.KeepAliveConfig{Enable: true, Idle: probe, Interval: probe, Count: 3}
}

// dialer makes the secondary's connections. A cut cable sends no FIN, so
// the kernel must find a dead peer by itself: the dial gives up after
// DeadSessionAfter; while the secondary's acks (or, idle, its re-acks and
// keepalive probes) go unacknowledged for DeadSessionAfter,
// TCP_USER_TIMEOUT fails the connection. Only the secondary's side sets
// it: its sends are small and never fill a window, so the timer measures
// the link, never a slow disk on the other side.
func (s *Store) dialer() *net.Dialer {
	dead := s.o.DeadSessionAfter
	return &net.Dialer{
		Timeout:         dead,
		KeepAliveConfig: s.keepAlive(),
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(dead/time.Millisecond))
			})
			if err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("TCP_USER_TIMEOUT: %w", serr)
			}
			return nil
		},
	}
}

// rejectLogEvery bounds the log of rejections of one class (kind and root
// cause, such as "auth" and ErrAuth) to a line per period: a peer with the
// wrong key or mode, or anything else knocking on the port, is refused at
// every reconnect (every 2 s at most), which would fill the log. Each
// rejection is still counted (Status.Counters) and reported as an event
// with its reason; the line says how many went unlogged.
const rejectLogEvery = time.Minute

// rootErr is the innermost error of err's chain (the sentinel a reason
// wraps).
func rootErr(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

type rejectLog struct {
	logged     time.Time // last logged
	suppressed uint64    // rejections since, not logged
}

func (s *Store) reject(kind string, err error) {
	s.mu.Lock()
	switch kind {
	case "auth":
		s.counters.RejectedAuth++
	case "version":
		s.counters.RejectedVersion++
	case "mode":
		s.counters.RejectedMode++
	default:
		s.counters.RejectedFrames++
	}
	s.setLastErrLocked(err)
	now := s.clk.Now()
	if s.rejectLogs == nil {
		s.rejectLogs = map[string]*rejectLog{}
	}
	class := kind + ": " + rootErr(err).Error() // e.g. "frame: wip: frame CRC mismatch"
	rl := s.rejectLogs[class]
	if rl == nil {
		if len(s.rejectLogs) >= 64 { // classes are few; bound them all the same
			clear(s.rejectLogs)
		}
		rl = &rejectLog{}
		s.rejectLogs[class] = rl
	}
	logIt := rl.logged.IsZero() || now.Sub(rl.logged) >= rejectLogEvery
	suppressed := rl.suppressed
	if logIt {
		rl.logged, rl.suppressed = now, 0
	} else {
		rl.suppressed++
	}
	s.mu.Unlock()
	if logIt {
		fields := []zap.Field{zap.String("kind", kind), zap.Error(err)}
		if suppressed > 0 {
			fields = append(fields, zap.Uint64("not_logged_since_last", suppressed))
		}
		s.log.Warn("replication frame rejected", fields...)
	}
	if kind == "mode" {
		s.emit(Event{Kind: EventModeMismatch, Detail: err.Error(), Err: err})
		return
	}
	s.emit(Event{Kind: EventRejected, Detail: kind, Err: err})
}

func writeFrame(w *bufio.Writer, ver, typ byte, body []byte) error {
	if _, err := w.Write(appendFrame(nil, ver, typ, body)); err != nil {
		return err
	}
	return nil
}

// refusedKey is a secondary's reject of a welcome whose mac its pair key
// does not match.
const refusedKey = "the welcome's mac does not match this secondary's pair key"

// rejectText is a Reject frame's reason as this node logs and shows it:
// valid UTF-8, at most maxRejectText bytes. The body comes from a peer
// that may not have authenticated yet, and a frame may hold 64 MiB.
func rejectText(body []byte) string {
	const maxRejectText = 512
	t := strings.ToValidUTF8(string(body[:min(len(body), maxRejectText)]), "?")
	if len(body) > maxRejectText {
		t += fmt.Sprintf("... (%d bytes)", len(body))
	}
	return t
}

func sendReject(c net.Conn, ver byte, reason string) {
	_, _ = c.Write(appendFrame(nil, ver, frameReject, []byte(reason)))
}

func (s *Store) mac(label string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, s.o.PairKey)
	m.Write([]byte(label))
	for _, p := range parts {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(p)))
		m.Write(l[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

func (s *Store) lineageLocked() lineage {
	return lineage{epoch: s.epoch, lsn: s.durable, csum: s.csumAt(s.durable), inconsistent: s.inconsistent,
		outdated: s.outdated, history: append([]histEntry(nil), s.history...)}
}

// csumAt returns the rolling checksum after lsn as the caller's view of
// s.durable (the committer may have moved s.csum ahead of durable).
func (s *Store) csumAt(lsn uint64) uint64 {
	if lsn == s.lsn {
		return s.csum
	}
	for _, g := range s.tail {
		for _, e := range g.entries {
			if e.lsn == lsn {
				return e.csum
			}
		}
	}
	if c, ok := s.logCsum(lsn); ok {
		return c
	}
	return 0
}

// logCsum looks lsn up in the retained log or the pruned marker.
func (s *Store) logCsum(lsn uint64) (uint64, bool) {
	if lsn == 0 {
		return 0, true
	}
	v, c, err := s.db.Get(logKey(lsn))
	if err == nil {
		defer c.Close()
		if e, err := decodeLogValue(lsn, v); err == nil {
			return e.csum, true
		}
		return 0, false
	}
	if p, ok, _ := s.getMeta(keyPruned); ok && len(p) == 24 && binary.BigEndian.Uint64(p[8:]) == lsn {
		return binary.BigEndian.Uint64(p[16:]), true
	}
	return 0, false
}

// servePeer is the primary's side of one connection.
func (s *Store) servePeer(c net.Conn) {
	wd := s.clk.AfterFunc(handshakeTimeout, func() { _ = c.Close() })
	br := bufio.NewReaderSize(c, 256<<10)
	f, _, err := readFrame(br, nil)
	if err != nil {
		wd.Stop()
		if isFrameErr(err) {
			s.reject("frame", fmt.Errorf("handshake from %s: %w", c.RemoteAddr(), err))
			sendReject(c, 1, err.Error())
		} else {
			// Closed or reset before a frame began, or silent past the
			// handshake timeout: a peer that went away (a restart, a
			// kill), or a port scan. No frame to reject or count.
			s.log.Debug("replication connection ended before its hello", zap.Stringer("from", c.RemoteAddr()), zap.Error(err))
		}
		_ = c.Close()
		return
	}
	if f.typ != frameHello {
		wd.Stop()
		err := fmt.Errorf("handshake from %s: %w: expected hello, got type %d", c.RemoteAddr(), ErrFrameType, f.typ)
		s.reject("frame", err)
		sendReject(c, 1, err.Error())
		_ = c.Close()
		return
	}
	helloBody := append([]byte(nil), f.body...)
	h, err := decodeHello(helloBody, 0)
	if err != nil {
		wd.Stop()
		s.reject("frame", fmt.Errorf("hello from %s: %w", c.RemoteAddr(), err))
		sendReject(c, 1, err.Error())
		_ = c.Close()
		return
	}
	ver := min(h.maxVer, s.maxVersion())
	if ver < max(h.minVer, byte(minProtocolVersion)) {
		wd.Stop()
		err := fmt.Errorf("%w: peer %s speaks %d..%d, this build %d..%d", ErrFrameVersion, c.RemoteAddr(), h.minVer, h.maxVer, minProtocolVersion, s.maxVersion())
		s.reject("version", err)
		sendReject(c, 1, err.Error())
		_ = c.Close()
		return
	}
	s.mu.Lock()
	if s.role != Primary || s.closed {
		s.mu.Unlock()
		wd.Stop()
		sendReject(c, ver, "not primary")
		_ = c.Close()
		return
	}
	my := s.lineageLocked()
	s.mu.Unlock()
	w := hello{nodeID: s.o.NodeID, minVer: ver, maxVer: ver, lin: my}
	if ver >= 2 {
		w.mode = wireMode(s.o.Mode)
	}
	_, _ = rand.Read(w.nonce[:])
	wb := appendHello(nil, w)
	wb = append(wb, s.mac("tandem-wip welcome", helloBody, wb)...)
	if _, err := c.Write(appendFrame(nil, ver, frameWelcome, wb)); err != nil {
		wd.Stop()
		_ = c.Close()
		return
	}
	f, _, err = readFrame(br, nil)
	if err == nil && f.typ == frameReject {
		// The secondary checked the welcome's mac against its key.
		wd.Stop()
		s.reject("auth", fmt.Errorf("%w: peer %s (node %d) refused this node's welcome: %s", ErrAuth, c.RemoteAddr(), h.nodeID, rejectText(f.body)))
		_ = c.Close()
		return
	}
	if err == nil && f.typ != frameAuth {
		err = fmt.Errorf("%w: expected auth, got type %d", ErrFrameType, f.typ)
	}
	if err != nil {
		wd.Stop()
		if !isFrameErr(err) {
			// A secondary of a build before refusedKey hangs up on a
			// welcome it cannot check, without a word.
			err = fmt.Errorf("no auth after the welcome (a secondary without the pair key, or one that stopped): %w", err)
		}
		s.reject("frame", fmt.Errorf("handshake from %s (node %d): %w", c.RemoteAddr(), h.nodeID, err))
		_ = c.Close()
		return
	}
	peerMode, authMAC, err := decodeAuth(f.body, ver)
	if err != nil {
		wd.Stop()
		s.reject("frame", fmt.Errorf("auth from %s: %w", c.RemoteAddr(), err))
		sendReject(c, ver, err.Error())
		_ = c.Close()
		return
	}
	if !hmac.Equal(authMAC, s.mac("tandem-wip auth", authParts(ver, helloBody, wb, peerMode)...)) {
		wd.Stop()
		err := fmt.Errorf("%w: peer %s (node %d) does not hold the pair key", ErrAuth, c.RemoteAddr(), h.nodeID)
		s.reject("auth", err)
		sendReject(c, ver, "authentication failed")
		_ = c.Close()
		return
	}
	if ver >= 2 && peerMode != wireMode(s.o.Mode) {
		wd.Stop()
		err := errModeMismatch(wireMode(s.o.Mode), peerMode, fmt.Sprintf("%s, node %d", c.RemoteAddr(), h.nodeID))
		s.reject("mode", err)
		sendReject(c, ver, err.Error())
		_ = c.Close()
		return
	}
	if !wd.Stop() {
		_ = c.Close()
		return
	}
	ss := &session{s: s, conn: c, primary: true, done: make(chan struct{})}
	s.mu.Lock()
	if s.role != Primary || s.closed {
		s.mu.Unlock()
		sendReject(c, ver, "not primary")
		_ = c.Close()
		return
	}
	p := s.planLocked(h.lin)
	if refusal := s.snapRefusalLocked(p); refusal != "" {
		first := s.snapRefusals == 1
		s.mu.Unlock()
		if first {
			s.log.Warn("refusing the peer's snapshots: the last one failed reading this store, and its corruption report stands",
				zap.Uint8("peer", h.nodeID), zap.String("snapshot_error", refusal))
		}
		sendReject(c, ver, "the primary cannot send a complete snapshot: "+refusal)
		_ = c.Close()
		return
	}
	old := s.sess
	s.sess = ss
	s.peerLSN = h.lin.lsn
	s.peerAcked = min(h.lin.lsn, s.durable)
	if p.kind == planSnapshot {
		s.peerState = PeerSnapshot
	} else {
		s.peerState = PeerCatchingUp
	}
	s.counters.Sessions++
	s.mu.Unlock()
	if old != nil {
		old.close(errors.New("wip: replaced by a new session"))
	}
	s.log.Info("peer connected", zap.Uint8("peer", h.nodeID), zap.Uint64("peer_lsn", h.lin.lsn),
		zap.Uint8("plan", p.kind), zap.String("detail", p.detail))
	s.emit(Event{Kind: EventSessionStarted, Detail: fmt.Sprintf("secondary node %d at LSN %d, protocol version %d", h.nodeID, h.lin.lsn, ver)})
	err = s.runPrimarySession(ss, ver, br, p)
	ss.close(err)
	s.mu.Lock()
	if s.sess == ss {
		s.sess = nil
		s.peerState = PeerDisconnected
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.log.Info("peer session ended", zap.Error(err))
}

// epochAt is the epoch in force at lsn according to h.
func epochAt(h []histEntry, lsn uint64) uint64 {
	var e uint64
	for _, x := range h {
		if x.first <= lsn {
			e = x.epoch
		}
	}
	return e
}

// forkPoint returns the first LSN <= upTo at which the two histories assign
// different epochs, or 0.
func forkPoint(a, b []histEntry, upTo uint64) uint64 {
	var pts []uint64
	for _, x := range append(append([]histEntry(nil), a...), b...) {
		if x.first <= upTo {
			pts = append(pts, x.first)
		}
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i] < pts[j] })
	for _, p := range pts {
		if epochAt(a, p) != epochAt(b, p) {
			return p
		}
	}
	return 0
}

func epochsIn(h []histEntry, from, to uint64) []uint64 {
	var out []uint64
	for i, x := range h {
		end := uint64(1<<64 - 1)
		if i+1 < len(h) {
			end = h[i+1].first - 1
		}
		if x.first <= to && end >= from {
			out = append(out, x.epoch)
		}
	}
	return out
}

// planLocked compares the peer's lineage with ours (section 5 of the
// architecture): same history → stream; behind inside the retained log →
// stream from there; beyond it or inconsistent → snapshot; a history the
// primary never had → diverged.
func (s *Store) planLocked(l lineage) plan {
	p := plan{primaryLSN: s.durable, peerOutdated: s.peerOutdated}
	if l.inconsistent {
		p.kind, p.detail = planSnapshot, "peer is inconsistent"
		return p
	}
	if f := forkPoint(s.history, l.history, l.lsn); f != 0 {
		p.kind, p.from = planDiverged, f
		p.detail = fmt.Sprintf("peer committed LSN %d..%d in epochs %v; this primary has epoch %d from LSN %d (epochs %v)",
			f, l.lsn, epochsIn(l.history, f, l.lsn), epochAt(s.history, f), f, epochsIn(s.history, f, s.durable))
		return p
	}
	if l.lsn > s.durable && l.lsn <= s.lsn {
		// The peer holds a group this primary sent and is still writing
		// (a group goes to the peer before the local fsync): of this
		// lineage if its checksum is the one in the tail, and then the
		// stream goes on after it.
		if c, ok := s.tailCsumLocked(l.lsn); ok && c == l.csum {
			p.kind, p.from = planStream, l.lsn+1
			p.detail = fmt.Sprintf("stream from LSN %d (the peer holds up to %d, which this primary is still writing; durable here %d)", l.lsn+1, l.lsn, s.durable)
			return p
		}
	}
	if l.lsn > s.durable {
		p.kind, p.from = planDiverged, s.durable+1
		p.detail = fmt.Sprintf("peer holds LSN %d..%d (epochs %v) that this primary never committed (its last is %d, epoch %d)",
			s.durable+1, l.lsn, epochsIn(l.history, s.durable+1, l.lsn), s.durable, s.epoch)
		return p
	}
	if c, ok := s.logCsumLocked(l.lsn); ok && c != l.csum {
		var from uint64 = 1
		for _, x := range l.history {
			if x.first <= l.lsn {
				from = x.first
			}
		}
		p.kind, p.from = planDiverged, from
		p.detail = fmt.Sprintf("checksum at LSN %d differs (peer %016x, primary %016x) in epoch %d: LSN %d..%d quarantined",
			l.lsn, l.csum, c, epochAt(l.history, l.lsn), from, l.lsn)
		return p
	}
	first, _, _, _ := s.retainedRange()
	if streamable(l.lsn, s.durable, first) {
		p.kind, p.from = planStream, l.lsn+1
		p.detail = fmt.Sprintf("stream from LSN %d", l.lsn+1)
		return p
	}
	p.kind = planSnapshot
	p.detail = fmt.Sprintf("peer LSN %d is outside the retained log (from %d)", l.lsn, first)
	return p
}

// snapRefusalLocked is why the primary refuses plan p ("" when it does
// not): a snapshot that failed reading the store reads to the same bad
// block the next time, and a full read of the store every few seconds
// on the active, for nothing, is what the peer's retries would cost. So
// while the corruption that the failed snapshot reported stands (on a
// primary, until the store is repaired or reopened), the peer's
// snapshots are refused at once; the peer stays Inconsistent and says
// why. A report of another corruption since, or none, tries again.
func (s *Store) snapRefusalLocked(p plan) string {
	if p.kind != planSnapshot || s.snapFailed == "" {
		return ""
	}
	if desc, _, _ := s.corr.state(); desc == "" || desc != s.snapFailedAt {
		s.snapFailed = ""
		return ""
	}
	s.snapRefusals++
	return fmt.Sprintf("its last one failed (%s), and it does not try again while its store reports that corruption", s.snapFailed)
}

// streamable reports whether a peer holding up to lsn can be caught up
// from the retained log (which starts at first, 0 when empty) of a store
// durable up to durable: it holds everything, or the log holds lsn+1 on.
func streamable(lsn, durable, first uint64) bool {
	return lsn == durable || (first != 0 && first <= lsn+1)
}

// tailFromLocked is the index of the first group of the tail that holds
// lsn or later ones (len(s.tail) if none). The tail can hold tens of
// thousands of groups: a binary search, not a scan under the lock.
func (s *Store) tailFromLocked(lsn uint64) int {
	return sort.Search(len(s.tail), func(i int) bool { return s.tail[i].last() >= lsn })
}

// tailCsumLocked is the rolling checksum after lsn as the tail holds it
// (groups not yet acknowledged by the peer, durable here or not).
func (s *Store) tailCsumLocked(lsn uint64) (uint64, bool) {
	i := s.tailFromLocked(lsn)
	if i == len(s.tail) {
		return 0, false
	}
	for _, e := range s.tail[i].entries {
		if e.lsn == lsn {
			return e.csum, true
		}
	}
	return 0, false
}

func (s *Store) logCsumLocked(lsn uint64) (uint64, bool) {
	if lsn == s.durable {
		return s.csumAt(lsn), true
	}
	return s.logCsum(lsn)
}

// runPrimarySession sends the plan, a snapshot if needed, then streams
// entries; a second goroutine reads the cumulative acks.
func (s *Store) runPrimarySession(ss *session, ver byte, br *bufio.Reader, p plan) (err error) {
	bw := bufio.NewWriterSize(ss.conn, 256<<10)
	if err := writeFrame(bw, ver, framePlan, appendPlan(nil, p)); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if p.kind == planDiverged {
		s.mu.Lock()
		s.counters.Divergences++
		s.mu.Unlock()
		// The peer quarantines its suffix and comes back inconsistent.
		_, _, _ = readFrame(br, nil)
		return fmt.Errorf("%w: %s", ErrDiverged, p.detail)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ss.close(s.readAcks(ss, br))
	}()
	snapshotting := false // sendSnapshot is under way
	defer func() {
		// A read of the store failed: the secondary is told why its
		// snapshot or catch-up ends (its Status.LastError), and backs
		// off before it asks again.
		var rf *storeReadError
		if errors.As(err, &rf) {
			if writeFrame(bw, ver, frameReject, []byte("the primary cannot read its store: "+rf.Error())) == nil {
				_ = bw.Flush()
			}
			if snapshotting {
				desc, _, _ := s.corr.state()
				s.mu.Lock()
				s.snapFailed, s.snapFailedAt, s.snapRefusals = rf.Error(), desc, 0
				s.mu.Unlock()
			}
		}
		// The reader waits for acks until the connection closes: a
		// sender that stops on an error of its own closes it, or both
		// sides would wait for each other.
		ss.close(err)
		wg.Wait()
	}()
	next := p.from
	if p.kind == planSnapshot {
		snapshotting = true
		lsn, err := s.sendSnapshot(ss, bw, ver)
		if err != nil {
			return err
		}
		snapshotting = false
		next = lsn + 1
	}
	return s.stream(ss, bw, ver, next)
}

func (s *Store) readAcks(ss *session, br *bufio.Reader) error {
	for {
		f, _, err := readFrame(br, nil)
		if err != nil {
			if !ss.closed() && isFrameErr(err) {
				s.reject("frame", fmt.Errorf("from peer: %w", err))
			}
			return err
		}
		switch f.typ {
		case frameAck:
			if len(f.body) != 8 {
				err := fmt.Errorf("%w: ack body has %d bytes", ErrFrameMalformed, len(f.body))
				s.reject("frame", err)
				return err
			}
			lsn := binary.BigEndian.Uint64(f.body)
			s.mu.Lock()
			if lsn > s.lsn {
				s.mu.Unlock()
				err := fmt.Errorf("%w: ack for LSN %d beyond last assigned %d", ErrFrameMalformed, lsn, s.lsn)
				s.reject("frame", err)
				return err
			}
			if lsn > s.peerAcked {
				s.peerAcked = lsn
			}
			s.notePeerHolds(lsn)
			s.peerLastSeen = s.clk.Now()
			s.releaseLocked()
			s.cond.Broadcast()
			inSync, ok := s.confirmInSyncLocked()
			s.mu.Unlock()
			if ok {
				s.emitInSync(inSync)
			}
		case frameReject:
			return fmt.Errorf("%w: %s", ErrRejected, rejectText(f.body))
		default:
			err := fmt.Errorf("%w: type %d from a secondary", ErrFrameType, f.typ)
			s.reject("frame", err)
			return err
		}
	}
}

// stream sends entries from next on: from the in-memory tail when it holds
// them, else from the retained log.
func (s *Store) stream(ss *session, bw *bufio.Writer, ver byte, next uint64) error {
	var buf []byte
	for {
		s.mu.Lock()
		var es []entry
		var fromDisk bool
		var inSync bool
		var inSyncLSN, durable uint64
		for {
			if ss.closed() {
				s.mu.Unlock()
				return ss.err
			}
			if ss.inSyncPending {
				inSync, inSyncLSN = true, ss.inSyncLSN
				ss.inSyncPending = false
				break
			}
			es, fromDisk = s.collectLocked(next)
			durable = s.durable
			if len(es) > 0 || fromDisk {
				break
			}
			if bw.Buffered() > 0 {
				break
			}
			// Caught up: the peer is live from now on.
			if s.peerState != PeerInSync {
				if lsn, ok := s.goInSyncLocked(ss, next-1); ok {
					s.mu.Unlock()
					s.emitInSync(lsn)
					s.mu.Lock()
				}
				continue
			}
			s.cond.Wait()
		}
		s.mu.Unlock()
		if inSync {
			if err := writeFrame(bw, ver, frameInSync, putU64(nil, inSyncLSN)); err != nil {
				return err
			}
			continue
		}
		if fromDisk {
			var err error
			es, err = s.readLog(next, maxDataFrame)
			if err != nil {
				return err
			}
		}
		if len(es) == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
			continue
		}
		buf = appendData(buf[:0], es, ver, durable)
		if !s.output() {
			return errOutputStopped
		}
		if err := writeFrame(bw, ver, frameData, buf); err != nil {
			return err
		}
		next = es[len(es)-1].lsn + 1
		s.mu.Lock()
		s.counters.EntriesSent += uint64(len(es))
		s.mu.Unlock()
	}
}

// goInSyncLocked marks the peer in sync once the stream has sent it every
// LSN up to sent: from now on commits wait for it again, and the peer is
// told which LSN ends the part it missed so it can clear its Outdated flag
// once it holds it. The peer is shown in sync when it has acked sent
// (confirmInSyncLocked); ok reports that it already has.
func (s *Store) goInSyncLocked(ss *session, sent uint64) (lsn uint64, ok bool) {
	s.peerState, s.cannotAck = PeerInSync, ""
	ss.inSyncPending, ss.inSyncLSN = true, s.aloneLSN
	s.syncAckLSN, s.syncShown = sent, false
	s.log.Info("peer caught up; waiting for its ack", zap.Uint64("sent", sent), zap.Uint64("acked", s.peerAcked))
	return s.confirmInSyncLocked()
}

// confirmInSyncLocked shows the peer in sync once it has acked what the
// stream had sent when it caught up. If commits were acknowledged without
// the peer, the persisted flag that says so is cleared: the peer holds
// them now. ok reports the change; the caller emits EventPeerInSync
// (emitInSync) off the lock.
func (s *Store) confirmInSyncLocked() (lsn uint64, ok bool) {
	if s.role != Primary || s.peerState != PeerInSync || s.syncShown || s.peerAcked < s.syncAckLSN {
		return 0, false
	}
	s.syncShown = true
	if s.peerOutdated {
		s.peerOutdated = false
		// Persist off the lock; a crash before it lands keeps the peer
		// Outdated, which is the safe side.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			pb := s.db.NewBatch()
			_ = pb.Delete(keyPeerOutdated, nil)
			if err := s.syncCommitMeta("peer-outdated", pb); err != nil {
				s.log.Error("clearing peer-outdated", zap.Error(err))
			}
			_ = pb.Close()
		}()
	}
	s.log.Info("peer in sync", zap.Uint64("acked", s.peerAcked))
	return s.peerAcked, true
}

func (s *Store) emitInSync(lsn uint64) {
	s.emit(Event{Kind: EventPeerInSync, Detail: fmt.Sprintf("peer in sync at LSN %d", lsn)})
}

// collectLocked returns tail entries from next on (up to maxDataFrame bytes),
// or fromDisk when next lies before the tail but is durable.
func (s *Store) collectLocked(next uint64) (es []entry, fromDisk bool) {
	if next > s.lsn {
		return nil, false
	}
	if len(s.tail) == 0 || next < s.tail[0].first() {
		return nil, next <= s.durable
	}
	size := 0
	for _, g := range s.tail[s.tailFromLocked(next):] {
		for _, e := range g.entries {
			if e.lsn < next {
				continue
			}
			es = append(es, e)
			size += len(e.ops) + 24
			if size >= maxDataFrame {
				return es, false
			}
		}
	}
	return es, false
}

// storeReadError is a read of the primary's own store that failed while
// it served a session (a block it cannot read): the session ends, and the
// secondary is told why.
type storeReadError struct{ err error }

func (e *storeReadError) Error() string { return e.err.Error() }
func (e *storeReadError) Unwrap() error { return e.err }

// readLog reads consecutive entries from lsn on, up to max bytes.
func (s *Store) readLog(lsn uint64, maxBytes int) ([]entry, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(lsn), UpperBound: logPrefixEnd})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var es []entry
	size := 0
	for it.First(); it.Valid() && size < maxBytes; it.Next() {
		got := binary.BigEndian.Uint64(it.Key()[len(logPrefix):])
		if got != lsn {
			break
		}
		e, err := decodeLogValue(got, it.Value())
		if err != nil {
			return nil, err
		}
		es = append(es, e)
		size += len(e.ops) + 24
		lsn++
	}
	if err := it.Error(); err != nil {
		// Not the end of the retained log: a block it could not read.
		return nil, &storeReadError{fmt.Errorf("wip: reading the log at LSN %d: %w", lsn, s.readErr(err))}
	}
	if len(es) == 0 {
		return nil, fmt.Errorf("wip: LSN %d is no longer in the retained log; the peer needs a snapshot", lsn)
	}
	return es, nil
}

// sendSnapshot streams a pebble snapshot of the user keys and returns its LSN.
func (s *Store) sendSnapshot(ss *session, bw *bufio.Writer, ver byte) (uint64, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	var l lineage
	if v, c, err := snap.Get(keyMarker); err == nil {
		l.epoch, l.lsn, l.csum = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), binary.BigEndian.Uint64(v[16:])
		_ = c.Close()
	}
	s.mu.Lock()
	for _, h := range s.history {
		if h.first <= l.lsn || len(l.history) == 0 {
			l.history = append(l.history, h)
		}
	}
	s.counters.Snapshots++
	s.mu.Unlock()
	total, _ := s.db.EstimateDiskUsage(userPrefix, userPrefixEnd)
	s.mu.Lock()
	s.snapOutDone, s.snapOutTotal = 0, int64(total)
	s.mu.Unlock()
	body := appendLineage(nil, l)
	body = putU64(body, total)
	if err := writeFrame(bw, ver, frameSnapBegin, body); err != nil {
		return 0, err
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: userPrefix, UpperBound: userPrefixEnd})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	var chunk []byte
	var n, count uint32
	var pairs uint64
	flush := func() error {
		if n == 0 {
			return nil
		}
		b := putU32(make([]byte, 0, 4+len(chunk)), n)
		b = append(b, chunk...)
		if err := writeFrame(bw, ver, frameSnapChunk, b); err != nil {
			return err
		}
		s.mu.Lock()
		s.counters.SnapshotBytesOut += uint64(len(b))
		s.snapOutDone += int64(len(b))
		s.mu.Unlock()
		chunk, n = chunk[:0], 0
		return nil
	}
	for it.First(); it.Valid(); it.Next() {
		if ss.closed() {
			return 0, ss.err
		}
		chunk = putBytes(chunk, it.Key()[len(userPrefix):])
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, &storeReadError{fmt.Errorf("wip: snapshot: reading %q: %w", it.Key()[len(userPrefix):], s.readErr(err))}
		}
		chunk = putBytes(chunk, v)
		n++
		count++
		pairs++
		if len(chunk) >= snapChunkBytes {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	// An iterator that meets a block it cannot read (a bad checksum, an
	// I/O error) ends as if the keys ended: without this check the peer
	// would take the keys before it for the whole store, and clear its
	// Inconsistent flag without the rest.
	if err := it.Error(); err != nil {
		return 0, &storeReadError{fmt.Errorf("wip: snapshot: reading the store after %d pairs: %w", pairs, s.readErr(err))}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	if err := writeFrame(bw, ver, frameSnapEnd, putU64(nil, pairs)); err != nil {
		return 0, err
	}
	return l.lsn, bw.Flush()
}

// runSecondary is the secondary's side of one connection. ran reports that
// the handshake completed (the backoff restarts from its minimum).
func (s *Store) runSecondary(c net.Conn) (ran bool, err error) {
	defer c.Close()
	wd := s.clk.AfterFunc(handshakeTimeout, func() { _ = c.Close() })
	defer wd.Stop()
	s.mu.Lock()
	my := s.lineageLocked()
	s.mu.Unlock()
	h := hello{nodeID: s.o.NodeID, minVer: minProtocolVersion, maxVer: s.maxVersion(), lin: my}
	_, _ = rand.Read(h.nonce[:])
	hb := appendHello(nil, h)
	// Hello always goes out in version-1 framing so any version can read it.
	if _, err := c.Write(appendFrame(nil, 1, frameHello, hb)); err != nil {
		return false, err
	}
	br := bufio.NewReaderSize(c, 256<<10)
	f, _, err := readFrame(br, nil)
	if err != nil {
		err = fmt.Errorf("welcome from %s: %w", c.RemoteAddr(), err)
		if isFrameErr(err) {
			s.reject("frame", err)
		} // else the primary went away (closed, reset): the dial loop says so (Status.DialError)
		return false, err
	}
	if f.typ == frameReject {
		return false, fmt.Errorf("%w: %s", ErrRejected, rejectText(f.body))
	}
	if f.typ != frameWelcome {
		err := fmt.Errorf("%w: expected welcome, got type %d", ErrFrameType, f.typ)
		s.reject("frame", err)
		return false, err
	}
	ver := f.version
	if ver < minProtocolVersion || ver > s.maxVersion() {
		err := fmt.Errorf("%w: primary chose %d, this build speaks %d..%d", ErrFrameVersion, ver, minProtocolVersion, s.maxVersion())
		s.reject("version", err)
		return false, err
	}
	wbFull := append([]byte(nil), f.body...)
	w, err := decodeHello(wbFull, ver)
	if err == nil && (w.minVer != ver || w.maxVer != ver) {
		err = fmt.Errorf("%w: welcome names version %d..%d in a version %d frame", ErrFrameMalformed, w.minVer, w.maxVer, ver)
	}
	if err != nil {
		s.reject("frame", fmt.Errorf("welcome from %s: %w", c.RemoteAddr(), err))
		return false, err
	}
	wb := wbFull[:len(wbFull)-32]
	if !hmac.Equal(w.mac, s.mac("tandem-wip welcome", hb, wb)) {
		err := fmt.Errorf("%w: primary %s (node %d) does not hold the pair key", ErrAuth, c.RemoteAddr(), w.nodeID)
		s.reject("auth", err)
		// Said, not only hung up on: the primary counts and logs it as
		// what it is (see servePeer).
		sendReject(c, ver, refusedKey)
		return false, err
	}
	// Auth goes out even when the modes differ, so that the primary sees
	// the secondary's mode and reports the mismatch on its side too.
	mode := wireMode(s.o.Mode)
	auth := s.mac("tandem-wip auth", authParts(ver, hb, wbFull, mode)...)
	if ver >= 2 {
		auth = append([]byte{mode}, auth...)
	}
	if _, err := c.Write(appendFrame(nil, ver, frameAuth, auth)); err != nil {
		return false, err
	}
	if ver >= 2 && w.mode != mode {
		err := errModeMismatch(w.mode, mode, fmt.Sprintf("%s, node %d", c.RemoteAddr(), w.nodeID))
		s.reject("mode", err)
		return false, err
	}
	f, _, err = readFrame(br, nil)
	if err == nil && f.typ == frameReject {
		return false, fmt.Errorf("%w: %s", ErrRejected, rejectText(f.body))
	}
	if err == nil && f.typ != framePlan {
		err = fmt.Errorf("%w: expected plan, got type %d", ErrFrameType, f.typ)
	}
	var p plan
	if err == nil {
		p, err = decodePlan(f.body)
	}
	if err != nil {
		s.reject("frame", fmt.Errorf("plan from %s: %w", c.RemoteAddr(), err))
		return false, err
	}
	if !wd.Stop() {
		return false, errors.New("wip: handshake timed out")
	}
	s.emit(Event{Kind: EventSessionStarted, Detail: fmt.Sprintf("primary node %d at LSN %d, protocol version %d", w.nodeID, p.primaryLSN, ver)})
	ss := &session{s: s, conn: c, done: make(chan struct{})}
	s.mu.Lock()
	if s.role != Secondary || s.closed {
		s.mu.Unlock()
		return true, ErrNotPrimary
	}
	if s.inconsistent && !my.inconsistent {
		// Marked Inconsistent during the handshake (a corruption found,
		// corrupt.go): the plan answers a lineage that no longer holds.
		s.mu.Unlock()
		return true, errors.New("wip: the store became inconsistent during the handshake")
	}
	s.sess = ss
	s.peerLSN = p.primaryLSN
	s.counters.Sessions++
	switch p.kind {
	case planSnapshot:
		s.peerState = PeerSnapshot
	default:
		s.peerState = PeerCatchingUp
	}
	s.mu.Unlock()
	defer func() {
		ss.close(err)
		s.mu.Lock()
		if s.sess == ss {
			s.sess = nil
			s.peerState = PeerDisconnected
		}
		s.cond.Broadcast()
		s.mu.Unlock()
	}()
	s.log.Info("connected to primary", zap.Uint8("primary", w.nodeID), zap.Uint64("primary_lsn", p.primaryLSN), zap.String("plan", p.detail))
	if p.peerOutdated && my.lsn < p.primaryLSN {
		if err := s.setFlag(keyOutdated, true); err != nil {
			return true, err
		}
		s.mu.Lock()
		s.outdated = true
		s.mu.Unlock()
		s.emit(Event{Kind: EventOutdated, Detail: fmt.Sprintf("primary acknowledged commits without this node; local LSN %d, primary %d", my.lsn, p.primaryLSN)})
	}
	switch p.kind {
	case planDiverged:
		return true, s.quarantine(p, w.lin)
	case planSnapshot:
		if err := s.receiveSnapshot(br); err != nil {
			return true, err
		}
	}
	// Ack what we hold at once: after a snapshot no entry may follow for a
	// while, and the primary must learn the peer holds the snapshot's LSN.
	s.mu.Lock()
	held := s.durable
	s.mu.Unlock()
	if !s.output() {
		return true, errOutputStopped
	}
	if _, err := c.Write(appendFrame(nil, ver, frameAck, putU64(nil, held))); err != nil {
		return true, err
	}
	return true, s.apply(ss, br, ver)
}

func (s *Store) setFlag(k []byte, on bool) error {
	pb := s.db.NewBatch()
	defer pb.Close()
	if on {
		_ = pb.Set(k, nil, nil)
	} else {
		_ = pb.Delete(k, nil)
	}
	return s.syncCommitMeta(string(k), pb)
}

// quarantine exports the losing suffix to a file, marks the store
// Inconsistent (the next session resyncs by snapshot) and reports I4.
func (s *Store) quarantine(p plan, primary lineage) error {
	s.mu.Lock()
	to := s.durable
	hist := append([]histEntry(nil), s.history...)
	s.mu.Unlock()
	if err := s.po.FS.MkdirAll(s.po.FS.PathJoin(s.dir, "quarantine"), 0o755); err != nil {
		return err
	}
	name := s.po.FS.PathJoin(s.dir, "quarantine", fmt.Sprintf("q-%d-lsn%d-%d.jsonl", s.clk.Now().UnixNano(), p.from, to))
	f, err := s.po.FS.Create(name, "")
	if err != nil {
		return fmt.Errorf("wip: quarantine file: %w", err)
	}
	type op struct {
		Op    string `json:"op"`
		Key   []byte `json:"key"`
		Value []byte `json:"value,omitempty"`
	}
	type rec struct {
		Header      string   `json:"header,omitempty"`
		Reason      string   `json:"reason,omitempty"`
		LocalEpochs []uint64 `json:"local_epochs,omitempty"`
		From        uint64   `json:"from_lsn,omitempty"`
		To          uint64   `json:"to_lsn,omitempty"`
		PrimaryEp   uint64   `json:"primary_epoch,omitempty"`
		LSN         uint64   `json:"lsn,omitempty"`
		Epoch       uint64   `json:"epoch,omitempty"`
		UnixNano    int64    `json:"unix_nano,omitempty"`
		Ops         []op     `json:"ops,omitempty"`
		Missing     string   `json:"missing,omitempty"`
	}
	enc := json.NewEncoder(f)
	_ = enc.Encode(rec{Header: "tandem-wip quarantine v1", Reason: p.detail, LocalEpochs: epochsIn(hist, p.from, to),
		From: p.from, To: to, PrimaryEp: primary.epoch})
	exported := uint64(0)
	for lsn := p.from; lsn <= to && p.from != 0; {
		es, err := s.readLog(lsn, 4<<20)
		if err != nil {
			_ = enc.Encode(rec{Missing: fmt.Sprintf("LSN %d..%d: %v", lsn, to, err)})
			break
		}
		for _, e := range es {
			if e.lsn > to {
				break
			}
			r := rec{LSN: e.lsn, Epoch: e.epoch, UnixNano: e.unixNano}
			_ = walkOps(e.ops, func(kind byte, k, v []byte) {
				o := op{Op: "set", Key: k, Value: v}
				if kind == opDelete {
					o.Op = "delete"
				}
				r.Ops = append(r.Ops, o)
			})
			_ = enc.Encode(r)
			exported++
			lsn = e.lsn + 1
		}
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("wip: quarantine file: %w", err)
	}
	_ = f.Close()
	if err := s.setFlag(keyInconsistent, true); err != nil {
		return err
	}
	err = fmt.Errorf("%w: %s; %d local batches exported to %s", ErrDiverged, p.detail, exported, name)
	s.mu.Lock()
	s.inconsistent = true
	s.counters.Divergences++
	s.setLastErrLocked(err)
	s.mu.Unlock()
	s.log.Error("histories diverged; losing suffix quarantined", zap.Error(err))
	s.emit(Event{Kind: EventDiverged, Err: err, Detail: p.detail, File: name})
	return err
}
