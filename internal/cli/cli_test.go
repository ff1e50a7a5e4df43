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
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/api"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

type backend struct {
	maint []bool
	acked []string
}

func (b *backend) Status(context.Context) (api.Status, error) {
	return api.Status{
		Node: "a", Peer: "b", Role: "active", SubState: "paired", Epoch: 7, RoleSince: t0.Add(-90 * time.Second),
		PeerView: api.PeerStatus{Alive: true, Role: "passive", Epoch: 7, DataState: "up-to-date", LastSeen: t0.Add(-40 * time.Millisecond)},
		Paths: []api.PathStatus{
			{Name: "ha1", Up: true, RTT: 180 * time.Microsecond, LastSeen: t0.Add(-40 * time.Millisecond)},
			{Name: "lan", Up: false, Loss: 1, LastSeen: t0.Add(-5 * time.Second), Dropped: 3},
		},
		Replication: api.ReplicationStatus{Role: "primary", Mode: "sync", DataState: "up-to-date", PeerState: "in-sync", CommittedLSN: 1234, PeerAckedLSN: 1234, Session: "198.51.100.5:7101 -> 198.51.100.6:41000"},
		VIP:         api.VIPStatus{Addresses: []string{"192.0.2.10/24"}, Owned: true, Since: t0.Add(-89 * time.Second)},
		TieBreaker:  api.TieBreakerStatus{GatewayReachable: true, Checked: t0.Add(-time.Second)},
		Runtime:     api.RuntimeStatus{State: "running", Running: 3},
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
		"peer b: passive, epoch 7, data up-to-date, last heartbeat 40ms ago",
		"ha1   up   rtt 180µs",
		"lan   DOWN rtt 0s        loss 100.0%  last seen 5s ago  (3 invalid datagrams dropped)",
		"committed LSN 1234, peer acked 1234",
		"  session 198.51.100.5:7101 -> 198.51.100.6:41000",
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

// drill is a backend whose status moves through a switchover: active,
// then passive syncing with the peer active in epoch 8, then in sync.
type drill struct {
	backend
	mu     sync.Mutex
	polls  int
	called bool
	stuck  bool // the peer never takes over
}

func (d *drill) Switchover(context.Context) (api.ActionResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.called = true
	return api.ActionResult{Accepted: true, Text: "switchover started"}, nil
}

func (d *drill) Status(context.Context) (api.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := api.Status{Node: "a", Peer: "b", Role: "active", SubState: "paired", Epoch: 7,
		PeerView: api.PeerStatus{Role: "passive", Epoch: 7}}
	if d.called && !d.stuck {
		d.polls++
		switch {
		case d.polls >= 4:
			st.Role, st.SubState, st.PeerView = "passive", "in-sync", api.PeerStatus{Role: "active", Epoch: 8}
		case d.polls >= 2:
			st.Role, st.SubState, st.PeerView = "passive", "syncing", api.PeerStatus{Role: "active", Epoch: 8}
		}
	}
	return st, nil
}

func TestSwitchoverWait(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := api.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	d := &drill{}
	srv := &http.Server{Handler: api.NewServer(d, zap.NewNop())}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	defer func() { srv.Close(); <-done }()
	code, out, errOut := run("--socket", sock, "switchover", "--wait")
	if code != ExitOK || !strings.Contains(out, "switchover started\nb active in epoch 8 after ") || !strings.Contains(out, "; this node passive and in sync after ") {
		t.Fatalf("switchover --wait: exit %d, %q %q", code, out, errOut)
	}
	if d.polls < 4 {
		t.Errorf("returned after %d polls, before this node was in sync", d.polls)
	}
	var times SwitchoverTimes
	d.called, d.polls = false, 0
	code, out, _ = run("--socket", sock, "--json", "switchover", "--wait")
	if code != ExitOK || json.Unmarshal([]byte(out), &times) != nil || times.Epoch != 8 || times.Peer != "b" || times.SyncAfter < times.PeerAfter {
		t.Errorf("--json: exit %d, %q", code, out)
	}
	d.mu.Lock()
	d.called, d.stuck = false, true
	d.mu.Unlock()
	code, _, errOut = run("--socket", sock, "--timeout", "300ms", "switchover", "--wait")
	if code != ExitFailed || !strings.Contains(errOut, "switchover accepted, but after") || !strings.Contains(errOut, "the peer is not active yet") {
		t.Errorf("a peer that never takes over: exit %d, %q", code, errOut)
	}
}
