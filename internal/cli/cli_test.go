package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/latency"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

type backend struct {
	maint []bool
	acked []string
}

func (b *backend) Status(context.Context) (api.Status, error) {
	return api.Status{
		Node: "a", Peer: "b", Role: "active", SubState: "paired", Epoch: 7, RoleSince: t0.Add(-90 * time.Second), SwitchoverReady: true,
		PeerView: api.PeerStatus{Alive: true, Role: "passive", Epoch: 7, DataState: "up-to-date", LastSeen: t0.Add(-40 * time.Millisecond)},
		Paths: []api.PathStatus{
			{Name: "ha1", Up: true, RTT: 180 * time.Microsecond, LastSeen: t0.Add(-40 * time.Millisecond)},
			{Name: "lan", Up: false, Loss: 1, LastSeen: t0.Add(-5 * time.Second), Dropped: 3},
		},
		Replication: api.ReplicationStatus{Role: "primary", Mode: "sync", DataState: "up-to-date", PeerState: "in-sync", CommittedLSN: 1234, PeerAckedLSN: 1234, Session: "198.51.100.5:7101 -> 198.51.100.6:41000", LastError: "wip: peer rejected: wrong pair key", LastErrorAt: t0.Add(-3 * time.Minute),
			RetainedFirst: 1100, RetainedLast: 1234, RetainedBytes: 140000, PeerHoldsLSN: 1234, PeerCatchUp: "log",
			RecentLatency: api.LatencyStatus{Commit: latency.Histogram{Counts: [latency.Buckets]uint64{5: 10}, Count: 10}}},
		VIP:        api.VIPStatus{Addresses: []string{"192.0.2.10/24"}, Owned: true, Since: t0.Add(-89 * time.Second)},
		TieBreaker: api.TieBreakerStatus{GatewayReachable: true, Checked: t0.Add(-time.Second)},
		Runtime:    api.RuntimeStatus{State: "running", Running: 3},
		Backup: api.BackupStatus{Dir: "/var/backups/tandem", Every: time.Hour, Keep: 24,
			Last: &api.BackupInfo{Created: t0.Add(-12 * time.Minute), Epoch: 7, LSN: 1200, Bytes: 5 << 20}},
		Alarms: []api.Alarm{{ID: "path-down:lan", Severity: "warning", Text: "heartbeat path lan is down", Since: t0.Add(-5 * time.Second)},
			{ID: "forced", Severity: "warning", Text: "promoted by force", Since: t0.Add(-80 * time.Second), Latched: true}},
		Events: []api.Event{{Seq: 9, Time: t0.Add(-90 * time.Second), Kind: "role", Text: "promoted to active at epoch 7"}},
		Now:    t0,
	}, nil
}
func (b *backend) Events(context.Context, uint64) ([]api.Event, error) {
	return []api.Event{{Seq: 9, Time: t0, Kind: "role", Text: "promoted"}}, nil
}
func (b *backend) Switchover(context.Context) (api.ActionResult, error) {
	return api.ActionResult{}, fmt.Errorf("%w: the passive is not in sync (catching-up)", api.ErrConflict)
}
func (b *backend) Maintenance(_ context.Context, on bool) (api.ActionResult, error) {
	b.maint = append(b.maint, on)
	return api.ActionResult{Accepted: true, Text: fmt.Sprintf("maintenance %v", on)}, nil
}
func (b *backend) ForcePromote(context.Context, bool) (api.ActionResult, error) {
	return api.ActionResult{Accepted: true, Text: "promoted"}, nil
}
func (b *backend) AckAlarm(_ context.Context, id string) (api.ActionResult, error) {
	b.acked = append(b.acked, id)
	if id != "forced" {
		return api.ActionResult{}, fmt.Errorf("%w: ack-alarm: %q is not raised on this node", api.ErrNotFound, id)
	}
	return api.ActionResult{Accepted: true, Text: "alarm forced acknowledged"}, nil
}

func start(t *testing.T) (string, *backend) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "t.sock")
	l, err := api.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{}
	as := api.NewServer(b, zap.NewNop())
	as.Handle("POST /v1/admin/backup", func(w http.ResponseWriter, r *http.Request) {
		as.Reply(w, r, api.BackupInfo{Path: "/var/backups/tandem/wip-x", Epoch: 7, LSN: 1234, Bytes: 3 << 20, Took: 42 * time.Millisecond}, nil)
	})
	as.Handle("GET /v1/backups", func(w http.ResponseWriter, r *http.Request) {
		as.Reply(w, r, []api.BackupInfo{{Path: "/var/backups/tandem/wip-x", Created: t0, Node: "a", Epoch: 7, LSN: 1234, Bytes: 3 << 20}}, nil)
	})
	var verifies atomic.Int32 // the first read-back is clean, the next ones meet a bad block
	as.Handle("POST /v1/admin/verify", func(w http.ResponseWriter, r *http.Request) {
		v := api.VerifyResult{Keys: 30412, Took: 180 * time.Millisecond}
		if verifies.Add(1) > 1 {
			v.Keys, v.Fault = 1200, "wip: verify: pebble: file 000008: block 142205/7101: crc32c checksum mismatch"
		}
		as.Reply(w, r, v, nil)
	})
	srv := &http.Server{Handler: as}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return sock, b
}

func run(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := Execute(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestStatusHumanAndJSON(t *testing.T) {
	sock, _ := start(t)
	code, out, errOut := run("--socket", sock, "status")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"node a: ACTIVE (paired), epoch 7, since 1m30s ago",
		"peer b: passive, epoch 7, data up-to-date, last heartbeat 40ms ago\nswitchover: ready\n",
		"ha1   up   rtt 180µs",
		"lan   DOWN rtt 0s        loss 100.0%  last seen 5s ago  (3 invalid datagrams dropped)",
		"committed LSN 1234, peer acked 1234",
		"lag 0 batches / 0 bytes / 0s\n  latency, last 1-2 min: commit p50 <=1.6ms p99 <=1.6ms over 10 groups\n  session 198.51.100.5:7101 -> 198.51.100.6:41000\n  retained log LSN 1100..1234, 140000 bytes; peer holds LSN 1234: it would catch up from the log\n  last error 3m0s ago: wip: peer rejected: wrong pair key\n",
		"vip: 192.0.2.10/24: owned here since 1m29s ago",
		"WARNING  heartbeat path lan is down (path-down:lan, since 5s ago)\n",
		"(epoch 7, LSN 1200, 5.0 MiB), every 1h0m0s on the active, keep 24, in /var/backups/tandem\n",
		"WARNING  promoted by force (forced, since 1m20s ago; until acknowledged: tandemctl ack-alarm forced)",
		"promoted to active at epoch 7",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = run("--socket", sock, "status", "--json")
	var st api.Status
	if code != ExitOK || json.Unmarshal([]byte(out), &st) != nil || st.Epoch != 7 {
		t.Errorf("--json: exit %d, %q", code, out)
	}
}

// TestStatusOfAPassiveWaitingToConnect: a passive whose active refuses it
// says when it tries next, and the refusal with its time.
func TestStatusOfAPassiveWaitingToConnect(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    api.ReplicationStatus
		want string
	}{
		{"waiting", api.ReplicationStatus{Role: "secondary", PeerState: "disconnected", NextDialAt: t0.Add(640 * time.Millisecond),
			DialError: "wip: peer rejected: the primary cannot read its store",
			LastError: "wip: peer rejected: the primary cannot read its store", LastErrorAt: t0.Add(-1500 * time.Millisecond)},
			"  not connected (wip: peer rejected: the primary cannot read its store): next attempt in 640ms\n  last error 1.5s ago: wip: peer rejected: the primary cannot read its store\n"},
		{"due", api.ReplicationStatus{Role: "secondary", PeerState: "disconnected", NextDialAt: t0.Add(-time.Millisecond)},
			"  not connected: next attempt in 0s\n"},
		{"an older tandemd: no time", api.ReplicationStatus{Role: "secondary", LastError: "wip: peer rejected: mode"},
			"  last error: wip: peer rejected: mode\n"},
	} {
		var out bytes.Buffer
		PrintStatus(&out, api.Status{Node: "b", Replication: tc.r, Now: t0})
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("%s: status output lacks %q:\n%s", tc.name, tc.want, out.String())
		}
	}
}

func TestLatencyLine(t *testing.T) {
	hist := func(ds ...time.Duration) latency.Histogram {
		var h latency.Histogram
		for _, d := range ds {
			h.Observe(d)
		}
		return h
	}
	for _, tc := range []struct {
		name string
		l    api.LatencyStatus
		want string
	}{
		{"nothing recent", api.LatencyStatus{}, ""},
		{"primary", api.LatencyStatus{
			Commit:    hist(300*time.Microsecond, 300*time.Microsecond, 2*time.Millisecond),
			LocalSync: hist(100*time.Microsecond, 120*time.Microsecond, 150*time.Microsecond),
			PeerWait:  hist(0, 0, 9*time.Second),
		}, "  latency, last 1-2 min: commit p50 <=400µs p99 <=3.2ms over 3 groups; local sync p99 <=200µs; peer wait p99 >6.5536s\n"},
		{"secondary", api.LatencyStatus{LocalSync: hist(60 * time.Microsecond)},
			"  latency, last 1-2 min: local sync p50 <=100µs p99 <=100µs over 1 batches\n"},
	} {
		if got := latencyLine(tc.l); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestActionsAndExitCodes(t *testing.T) {
	sock, b := start(t)
	if code, out, _ := run("--socket", sock, "maintenance", "on"); code != ExitOK || !strings.Contains(out, "maintenance true") || len(b.maint) != 1 {
		t.Errorf("maintenance on: %d %q", code, out)
	}
	if code, _, errOut := run("--socket", sock, "maintenance", "maybe"); code != ExitUsage {
		t.Errorf("maintenance maybe: exit %d (%s), want usage", code, errOut)
	}
	if code, _, errOut := run("--socket", sock, "switchover"); code != ExitFailed || !strings.Contains(errOut, "not in sync") {
		t.Errorf("refused switchover: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run("--socket", sock, "force-promote"); code != ExitUsage || !strings.Contains(errOut, "--i-accept-data-loss") {
		t.Errorf("force-promote without ack: exit %d, %q", code, errOut)
	}
	if code, out, _ := run("--socket", sock, "force-promote", "--i-accept-data-loss"); code != ExitOK || !strings.Contains(out, "promoted") {
		t.Errorf("force-promote: exit %d, %q", code, out)
	}
	if code, out, _ := run("--socket", sock, "ack-alarm", "forced"); code != ExitOK || !strings.Contains(out, "alarm forced acknowledged") {
		t.Errorf("ack-alarm forced: exit %d, %q", code, out)
	}
	if code, _, errOut := run("--socket", sock, "ack-alarm", "gone"); code != ExitFailed || !strings.Contains(errOut, `"gone" is not raised`) {
		t.Errorf("ack-alarm gone: exit %d, %q", code, errOut)
	}
	if code, _, _ := run("--socket", sock, "ack-alarm"); code != ExitUsage {
		t.Errorf("ack-alarm without an id: exit %d, want usage", code)
	}
	if code, out, _ := run("--socket", sock, "backup"); code != ExitOK || out != "backup /var/backups/tandem/wip-x: epoch 7, LSN 1234, 3.0 MiB, took 42ms\n" {
		t.Errorf("backup: exit %d, %q", code, out)
	}
	if code, out, _ := run("--socket", sock, "verify"); code != ExitOK || out != "store read back: 30412 keys, no corruption, took 180ms\n" {
		t.Errorf("verify: exit %d, %q", code, out)
	}
	if code, _, errOut := run("--socket", sock, "verify"); code != ExitFailed ||
		!strings.Contains(errOut, "store read-back failed: wip: verify: pebble: file 000008: block 142205/7101: crc32c checksum mismatch (see the wip-corrupt alarm") {
		t.Errorf("verify meeting a bad block: exit %d, %q", code, errOut)
	}
	if code, out, _ := run("--socket", sock, "backups"); code != ExitOK || !strings.Contains(out, "2026-11-22T12:00:00Z  node a    epoch 7    LSN 1234") {
		t.Errorf("backups: exit %d, %q", code, out)
	}
	if want := []string{"forced", "gone"}; !slices.Equal(b.acked, want) {
		t.Errorf("acknowledged %v, want %v", b.acked, want)
	}
	if code, _, errOut := run("--socket", filepath.Join(t.TempDir(), "none"), "status"); code != ExitUnreachable || !strings.Contains(errOut, "cannot reach tandemd") {
		t.Errorf("no daemon: exit %d, %q", code, errOut)
	}
	if code, _, _ := run("--socket", sock, "frobnicate"); code != ExitUsage {
		t.Errorf("unknown command: exit %d", code)
	}
}

// pairModel is a backend for node a of a pair whose status moves through
// switchovers: asked on either node, the other node is active in the next
// epoch two polls later and the old active in sync two polls after that.
type pairModel struct {
	backend
	mu        sync.Mutex
	aActive   bool
	epoch     uint64
	pending   bool // a switchover runs
	polls     int
	stuck     bool // the switchover never completes
	withdraw  bool // a's request is withdrawn at the second poll
	maint     bool // maintenance mode: a passive shows as "maintenance"
	oldDaemon bool // no switchover_ready nor switchover_blocked in the status
}

func (p *pairModel) Switchover(context.Context) (api.ActionResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending, p.polls = true, 0
	if p.aActive {
		return api.ActionResult{Accepted: true, Text: "switchover started"}, nil
	}
	return api.ActionResult{Accepted: true, Text: "switchover requested"}, nil
}

func (p *pairModel) Status(context.Context) (api.Status, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	syncing := false
	var alarms []api.Alarm
	requested := p.pending && !p.aActive
	if p.pending && !p.stuck {
		p.polls++
		switch {
		case p.withdraw && p.polls >= 2:
			p.pending, requested = false, false
			alarms = append(alarms, api.Alarm{ID: "switchover-failed", Text: "switchover request withdrawn: the peer went silent"})
		case p.polls == 2:
			p.aActive, p.epoch, syncing = !p.aActive, p.epoch+1, true
			requested = false
		case p.polls == 3:
			syncing = true
		case p.polls >= 4:
			p.pending = false
		}
	}
	st := api.Status{Node: "a", Peer: "b", Epoch: p.epoch, SwitchoverRequested: requested, Alarms: alarms,
		SwitchoverReady: !syncing && !requested}
	if !st.SwitchoverReady {
		st.SwitchoverBlocked = "syncing"
	}
	if p.aActive {
		st.Role, st.SubState, st.PeerView = "active", "paired", api.PeerStatus{Role: "passive", Epoch: p.epoch}
		st.Replication.PeerState = "in-sync"
		if syncing {
			st.Replication.PeerState = "catching-up"
		}
	} else {
		st.Role, st.SubState, st.PeerView = "passive", "in-sync", api.PeerStatus{Role: "active", Epoch: p.epoch}
		if syncing {
			st.SubState = "syncing"
		}
		if p.maint {
			st.Role, st.Maintenance = "maintenance", true
		}
	}
	if p.oldDaemon {
		st.SwitchoverReady, st.SwitchoverBlocked = false, ""
	}
	return st, nil
}

func TestSwitchoverWaitAndDrill(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := api.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	p := &pairModel{aActive: true, epoch: 7}
	srv := &http.Server{Handler: api.NewServer(p, zap.NewNop())}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	defer func() { srv.Close(); <-done }()
	state := func() (bool, uint64) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.aActive, p.epoch
	}

	// On the active: the peer takes over, then this node is in sync.
	code, out, errOut := run("--socket", sock, "switchover", "--wait")
	if code != ExitOK || !strings.HasPrefix(out, "switchover started\nb active in epoch 8 after ") || !strings.Contains(out, "; a passive and in sync after ") {
		t.Fatalf("switchover --wait on the active: exit %d, %q %q", code, out, errOut)
	}
	if active, e := state(); active || e != 8 {
		t.Fatalf("after the first switchover: a active %t, epoch %d", active, e)
	}
	// On the passive (a request): this node takes over, then the peer is in sync.
	var times SwitchoverTimes
	code, out, _ = run("--socket", sock, "--json", "switchover", "--wait")
	if code != ExitOK || json.Unmarshal([]byte(out), &times) != nil || times.Epoch != 9 || times.From != "b" || times.To != "a" ||
		times.ActiveAfter == 0 || times.SyncAfter < times.ActiveAfter {
		t.Errorf("switchover --wait on the passive, --json: exit %d, %q", code, out)
	}
	if active, e := state(); !active || e != 9 {
		t.Fatalf("after the request: a active %t, epoch %d", active, e)
	}
	// The drill: there and back, from the active.
	code, out, errOut = run("--socket", sock, "drill")
	if code != ExitOK || !strings.Contains(out, "leg 1: b active in epoch 10 after ") || !strings.Contains(out, "leg 2: a active in epoch 11 after ") ||
		!strings.HasSuffix(out, "drill passed: a active again in epoch 11\n") {
		t.Errorf("drill: exit %d, %q %q", code, out, errOut)
	}
	// And from the passive, as JSON.
	run("--socket", sock, "switchover", "--wait")
	var d DrillReport
	code, out, _ = run("--socket", sock, "--json", "drill")
	if code != ExitOK || json.Unmarshal([]byte(out), &d) != nil || len(d.Legs) != 2 ||
		d.Legs[0].From != "b" || d.Legs[0].To != "a" || d.Legs[0].Epoch != 13 || d.Legs[1].To != "b" || d.Legs[1].Epoch != 14 {
		t.Errorf("drill --json from the passive: exit %d, %q", code, out)
	}
	// A tandemd that predates switchover_ready (neither field set): the
	// leg ends on its own "in sync".
	p.mu.Lock()
	p.oldDaemon = true
	p.mu.Unlock()
	if code, out, errOut := run("--socket", sock, "--timeout", "5s", "switchover", "--wait"); code != ExitOK || !strings.Contains(out, "passive and in sync after") {
		t.Errorf("switchover --wait against an older tandemd: exit %d, %q %q", code, out, errOut)
	}
	p.mu.Lock()
	p.oldDaemon = false
	p.mu.Unlock()
	// In maintenance mode (a passive shows as "maintenance"), from either side.
	p.mu.Lock()
	p.maint = true
	p.mu.Unlock()
	if code, out, errOut := run("--socket", sock, "--timeout", "5s", "drill"); code != ExitOK || !strings.Contains(out, "drill passed") {
		t.Errorf("drill in maintenance mode: exit %d, %q %q", code, out, errOut)
	}
	p.mu.Lock()
	p.maint = false
	p.mu.Unlock()
	// A request the machine withdraws: the error carries the alarm's text.
	p.mu.Lock()
	p.withdraw, p.aActive = true, false
	p.mu.Unlock()
	code, _, errOut = run("--socket", sock, "drill")
	if code != ExitFailed || !strings.Contains(errOut, "drill, leg 1 of 2: switchover requested, but a is still passive after") ||
		!strings.Contains(errOut, "the peer went silent") {
		t.Errorf("a withdrawn request: exit %d, %q", code, errOut)
	}
	// A switchover that never completes: --timeout ends the wait.
	p.mu.Lock()
	p.withdraw, p.stuck, p.aActive = false, true, true
	p.mu.Unlock()
	code, _, errOut = run("--socket", sock, "--timeout", "300ms", "switchover", "--wait")
	if code != ExitFailed || !strings.Contains(errOut, "switchover accepted, but after") || !strings.Contains(errOut, "b is not active yet and a not yet passive in sync") {
		t.Errorf("a peer that never takes over: exit %d, %q", code, errOut)
	}
}
