package pairlab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/latency"
	"github.com/tandem-ha/tandem/test/lab"
)

// scrapeMetrics fetches h's /metrics (management.metrics: its LAN address,
// port 9100) over a connection opened inside h's namespace. The request is
// written by hand: net/http would dial from another goroutine, outside it.
func scrapeMetrics(t *testing.T, h *lab.Host) string {
	t.Helper()
	var c net.Conn
	if err := h.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(h.LAN4.String(), "9100"), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s's metrics: %v", h.Name, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", h.LAN4); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s's metrics: %v", h.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s's metrics: %s, %v", h.Name, resp.Status, err)
	}
	return string(b)
}

// hasAlarm reports whether st carries the alarm id.
func hasAlarm(st api.Status, id string) bool {
	for _, a := range st.Alarms {
		if a.ID == id {
			return true
		}
	}
	return false
}

// TestE2EPeerAwayPastTheLog: with a 64 KiB retained log, the passive is
// stopped while the active takes 300 jobs alone. The active's status and
// tandemctl say that the passive would now need a full snapshot, and the
// warning wip-peer-needs-snapshot stands, beside wip-peer-outdated (the
// active acknowledges alone); the passive, started again, is resynced by
// snapshot, both warnings clear, and after a kill of the active it holds
// every acknowledged job.
func TestE2EPeerAwayPastTheLog(t *testing.T) {
	const alarm = "wip-peer-needs-snapshot"
	e := newE2EWith(t, Options{RetainBytes: "65536"})
	a, b := e.pair.A, e.pair.B
	deployIngest(t, e, a)
	acked := startIngestLoad(t, e, "paired", 20, 4, time.Minute).wait(t)
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	if _, err := a.WaitFor(ctx, "a to know what b holds", func(s api.Status) bool {
		return s.Replication.PeerCatchUp == "log" && s.Replication.PeerHoldsLSN > 0
	}); err != nil {
		t.Fatal(err)
	}
	// The jobs' commits, paired in sync mode, are in the latency
	// histograms: the active's commit and peer wait, the passive's syncs.
	if sa, sb := e.status(a), e.status(b); sa.Replication.Latency.Commit.Count == 0 || sa.Replication.Latency.PeerWait.Count == 0 ||
		sb.Replication.Latency.LocalSync.Count == 0 || sb.Replication.Latency.Commit.Count != 0 || len(sa.Replication.Latency.Bounds) != latency.Buckets-1 {
		t.Errorf("latency histograms after paired commits: a %+v, b %+v", sa.Replication.Latency, sb.Replication.Latency)
	}
	if out, err := a.Ctl(e.ctx, "status"); err != nil || !strings.Contains(out, "latency, last 1-2 min: commit p50 <=") {
		t.Errorf("tandemctl status on a: %v; want the latency line\n%s", err, out)
	}
	if m := scrapeMetrics(t, e.lab.Host(lab.NodeA)); !strings.Contains(m, "tandem_replication_peer_wait_duration_seconds_bucket{le=\"0.0001\"}") ||
		strings.Contains(m, "tandem_replication_commit_duration_seconds_count 0\n") {
		t.Errorf("a's /metrics lacks the latency histograms or counts no commit:\n%s", m)
	}

	if err := b.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for k, v := range startIngestLoad(t, e, "alone", 300, 8, time.Minute).wait(t) {
		acked[k] = v
	}
	st, err := a.WaitFor(ctx, "the warnings on a", func(s api.Status) bool { return hasAlarm(s, alarm) && hasAlarm(s, "wip-peer-outdated") })
	if err != nil {
		t.Fatal(err)
	}
	if r := st.Replication; r.PeerCatchUp != "snapshot" || r.PeerHoldsLSN == 0 || r.RetainedFirst <= r.PeerHoldsLSN+1 || r.RetainedBytes > 65536 {
		t.Errorf("a's replication status with b away past the log: %+v", r)
	}
	if out, err := a.Ctl(e.ctx, "status"); err != nil || !strings.Contains(out, "it would need a FULL SNAPSHOT") || !strings.Contains(out, alarm) {
		t.Errorf("tandemctl status on a: %v; want the snapshot and the warning\n%s", err, out)
	}

	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	e.role(b, "passive", "in-sync")
	if _, err := a.WaitFor(ctx, "the warnings to clear", func(s api.Status) bool {
		return !hasAlarm(s, alarm) && !hasAlarm(s, "wip-peer-outdated") && s.Replication.PeerCatchUp == "log"
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.Log(), "snapshot started") {
		t.Errorf("b rejoined without a snapshot")
	}
	crashAndCheck(t, e, a, b, acked, 320)
}

// TestE2EBlockedCommitsRaiseTheAlarm: with on-peer-loss block the passive is
// stopped, and the active's next commits wait for it. Past peer-ack-timeout
// (1 s in the lab) the active raises the critical alarm wip-commits-wait,
// and never goes on alone (no wip-peer-outdated, no trigger accepted). The
// passive, started again, acks them: every trigger is accepted, the alarm
// clears, and after a kill of the active the passive holds every job.
func TestE2EBlockedCommitsRaiseTheAlarm(t *testing.T) {
	const alarm = "wip-commits-wait"
	e := newE2EWith(t, Options{OnPeerLoss: "block"})
	a, b := e.pair.A, e.pair.B
	deployIngest(t, e, a)
	if err := b.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	load := startIngestLoad(t, e, "blocked", 6, 3, time.Minute)
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	st, err := a.WaitFor(ctx, "the alarm on a", func(s api.Status) bool { return hasAlarm(s, alarm) })
	if err != nil {
		t.Fatal(err)
	}
	for _, al := range st.Alarms {
		if al.ID == alarm && (al.Severity != "critical" || !strings.Contains(al.Text, "on-peer-loss is block")) {
			t.Errorf("a's %s: %+v", alarm, al)
		}
	}
	if hasAlarm(st, "wip-peer-outdated") || st.Replication.PeerOutdated || st.Replication.AckWaitSince.IsZero() {
		t.Errorf("a in block mode without its peer: alarms %+v, replication %+v", st.Alarms, st.Replication)
	}
	if n := load.accepted.Load(); n != 0 {
		t.Errorf("%d triggers accepted while the commits wait for the peer", n)
	}
	if out, err := a.Ctl(e.ctx, "status"); err != nil || !strings.Contains(out, "CRITICAL") || !strings.Contains(out, alarm) {
		t.Errorf("tandemctl status on a: %v; want the critical alarm\n%s", err, out)
	}

	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	acked := load.wait(t)
	if _, err := a.WaitFor(ctx, "the alarm to clear", func(s api.Status) bool { return !hasAlarm(s, alarm) }); err != nil {
		t.Fatal(err)
	}
	e.role(b, "passive", "in-sync")
	crashAndCheck(t, e, a, b, acked, 6)
}
