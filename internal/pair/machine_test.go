package pair

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func testConfig(id uint8) Config {
	t, _ := Profile("default")
	return Config{NodeID: id, Timing: t}
}

func TestProfilesValidate(t *testing.T) {
	for _, name := range []string{"default", "fast"} {
		tm, err := Profile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := tm.Validate(); err != nil {
			t.Errorf("profile %s: %v", name, err)
		}
	}
	if _, err := Profile("turbo"); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "timing.profile") {
		t.Errorf("Profile(turbo) = %v", err)
	}
}

func TestTimingValidateNamesField(t *testing.T) {
	cases := []struct {
		set  map[string]time.Duration
		want string
	}{
		{map[string]time.Duration{"interval": 0}, "timing.interval: 0s: must be positive"},
		{map[string]time.Duration{"interval": 5 * time.Millisecond}, "timing.interval: 5ms: must be at least 10ms"},
		{map[string]time.Duration{"dead-after": 300 * time.Millisecond}, "timing.dead-after: 300ms: must exceed 3 x interval"},
		{map[string]time.Duration{"fence-after": 380 * time.Millisecond}, "must not exceed dead-after"},
		{map[string]time.Duration{"fence-after": 150 * time.Millisecond}, "timing.fence-after: 150ms: must be at least suspect-after + probe-timeout"},
		{map[string]time.Duration{"suspect-after": 50 * time.Millisecond}, "timing.suspect-after"},
		{map[string]time.Duration{"startup-wait": time.Millisecond * 100}, "timing.startup-wait"},
		{map[string]time.Duration{"health-hold": time.Millisecond * 100}, "timing.health-hold"},
		{map[string]time.Duration{"health-cooldown": time.Second}, "timing.health-cooldown"},
	}
	for _, c := range cases {
		tm, _ := Profile("default")
		for k, v := range c.set {
			if err := tm.Set(k, v); err != nil {
				t.Fatal(err)
			}
		}
		err := tm.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.set, err, c.want)
		}
	}
	tm, _ := Profile("default")
	if err := tm.Set("fence-aftr", time.Second); err == nil || !strings.Contains(err.Error(), "timing.fence-aftr: unknown setting") {
		t.Errorf("Set(fence-aftr) = %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	now := simStart
	if _, _, err := New(Config{NodeID: 3, Timing: testConfig(1).Timing}, Persisted{}, now); err == nil || !strings.Contains(err.Error(), "node-id: 3") {
		t.Errorf("node 3: %v", err)
	}
	if _, _, err := New(testConfig(1), Persisted{Role: RoleStopped}, now); !errors.Is(err, ErrBadPersisted) {
		t.Errorf("persisted role stopped: %v", err)
	}
}

func TestStepRejectsBadInput(t *testing.T) {
	m, _, err := New(testConfig(1), Persisted{}, simStart)
	if err != nil {
		t.Fatal(err)
	}
	now := simStart.Add(time.Second)
	bad := []struct {
		ev   Event
		want string
	}{
		{nil, "nil event"},
		{PeerAlive{Advert: Advert{Node: 1}}, "advert from node 1, which is this node"},
		{PeerAlive{Advert: Advert{Node: 7}}, "node 7"},
		{PeerAlive{Advert: Advert{Node: 2, Role: 9}}, "role 9"},
		{GatewayProbe{Seq: 999}, "gateway-probe: seq 999 was never issued"},
		{WitnessReply{Seq: 999}, "witness-reply: seq 999"},
		{PathDown{}, "path-down: empty path name"},
		{Replication{State: 42}, "replication: state 42"},
		{Admin{Cmd: 99}, "admin: unknown command 99"},
		{Admin{Cmd: AdminForcePromote}, "data-loss acknowledgement"},
		{Admin{Cmd: AdminSwitchover}, "switchover: this node is starting, neither active nor passive"},
		{ActionFailed{Kind: 200}, "action-failed: unknown action kind 200"},
	}
	before := m.Status()
	for _, c := range bad {
		_, err := m.Step(now, c.ev)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Step(%v) = %v, want %q", c.ev, err, c.want)
		}
	}
	if _, err := m.Step(simStart, Stop{}); !errors.Is(err, ErrTimeBackwards) {
		t.Errorf("backwards: %v", err)
	}
	after := m.Status()
	if after.Role != before.Role || after.Epoch != before.Epoch {
		t.Errorf("bad input changed the state: %+v -> %+v", before, after)
	}
	rd, err := m.Step(now, Stop{})
	if err != nil || !rd.Stopped {
		t.Fatalf("stop a passive: %v %+v", err, rd)
	}
	if _, err := m.Step(now, LANLink{Up: true}); !errors.Is(err, ErrStopped) {
		t.Errorf("after stop: %v", err)
	}
}

// TestI1PersistBeforeClaim: the promotion's actions are persist (the new,
// owned epoch, role active), then replication, VIP, runtime (I1, I3); the
// demotion's are runtime, VIP, then persist.
func TestI1PersistBeforeClaim(t *testing.T) {
	m, _, _ := New(testConfig(2), Persisted{Epoch: 5, Role: RolePassive}, simStart)
	now := simStart
	// Peer (node 1) active in epoch 5, then silent; gateway reachable.
	rd, err := m.Step(now, PeerAlive{Seq: 1, Advert: Advert{Node: 1, Epoch: 5, Role: RoleActive, HearPeer: true}})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	var promotedAt time.Time
	for i := 0; i < 100 && m.role != RoleActive; i++ {
		now = rd.Wake
		rd = m.Tick(now)
		acts := rd.Actions
		for _, a := range rd.Actions {
			if a.Kind == ActProbeGateway {
				rd, err = m.Step(now, GatewayProbe{Seq: a.Seq, Reachable: true})
				if err != nil {
					t.Fatal(err)
				}
				acts = append(acts, rd.Actions...)
				break
			}
		}
		for _, a := range acts {
			if a.Kind != ActProbeGateway && a.Kind != ActNotice && a.Kind != ActRaiseAlarm && a.Kind != ActClearAlarm {
				all = append(all, a.String())
			}
		}
		if m.role == RoleActive {
			promotedAt = now
		}
	}
	kinds := all
	now = promotedAt
	got := strings.Join(kinds, "; ")
	want := "persist epoch=6 role=active maint=false/0 outdated=false; set-replication primary epoch=6; claim-vip; start-runtime"
	if got != want {
		t.Fatalf("promotion actions:\n got %s\nwant %s", got, want)
	}
	if d := now.Sub(simStart); d != 400*time.Millisecond {
		t.Errorf("promoted after %v, want dead-after (400ms)", d)
	}
	// The old active comes back in a higher epoch (7 is node 1's): demote.
	rd, _ = m.Step(now, PeerAlive{Seq: 2, Advert: Advert{Node: 1, Epoch: 7, Role: RoleActive, HearPeer: true}})
	kinds = nil
	for _, a := range rd.Actions {
		kinds = append(kinds, a.Kind.String())
	}
	if got := strings.Join(kinds, ","); !strings.Contains(got, "stop-runtime,release-vip,persist,set-replication") || strings.Count(got, "persist") != 1 {
		t.Errorf("demotion actions: %s", got)
	}
	if st := m.Status(); st.Role != RolePassive || st.Epoch != 7 {
		t.Errorf("after demotion: %+v", st)
	}
}

func TestOwnedEpochs(t *testing.T) {
	for _, c := range []struct {
		node      uint8
		seen, got uint64
	}{{1, 0, 1}, {2, 0, 2}, {1, 1, 3}, {2, 1, 2}, {1, 6, 7}, {2, 6, 8}} {
		m := &Machine{cfg: Config{NodeID: c.node}, epoch: c.seen}
		if e := m.nextEpoch(); e != c.got {
			t.Errorf("node %d after %d: %d, want %d", c.node, c.seen, e, c.got)
		}
	}
}

// TestWatchdogKickedOnlyWhileLeaseHolds: an active with a watchdog kicks it
// every interval while it hears the peer, stops kicking once the peer is
// silent and the tie-breaker fails, and disarms it when it fences.
func TestWatchdogKickedOnlyWhileLeaseHolds(t *testing.T) {
	cfg := testConfig(1)
	cfg.Watchdog = true
	m, _, _ := New(cfg, Persisted{Role: RolePassive}, simStart)
	now := simStart
	peer := func(seq uint64) Ready {
		rd, err := m.Step(now, PeerAlive{Seq: seq, Advert: Advert{Node: 2, Role: RolePassive, HearPeer: true, LANUp: true, DataKnown: true}})
		if err != nil {
			t.Fatal(err)
		}
		return rd
	}
	if _, err := m.Step(now, Replication{State: ReplInSync, LSN: 1}); err != nil {
		t.Fatal(err)
	}
	peer(1)
	if m.role != RoleActive {
		t.Fatalf("not elected: %+v", m.Status())
	}
	kicks := 0
	count := func(rd Ready) {
		for _, a := range rd.Actions {
			switch a.Kind {
			case ActKickWatchdog:
				kicks++
			case ActProbeGateway:
				// Every probe fails: the tie-breaker never confirms.
				if _, err := m.Step(now, GatewayProbe{Seq: a.Seq}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for i := 2; i <= 10; i++ {
		now = now.Add(cfg.Timing.Interval)
		count(peer(uint64(i)))
		count(m.Tick(now))
	}
	if kicks < 9 {
		t.Errorf("%d kicks in 9 intervals with the peer heard", kicks)
	}
	// The peer goes silent: kicks stop, and the fence disarms.
	kicks = 0
	disarmed, tallied := false, 0
	last := now
	for m.role == RoleActive {
		rd := m.Tick(now)
		count(rd)
		for _, a := range rd.Actions {
			if a.Kind == ActDisarmWatchdog {
				disarmed = true
			}
			if a.Kind == ActNotice && a.Tally == TallyFence {
				tallied++
			}
		}
		now = rd.Wake
	}
	if !disarmed {
		t.Error("fenced without disarming the watchdog")
	}
	if tallied != 1 {
		t.Errorf("the fence was tallied %d times, want once (the daemon's self_fences counter)", tallied)
	}
	if kicks > int(cfg.Timing.FenceAfter/cfg.Timing.Interval)+1 {
		t.Errorf("%d kicks after the peer went silent at %v", kicks, last)
	}
}

// TestPathDownTextFollowsThePeer: the heartbeat detector reports every
// path of a silent peer as down too; those alarms must not claim the peer
// is still heard on the others (seen in `make demo` after the kill).
func TestPathDownTextFollowsThePeer(t *testing.T) {
	m, _, err := New(testConfig(1), Persisted{}, simStart)
	if err != nil {
		t.Fatal(err)
	}
	now := simStart.Add(time.Second)
	step := func(ev Event) {
		t.Helper()
		if _, err := m.Step(now, ev); err != nil {
			t.Fatal(err)
		}
	}
	step(PeerAlive{Path: "ha1", Seq: 1, Advert: Advert{Node: 2, Role: RolePassive}})
	step(PathDown{Path: "ha1"})
	step(PeerSilent{})
	step(PathDown{Path: "ha2"})
	al := m.Status().Alarms
	if got, want := al["path-down:ha1"], "heartbeat path ha1 lost (the peer is still heard on the others)"; got != want {
		t.Errorf("first path down: %q, want %q", got, want)
	}
	if got, want := al["path-down:ha2"], "heartbeat path ha2 lost (the peer is silent on every path)"; got != want {
		t.Errorf("path down after the peer fell silent: %q, want %q", got, want)
	}
}
