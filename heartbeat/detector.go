package heartbeat

import (
	"fmt"
	"time"
)

// EventKind names what an Event reports.
type EventKind uint8

// Event kinds.
const (
	// PeerAlive: the first valid heartbeat of a new round (one per
	// Interval, and one per urgent send), or any valid heartbeat while the
	// peer was not alive. It is reported whether or not the payload
	// changed: the reader counts the peer's silence from it. Event.Payload
	// is the latest payload, Event.Path the path it came on.
	PeerAlive EventKind = iota + 1
	// PeerSilent: no valid heartbeat on any path for DeadAfter (or none at
	// all within DeadAfter of Run's start). Event.LastSeen is the last
	// valid heartbeat (zero if none).
	PeerSilent
	// PathDown: no valid heartbeat on Event.Path for PathDeadAfter (or
	// none within PathDeadAfter of the start). An alarm, not a failover.
	PathDown
	// PathUp: the first valid heartbeat on Event.Path since it was down.
	PathUp
	// PeerRestarted: the peer's boot id grew: it restarted. Event.BootID is
	// the new one, Event.OldBootID the previous. A PeerAlive follows.
	PeerRestarted
	// BootRaised: this node's boot id was raised past the one the peer
	// last accepted from it (Config.BootID). Event.BootID is the new one,
	// Event.OldBootID the one this run started with (or had).
	BootRaised
)

func (k EventKind) String() string {
	switch k {
	case PeerAlive:
		return "peer-alive"
	case PeerSilent:
		return "peer-silent"
	case PathDown:
		return "path-down"
	case PathUp:
		return "path-up"
	case PeerRestarted:
		return "peer-restarted"
	case BootRaised:
		return "boot-raised"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is one verdict of the failure detector.
type Event struct {
	Kind EventKind
	// At is the injected clock's time of the verdict.
	At time.Time
	// Path names the path (PeerAlive, PathDown, PathUp).
	Path string
	// Payload is what the peer announced (PeerAlive).
	Payload Payload
	// LastSeen is the time of the last valid heartbeat (PeerSilent,
	// PathDown); zero when none ever arrived.
	LastSeen time.Time
	// BootID and OldBootID identify the peer's runs (PeerRestarted,
	// PeerAlive carries BootID), or this node's (BootRaised).
	BootID, OldBootID uint64
}

func (e Event) String() string {
	switch e.Kind {
	case PeerAlive:
		return fmt.Sprintf("%s path=%s epoch=%d role=%d committed=%d applied=%d health=%#x handover=%d/%d",
			e.Kind, e.Path, e.Payload.Epoch, e.Payload.Role, e.Payload.CommittedLSN, e.Payload.AppliedLSN,
			e.Payload.Health, e.Payload.Handover, e.Payload.Generation)
	case PathDown, PathUp:
		return fmt.Sprintf("%s path=%s", e.Kind, e.Path)
	case PeerRestarted, BootRaised:
		return fmt.Sprintf("%s boot=%#x old=%#x", e.Kind, e.BootID, e.OldBootID)
	}
	return e.Kind.String()
}

// liveness of a path or of the peer.
type liveness uint8

const (
	unknown liveness = iota // nothing heard yet, start+dead-after not reached
	alive
	dead
)

// replayWindow is the anti-replay window of one path (RFC 4303 section
// 3.4.3 style): the highest sequence accepted and a bitmap of the 64
// before it. Reordering within 64 datagrams is accepted once; anything
// older or seen before is a replay.
type replayWindow struct {
	highest uint64
	bits    uint64 // bit i set: highest-i accepted
	first   uint64 // first sequence accepted in this boot (loss baseline)
}

const windowSize = 64

// check reports whether seq is new, without recording it.
func (w *replayWindow) check(seq uint64) bool {
	if w.highest == 0 || seq > w.highest {
		return true
	}
	d := w.highest - seq
	if d >= windowSize {
		return false
	}
	return w.bits&(1<<d) == 0
}

// record marks seq accepted; check(seq) must have held.
func (w *replayWindow) record(seq uint64) {
	if w.highest == 0 {
		w.highest, w.bits, w.first = seq, 1, seq
		return
	}
	if seq > w.highest {
		shift := seq - w.highest
		if shift >= windowSize {
			w.bits = 0
		} else {
			w.bits <<= shift
		}
		w.bits |= 1
		w.highest = seq
		return
	}
	w.bits |= 1 << (w.highest - seq)
}

// loss is the fraction of the last (up to) 64 sequence numbers that never
// arrived.
func (w *replayWindow) loss() float64 {
	if w.highest == 0 {
		return 0
	}
	n := w.highest - w.first + 1
	if n > windowSize {
		n = windowSize
	}
	var got uint64
	for i := uint64(0); i < n; i++ {
		if w.bits&(1<<i) != 0 {
			got++
		}
	}
	return float64(n-got) / float64(n)
}

// Drops counts datagrams refused on one path, by reason.
type Drops struct {
	// Malformed: not a heartbeat datagram (length, magic, version, zero ids).
	Malformed uint64
	// Stranger: another pair's id, our own node id, or a source address
	// other than the path's Remote.
	Stranger uint64
	// BadMAC: the HMAC does not verify with our key and this path's address.
	BadMAC uint64
	// Replay: a sequence number already seen or older than the window, or
	// a boot id older than the peer's current one.
	Replay uint64
}

// PathStats is the state of one path as Stats reports it.
type PathStats struct {
	Name string
	// Up: valid heartbeats arrive on this path.
	Up bool
	// RTT is the smoothed round-trip time (RFC 6298 SRTT, gain 1/8),
	// measured with the echoed send times; zero until measured.
	RTT time.Duration
	// Loss is the fraction of the peer's last 64 datagrams on this path
	// that did not arrive (or were dropped).
	Loss float64
	// LastSeen is the receive time of the last valid heartbeat.
	LastSeen time.Time
	// Sent and Received count datagrams sent, and valid datagrams received.
	Sent, Received uint64
	// SendErrors counts failed sends (link down, no route).
	SendErrors uint64
	Dropped    Drops
}

// pathState is the detector's view of one path.
type pathState struct {
	name     string
	state    liveness
	lastSeen time.Time
	win      replayWindow
	received uint64
	sent     uint64
	sendErrs uint64
	drops    Drops
	srtt     time.Duration
	// echoTx is the peer's last TxNanos on this path, echoAt when we got it.
	echoTx uint64
	echoAt time.Time
}

// detector is the pure failure detector: no I/O, no goroutines, no clock
// reads. The caller gives it every authenticated datagram with its receive
// time (accept) and calls tick at (or after) next(); both return the
// verdicts that changed.
type detector struct {
	deadAfter, pathDeadAfter time.Duration
	start                    time.Time
	paths                    []pathState

	peer        liveness
	peerBoot    uint64
	lastSeen    time.Time
	lastPayload Payload
	lastRound   uint64 // round of lastPayload
	emitted     bool   // lastPayload was reported in a PeerAlive
	// rearm is set when a verdict turned alive, creating a deadline the
	// caller's timer may not cover yet; the caller clears it.
	rearm bool
}

func newDetector(names []string, deadAfter, pathDeadAfter time.Duration, start time.Time) *detector {
	d := &detector{deadAfter: deadAfter, pathDeadAfter: pathDeadAfter, start: start}
	d.paths = make([]pathState, len(names))
	for i, n := range names {
		d.paths[i].name = n
	}
	return d
}

// accept takes an authenticated datagram f received on path i at now. It
// returns ErrReplay (and changes nothing but the counter) for a replayed
// or stale datagram; otherwise the events it caused.
func (d *detector) accept(i int, f *frame, now time.Time, evs []Event) ([]Event, error) {
	p := &d.paths[i]
	switch {
	case f.BootID < d.peerBoot:
		p.drops.Replay++
		return evs, fmt.Errorf("%w: boot id %#x older than the peer's current %#x", ErrReplay, f.BootID, d.peerBoot)
	case f.BootID > d.peerBoot:
		if d.peerBoot != 0 {
			evs = append(evs, Event{Kind: PeerRestarted, At: now, BootID: f.BootID, OldBootID: d.peerBoot})
			d.emitted = false
		}
		d.lastRound = 0
		d.peerBoot = f.BootID
		for j := range d.paths {
			d.paths[j].win = replayWindow{}
			d.paths[j].echoTx, d.paths[j].echoAt = 0, time.Time{}
		}
	}
	if !p.win.check(f.Seq) {
		p.drops.Replay++
		return evs, fmt.Errorf("%w: sequence %d on path %s", ErrReplay, f.Seq, p.name)
	}
	p.win.record(f.Seq)
	p.received++
	p.lastSeen = now
	p.echoTx, p.echoAt = f.TxNanos, now
	if f.EchoNanos != 0 {
		ours := uint64(now.Sub(d.start))
		if rtt := int64(ours - f.EchoNanos - f.HoldNanos); ours > f.EchoNanos && rtt >= 0 && time.Duration(rtt) < 10*d.deadAfter {
			if p.srtt == 0 {
				p.srtt = time.Duration(rtt)
			} else {
				p.srtt += (time.Duration(rtt) - p.srtt) / 8
			}
		}
	}
	if p.state != alive {
		p.state = alive
		d.rearm = true
		evs = append(evs, Event{Kind: PathUp, At: now, Path: p.name})
	}
	d.lastSeen = now
	if f.Round >= d.lastRound {
		if f.Round > d.lastRound {
			// Every new round is reported, changed or not: a PeerAlive is
			// how the reader hears the peer now (the state machine's
			// silence and the active's lease count from it). Only the
			// same round on the other paths adds nothing.
			d.emitted = false
		}
		d.lastRound, d.lastPayload = f.Round, f.Payload
	}
	if d.peer != alive || !d.emitted {
		if d.peer != alive {
			d.rearm = true
		}
		d.peer = alive
		d.emitted = true
		evs = append(evs, Event{Kind: PeerAlive, At: now, Path: p.name, Payload: d.lastPayload, BootID: f.BootID})
	}
	return evs, nil
}

// tick returns the verdicts due at now.
func (d *detector) tick(now time.Time, evs []Event) []Event {
	for i := range d.paths {
		p := &d.paths[i]
		switch p.state {
		case alive:
			if now.Sub(p.lastSeen) >= d.pathDeadAfter {
				p.state = dead
				evs = append(evs, Event{Kind: PathDown, At: now, Path: p.name, LastSeen: p.lastSeen})
			}
		case unknown:
			if now.Sub(d.start) >= d.pathDeadAfter {
				p.state = dead
				evs = append(evs, Event{Kind: PathDown, At: now, Path: p.name})
			}
		}
	}
	switch d.peer {
	case alive:
		if now.Sub(d.lastSeen) >= d.deadAfter {
			d.peer = dead
			evs = append(evs, Event{Kind: PeerSilent, At: now, LastSeen: d.lastSeen})
		}
	case unknown:
		if now.Sub(d.start) >= d.deadAfter {
			d.peer = dead
			evs = append(evs, Event{Kind: PeerSilent, At: now})
		}
	}
	return evs
}

// next returns when tick has something to decide; the zero time when
// nothing is pending (every path and the peer dead: only a datagram can
// change a verdict).
func (d *detector) next() time.Time {
	var t time.Time
	min := func(c time.Time) {
		if t.IsZero() || c.Before(t) {
			t = c
		}
	}
	for i := range d.paths {
		switch d.paths[i].state {
		case alive:
			min(d.paths[i].lastSeen.Add(d.pathDeadAfter))
		case unknown:
			min(d.start.Add(d.pathDeadAfter))
		}
	}
	switch d.peer {
	case alive:
		min(d.lastSeen.Add(d.deadAfter))
	case unknown:
		min(d.start.Add(d.deadAfter))
	}
	return t
}

// echo returns what the next datagram on path i echoes: the peer's last
// send time there and how long we have held it.
func (d *detector) echo(i int, now time.Time) (tx, hold uint64) {
	p := &d.paths[i]
	if p.echoTx == 0 {
		return 0, 0
	}
	h := now.Sub(p.echoAt)
	if h < 0 {
		h = 0
	}
	return p.echoTx, uint64(h)
}

func (d *detector) stats(i int) PathStats {
	p := &d.paths[i]
	return PathStats{Name: p.name, Up: p.state == alive, RTT: p.srtt, Loss: p.win.loss(), LastSeen: p.lastSeen,
		Sent: p.sent, Received: p.received, SendErrors: p.sendErrs, Dropped: p.drops}
}
