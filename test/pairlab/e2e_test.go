package pairlab

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/test/lab"
)

// The end-to-end tests run two real tandemd processes in a fresh lab each,
// with the default timing profile (interval 100 ms): the fast profile is
// for dedicated hosts, not for a CI machine that runs other tests at the
// same time. They wait for states, never assert durations beyond the
// invariants the issue names (the dup-VIP bound).

var (
	binsOnce sync.Once
	bins     Binaries
	binsErr  error
	binsDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binsDir != "" {
		os.RemoveAll(binsDir)
	}
	os.Exit(code)
}

func built(t *testing.T) Binaries {
	t.Helper()
	binsOnce.Do(func() {
		binsDir, binsErr = os.MkdirTemp("", "tandem-e2e-bin-")
		if binsErr == nil {
			bins, binsErr = Build(context.Background(), binsDir)
		}
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return bins
}

type e2e struct {
	t    *testing.T
	ctx  context.Context
	lab  *lab.Lab
	pair *Pair
	clk  clock.Clock
}

// newE2E brings up a lab and a pair: a starts first and becomes active
// alone after startup-wait, then b joins and syncs.
func newE2E(t *testing.T) *e2e { return newE2EWith(t, Options{}) }

// newE2EWith is newE2E with pair options (Lab, Bins, Dir and Logf are
// filled in).
func newE2EWith(t *testing.T, o Options) *e2e {
	e := newE2EPair(t, o)
	e.start()
	return e
}

// start starts a, then b, and waits until the pair is paired with a
// active and b passive in sync.
func (e *e2e) start() {
	t, p, ctx := e.t, e.pair, e.ctx
	if err := p.A.Start(); err != nil {
		t.Fatal(err)
	}
	e.role(p.A, "active", "")
	if err := p.B.Start(); err != nil {
		t.Fatal(err)
	}
	e.role(p.B, "passive", "in-sync")
	e.role(p.A, "active", "paired")
	// And a has heard b's advert as a passive in sync (a switchover asked
	// before that is refused: "the peer is starting").
	if _, err := p.A.WaitFor(ctx, "a sees b passive", func(s api.Status) bool {
		return s.PeerView.Role == "passive" && s.PeerView.Alive
	}); err != nil {
		t.Fatal(err)
	}
}

// newE2EPair brings up the lab and writes the pair's configuration; it
// starts no tandemd.
func newE2EPair(t *testing.T, o Options) *e2e {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "nft")
	b := built(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	l, err := lab.New(ctx, lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	o.Lab, o.Bins, o.Dir, o.Logf = l, b, t.TempDir(), t.Logf
	if os.Getenv("TANDEM_E2E_KEEP") != "" { // keep configs and logs for a post-mortem
		d, err := os.MkdirTemp("", "tandem-e2e-"+t.Name()+"-")
		if err != nil {
			t.Fatal(err)
		}
		o.Dir = d
		t.Logf("work directory kept: %s", d)
	}
	if o.Timing == "" {
		o.Timing = "default"
	}
	// As operators run it: heartbeats keep their timing while the
	// machine is loaded (here: the rest of the test suite).
	o.Extra += "realtime-priority: 10\n"
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, ctx: ctx, lab: l, pair: p, clk: clock.Real()}
	t.Cleanup(func() {
		if t.Failed() {
			// What a tandemd that still runs is doing (a hang's cause):
			// its threads' states, and its goroutines (SIGQUIT).
			for _, n := range []*Node{p.A, p.B} {
				t.Logf("--- %s's process:\n%s", n.Name, n.Diagnose(3*time.Second, 400))
			}
		}
		p.Close()
		if t.Failed() {
			for _, n := range []*Node{p.A, p.B} {
				// The tail shows how it ended; the notable lines how it
				// got there (a role change early in the run is long
				// out of the tail by the time a check fails).
				t.Logf("--- %s's notable lines (roles, notices, warnings; last 40):\n%s", n.Name, tailLines(notableLines(n.Log()), 40))
				t.Logf("--- %s's log (tail):\n%s", n.Name, tailLines(n.Log(), 60))
			}
		}
	})
	return e
}

// notableLines keeps the log lines a post-mortem starts from: role
// changes, the machine's notices and everything at warn level or above.
func notableLines(log string) string {
	var b strings.Builder
	for line := range strings.Lines(log) {
		if strings.Contains(line, `"msg":"role"`) || strings.Contains(line, `"msg":"notice"`) ||
			strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
			b.WriteString(line)
		}
	}
	return b.String()
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *e2e) role(n *Node, role, sub string) api.Status {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	st, err := n.Role(ctx, role, sub)
	if err != nil {
		e.t.Fatalf("%v\npair: %s", err, e.pair.Describe(e.ctx))
	}
	return st
}

func (e *e2e) status(n *Node) api.Status {
	e.t.Helper()
	st, err := n.Status(e.ctx)
	if err != nil {
		e.t.Fatalf("%s status: %v", n.Name, err)
	}
	return st
}

// hold checks for d that ok holds on every poll of n's status.
func (e *e2e) hold(n *Node, d time.Duration, what string, ok func(api.Status) bool) {
	e.t.Helper()
	end := e.clk.Now().Add(d)
	for e.clk.Now().Before(end) {
		if st, err := n.Status(e.ctx); err == nil && !ok(st) {
			e.t.Fatalf("%s: %s broken: role %s/%s epoch %d vip=%v", n.Name, what, st.Role, st.SubState, st.Epoch, st.VIP.Owned)
		}
		clock.Sleep(e.ctx, e.clk, 50*time.Millisecond)
	}
}

// deadAfter of the default profile, for waits that must outlast a
// detection: waiting several times it without a failover is the evidence.
const deadAfter = 400 * time.Millisecond

// TestE2EKillActiveAndRejoin: kill -9 of the active, followed by its
// unit's ExecStopPost cleanup as under systemd; b takes over; the client
// reaches b; a, restarted, rejoins as passive in sync.
func TestE2EKillActiveAndRejoin(t *testing.T) {
	e := newE2E(t)
	pr, err := e.pair.StartProbe("kill", 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	clock.Sleep(e.ctx, e.clk, 500*time.Millisecond)
	before := e.status(e.pair.A)
	fail := e.clk.Now()
	if err := e.pair.A.Crash(e.ctx); err != nil {
		t.Fatal(err)
	}
	st := e.role(e.pair.B, "active", "")
	if st.Epoch <= before.Epoch {
		t.Errorf("b promoted in epoch %d, not above a's %d (I1)", st.Epoch, before.Epoch)
	}
	clock.Sleep(e.ctx, e.clk, time.Second)
	probes, err := pr.Stop()
	if err != nil {
		t.Fatal(err)
	}
	o, err := Analyze(probes, lab.NodeA, fail, st.RoleSince)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9: outage %v, dup_vip %v, answered by %s epoch %d", o.Outage, o.DupVIP, o.NewNode, o.NewEpoch)
	if o.NewNode != lab.NodeB {
		t.Errorf("after the kill the client reached %q, want b", o.NewNode)
	}
	if err := e.pair.A.Start(); err != nil {
		t.Fatal(err)
	}
	sa := e.role(e.pair.A, "passive", "in-sync")
	sb := e.role(e.pair.B, "active", "paired")
	if sa.VIP.Owned || sa.Epoch != sb.Epoch || sb.Epoch != st.Epoch {
		t.Errorf("rejoined a: vip owned %v, epoch %d; b's epoch %d, at its promotion %d (want one promotion only)", sa.VIP.Owned, sa.Epoch, sb.Epoch, st.Epoch)
	}
}

// TestE2EFreezeThaw: the active is frozen (SIGSTOP), b takes over; thawed,
// a demotes, and the VIP is never answered by both for longer than one
// heartbeat interval.
func TestE2EFreezeThaw(t *testing.T) {
	e := newE2E(t)
	pr, err := e.pair.StartProbe("freeze", 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	clock.Sleep(e.ctx, e.clk, 300*time.Millisecond)
	proc := e.pair.A.Proc()
	fail := e.clk.Now()
	if err := proc.Freeze(); err != nil {
		t.Fatal(err)
	}
	st := e.role(e.pair.B, "active", "")
	if st.RoleSince.IsZero() {
		t.Fatal("b reports no role_since: the dup-VIP bound cannot be checked")
	}
	clock.Sleep(e.ctx, e.clk, time.Second)
	if err := proc.Thaw(); err != nil {
		t.Fatal(err)
	}
	sa := e.role(e.pair.A, "passive", "")
	// The thawed node's driver is told of the freeze before it reads the
	// heartbeats queued meanwhile (its freeze watch), so it steps down for
	// the freeze itself.
	frozen := false
	for _, ev := range sa.Events {
		frozen = frozen || ev.Kind == "role" && strings.Contains(ev.Text, "frozen for")
	}
	if !frozen {
		t.Errorf("thawed a stepped down, but not for the freeze; its events: %+v", sa.Events)
	}
	clock.Sleep(e.ctx, e.clk, time.Second)
	probes, err := pr.Stop()
	if err != nil {
		t.Fatal(err)
	}
	o, err := Analyze(probes, lab.NodeA, fail, st.RoleSince)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("freeze: outage %v, dup_vip %v, old answers after claim %d", o.Outage, o.DupVIP, o.OldAfter)
	if o.DupVIP > 100*time.Millisecond {
		t.Errorf("the thawed old active answered for the VIP %v after b's claim; want at most one heartbeat interval (100ms)", o.DupVIP)
	}
	e.role(e.pair.B, "active", "")
}

// TestE2EHALinkCutNoFailover: both HA links of a cut, the LAN path alive:
// no failover, and both nodes raise an alarm for the lost paths.
func TestE2EHALinkCutNoFailover(t *testing.T) {
	e := newE2E(t)
	ep := e.status(e.pair.A).Epoch
	for _, ifn := range []string{"ha1", "ha2"} {
		if _, err := e.lab.CutLink(e.ctx, lab.NodeA, ifn); err != nil {
			t.Fatal(err)
		}
	}
	same := func(st api.Status) bool { return st.Epoch == ep }
	e.hold(e.pair.B, 10*deadAfter, "b stays passive", func(st api.Status) bool { return st.Role == "passive" && same(st) })
	if st := e.status(e.pair.A); st.Role != "active" || st.Epoch != ep || !st.VIP.Owned {
		t.Errorf("a after the HA cut: %s epoch %d vip %v; want active, epoch %d, VIP owned", st.Role, st.Epoch, st.VIP.Owned, ep)
	}
	for _, n := range []*Node{e.pair.A, e.pair.B} {
		// A path-down alarm, not just any: on a CI machine short of disk,
		// disk-space stands from the start.
		st, err := n.WaitFor(e.ctx, "a path alarm", func(st api.Status) bool {
			return slices.ContainsFunc(st.Alarms, func(a api.Alarm) bool { return strings.HasPrefix(a.ID, "path-down:") })
		})
		if err != nil {
			t.Errorf("%s: no alarm after both HA paths were cut: %v", n.Name, err)
			continue
		}
		t.Logf("%s alarms: %+v", n.Name, st.Alarms)
	}
	// Nothing is committed, so only TCP keepalive can tell a that its
	// replication session died with the HA links: its status must not
	// show the peer in sync for long (Go's default probing took 2.5 min).
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	if st, err := e.pair.A.WaitFor(ctx, "a's replication peer no longer in sync", func(st api.Status) bool {
		return st.Replication.PeerState != "in-sync"
	}); err != nil {
		t.Errorf("a still shows its peer in sync with both HA links cut: %v", err)
	} else {
		t.Logf("a's replication after the cut: %+v", st.Replication)
		if st.Replication.Rejected != 0 {
			t.Errorf("a counts %d rejected frames: a dead link is not a frame the peer got wrong", st.Replication.Rejected)
		}
	}
}

// TestE2EIsolatedActiveFences: every heartbeat path between the nodes cut,
// and a also cut from the gateway: b promotes, a fences itself.
func TestE2EIsolatedActiveFences(t *testing.T) {
	e := newE2E(t)
	if _, err := e.lab.Partition(e.ctx, lab.NodeA, lab.NodeB); err != nil {
		t.Fatal(err)
	}
	if _, err := e.lab.Partition(e.ctx, lab.NodeA, lab.Gateway); err != nil {
		t.Fatal(err)
	}
	if _, err := e.lab.Partition(e.ctx, lab.NodeA, lab.Client); err != nil {
		t.Fatal(err)
	}
	st := e.role(e.pair.B, "active", "")
	sa, err := e.pair.A.WaitFor(e.ctx, "a fenced", func(s api.Status) bool { return s.Role != "active" && !s.VIP.Owned })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("b active epoch %d; a %s/%s, self-fences %d", st.Epoch, sa.Role, sa.SubState, sa.Counters.SelfFences)
	if sa.Counters.SelfFences == 0 {
		t.Errorf("a stepped down but its self-fence counter is 0")
	}
}

// TestE2EGatewayLostPairHolds: the gateway stops answering both nodes (a
// router down) while they hear each other. The active's lease then rests
// on the heartbeats alone, and the pair must hold: no fence, no new epoch,
// for 25 dead-afters; both raise lan-down. Until the heartbeat reported
// every round (not only changes), an idle pair's machines heard each other
// up to 250 ms late and the active leaned on the gateway for its lease:
// this cut made it fence within a second, over and over.
func TestE2EGatewayLostPairHolds(t *testing.T) {
	e := newE2E(t)
	a, b := e.pair.A, e.pair.B
	before := e.status(a)
	for _, n := range []string{lab.NodeA, lab.NodeB} {
		if _, err := e.lab.Partition(e.ctx, n, lab.Gateway); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*Node{a, b} {
		if _, err := n.WaitFor(e.ctx, n.Name+" raises lan-down", func(s api.Status) bool { return hasAlarm(s, "lan-down") }); err != nil {
			t.Fatal(err)
		}
	}
	e.hold(a, 25*deadAfter, fmt.Sprintf("active in epoch %d", before.Epoch), func(s api.Status) bool {
		return s.Role == "active" && s.Epoch == before.Epoch
	})
	sa, sb := e.status(a), e.status(b)
	if sa.Counters.SelfFences != 0 || sa.Counters.Demotions != 0 {
		t.Errorf("a's counters without a gateway: %+v, want no fence and no demotion", sa.Counters)
	}
	if sb.Role != "passive" || sb.SubState != "in-sync" || sb.Epoch != before.Epoch {
		t.Errorf("b %s/%s in epoch %d, want passive in sync in epoch %d", sb.Role, sb.SubState, sb.Epoch, before.Epoch)
	}
}

// TestE2ESwitchover: `tandemctl switchover` on the active hands the role
// to the peer, which becomes active; the old active stays passive in sync.
func TestE2ESwitchover(t *testing.T) {
	e := newE2E(t)
	out, err := e.pair.A.Ctl(e.ctx, "switchover", "--wait")
	if err != nil || !strings.Contains(out, "b active in epoch ") || !strings.Contains(out, "a passive and in sync after") {
		t.Fatalf("tandemctl switchover --wait: %v\n%s", err, out)
	}
	t.Logf("tandemctl switchover --wait: %s", strings.TrimSpace(out))
	e.role(e.pair.B, "active", "paired")
	e.role(e.pair.A, "passive", "in-sync")
	out, err = e.pair.B.Ctl(e.ctx, "status")
	if err != nil || !strings.Contains(out, "active") {
		t.Errorf("tandemctl status on b: %v\n%s", err, out)
	}
	sa, err := e.pair.A.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := sa.Counters; c.Switchovers != 1 || c.SelfFences != 0 || c.Demotions != 1 {
		t.Errorf("a's counters after one switchover: %+v (want switchovers 1, self_fences 0, demotions 1)", c)
	}
	// A handover: b waited for a to follow instead of marking it Outdated
	// and committing alone, so a stayed promotable throughout (RPO 0).
	evs, err := e.pair.B.API.Events(e.ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Kind == "replication" && strings.HasPrefix(ev.Text, "peer-outdated") {
			t.Errorf("b marked a outdated at the switchover: %s", ev.Text)
		}
	}
}

// TestE2EDrillInMaintenance: the drill in a maintenance window, run on the
// active. Its second leg is a request from a passive shown as
// "maintenance"; maintenance stays on throughout and after.
func TestE2EDrillInMaintenance(t *testing.T) {
	e := newE2E(t)
	if out, err := e.pair.A.Ctl(e.ctx, "maintenance", "on"); err != nil {
		t.Fatalf("maintenance on: %v\n%s", err, out)
	}
	if _, err := e.pair.B.WaitFor(e.ctx, "b sees maintenance", func(s api.Status) bool { return s.Maintenance }); err != nil {
		t.Fatal(err)
	}
	before := e.status(e.pair.A)
	out, err := e.pair.A.Ctl(e.ctx, "drill")
	t.Logf("tandemctl drill on a:\n%s", strings.TrimSpace(out))
	if err != nil || !strings.Contains(out, fmt.Sprintf("drill passed: a active again in epoch %d", before.Epoch+2)) {
		t.Fatalf("tandemctl drill in maintenance: %v", err)
	}
	for _, n := range []*Node{e.pair.A, e.pair.B} {
		if st := e.status(n); !st.Maintenance {
			t.Errorf("%s left maintenance during the drill", n.Name)
		}
	}
}

// crashActiveInMaintenance turns maintenance on from a, waits until b
// has it, and kills a.
func (e *e2e) crashActiveInMaintenance() {
	e.t.Helper()
	if out, err := e.pair.A.Ctl(e.ctx, "maintenance", "on"); err != nil {
		e.t.Fatalf("maintenance on: %v\n%s", err, out)
	}
	if _, err := e.pair.B.WaitFor(e.ctx, "b sees maintenance", func(s api.Status) bool { return s.Maintenance }); err != nil {
		e.t.Fatal(err)
	}
	if err := e.pair.A.Crash(e.ctx); err != nil {
		e.t.Fatal(err)
	}
}

// TestE2EMaintenanceBlocksFailover: with maintenance on, killing the active
// does not make b take over; turning maintenance off on b lets it.
func TestE2EMaintenanceBlocksFailover(t *testing.T) {
	e := newE2E(t)
	e.crashActiveInMaintenance()
	e.hold(e.pair.B, 10*deadAfter, "no failover in maintenance", func(st api.Status) bool { return st.Role != "active" && !st.VIP.Owned })
	if out, err := e.pair.B.Ctl(e.ctx, "maintenance", "off"); err != nil {
		t.Fatalf("maintenance off: %v\n%s", err, out)
	}
	e.role(e.pair.B, "active", "")
}

// TestE2EForcePromoteThenAcknowledge is the operator's runbook for a
// peer that is down for good while failover is blocked: force-promote b,
// then acknowledge the alarm that records it. The alarm stands until then
// (before acknowledgements, only a restart of the active cleared it);
// the condition alarms that remain cannot be acknowledged away.
func TestE2EForcePromoteThenAcknowledge(t *testing.T) {
	e := newE2E(t)
	e.crashActiveInMaintenance()
	hasAlarm := func(st api.Status, id string) (api.Alarm, bool) {
		for _, a := range st.Alarms {
			if a.ID == id {
				return a, true
			}
		}
		return api.Alarm{}, false
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if _, err := e.pair.B.WaitFor(ctx, "b's no-failover alarm", func(s api.Status) bool {
		_, ok := hasAlarm(s, "no-failover")
		return ok && s.Role != "active"
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := e.pair.B.Ctl(e.ctx, "force-promote", "--i-accept-data-loss"); err != nil {
		t.Fatalf("force-promote: %v\n%s", err, out)
	}
	st := e.role(e.pair.B, "active", "")
	forced, ok := hasAlarm(st, "forced")
	if !ok || !forced.Latched {
		t.Fatalf("b after force-promote: alarm forced %+v (raised %t), want it latched; alarms %+v", forced, ok, st.Alarms)
	}
	if out, _ := e.pair.B.Ctl(e.ctx, "status"); !strings.Contains(out, "until acknowledged: tandemctl ack-alarm forced") {
		t.Errorf("tandemctl status does not say how to clear the forced alarm:\n%s", out)
	}
	// Maintenance is a condition: refused, and the reply says what clears it.
	out, err := e.pair.B.Ctl(e.ctx, "ack-alarm", "maintenance")
	if err == nil || !strings.Contains(out, "maintenance mode is turned off") {
		t.Errorf("ack-alarm maintenance: %v, %q; want a refusal naming what clears it", err, out)
	}
	if out, err := e.pair.B.Ctl(e.ctx, "ack-alarm", "forced"); err != nil || !strings.Contains(out, "acknowledged") {
		t.Fatalf("ack-alarm forced: %v\n%s", err, out)
	}
	st = e.status(e.pair.B)
	if a, ok := hasAlarm(st, "forced"); ok {
		t.Errorf("forced alarm still raised after its acknowledgement: %+v", a)
	}
	if _, ok := hasAlarm(st, "maintenance"); !ok {
		t.Errorf("the maintenance alarm went with the acknowledgement of another: %+v", st.Alarms)
	}
	if st.Role != "active" || !st.VIP.Owned {
		t.Errorf("b after the acknowledgement: %s, VIP owned %t; the acknowledgement must change nothing else", st.Role, st.VIP.Owned)
	}
	if out, err := e.pair.B.Ctl(e.ctx, "ack-alarm", "forced"); err == nil || !strings.Contains(out, "not raised") {
		t.Errorf("second ack-alarm forced: %v, %q; want not raised", err, out)
	}
}

// TestE2EElectionKeepsThePeerPromotable: both nodes start together; the
// one that wins the election waits for the other to follow instead of
// marking it Outdated (wip.PeerFollows), and the other dials as soon as
// its heartbeat shows the winner active (Redial), so the pair is whole at
// once and either node can take over from the first commit on.
func TestE2EElectionKeepsThePeerPromotable(t *testing.T) {
	e := newE2EPair(t, Options{})
	for _, n := range []*Node{e.pair.A, e.pair.B} {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	act, err := e.pair.WaitWhole(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oth := e.pair.Other(act)
	e.role(act, "active", "paired")
	e.role(oth, "passive", "in-sync")
	evs, err := act.API.Events(e.ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	elected := false
	for _, ev := range evs {
		elected = elected || (ev.Kind == "role" && strings.Contains(ev.Text, "both passive"))
		if ev.Kind == "replication" && strings.HasPrefix(ev.Text, "peer-outdated") {
			t.Errorf("%s marked %s outdated at the election: %s", act.Name, oth.Name, ev.Text)
		}
	}
	if !elected {
		t.Fatalf("%s did not become active by the election (events %v): the test did not test it", act.Name, evs)
	}
}
