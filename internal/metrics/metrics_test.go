package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandem-ha/tandem/internal/api"
)

func TestMetricsFollowStatus(t *testing.T) {
	st := api.Status{
		Role: "active", Epoch: 9,
		PeerView:    api.PeerStatus{Alive: true},
		Paths:       []api.PathStatus{{Name: "ha1", Up: true, RTT: 250 * time.Microsecond, Loss: 0.05, Dropped: 2}},
		Replication: api.ReplicationStatus{CommittedLSN: 100, PeerAckedLSN: 98, LagBatches: 2, RetainedBytes: 4096, PeerHoldsLSN: 40, PeerCatchUp: "snapshot", SlowWrites: 3, WriteErrorsTotal: 11},
		VIP:         api.VIPStatus{Owned: true},
		Alarms:      []api.Alarm{{ID: "x", Severity: "critical"}},
		Counters:    api.Counters{Promotions: 3, SelfFences: 1},
		Backup:      api.BackupStatus{Taken: 5, Failed: 1, Last: &api.BackupInfo{Created: time.Unix(1796500000, 0)}},
	}
	for _, d := range []time.Duration{40 * time.Microsecond, 40 * time.Microsecond, 40 * time.Microsecond, 3 * time.Millisecond, 8 * time.Second} {
		st.Replication.Latency.Commit.Observe(d)
	}
	st.Replication.RecentLatency.Commit.Observe(time.Second) // not exported: rate() over the totals serves
	c := NewCollector(func(context.Context) (api.Status, error) { return st, nil })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	want := `
# HELP tandem_replication_commit_duration_seconds Primary: a group of WIP commits from forming to its writers' release (local fsync and, in sync mode, the peer's ack).
# TYPE tandem_replication_commit_duration_seconds histogram
tandem_replication_commit_duration_seconds_bucket{le="5e-05"} 3
tandem_replication_commit_duration_seconds_bucket{le="0.0001"} 3
tandem_replication_commit_duration_seconds_bucket{le="0.0002"} 3
tandem_replication_commit_duration_seconds_bucket{le="0.0004"} 3
tandem_replication_commit_duration_seconds_bucket{le="0.0008"} 3
tandem_replication_commit_duration_seconds_bucket{le="0.0016"} 3
tandem_replication_commit_duration_seconds_bucket{le="0.0032"} 4
tandem_replication_commit_duration_seconds_bucket{le="0.0064"} 4
tandem_replication_commit_duration_seconds_bucket{le="0.0128"} 4
tandem_replication_commit_duration_seconds_bucket{le="0.0256"} 4
tandem_replication_commit_duration_seconds_bucket{le="0.0512"} 4
tandem_replication_commit_duration_seconds_bucket{le="0.1024"} 4
tandem_replication_commit_duration_seconds_bucket{le="0.2048"} 4
tandem_replication_commit_duration_seconds_bucket{le="0.4096"} 4
tandem_replication_commit_duration_seconds_bucket{le="0.8192"} 4
tandem_replication_commit_duration_seconds_bucket{le="1.6384"} 4
tandem_replication_commit_duration_seconds_bucket{le="3.2768"} 4
tandem_replication_commit_duration_seconds_bucket{le="6.5536"} 4
tandem_replication_commit_duration_seconds_bucket{le="+Inf"} 5
tandem_replication_commit_duration_seconds_sum 8.00312
tandem_replication_commit_duration_seconds_count 5
# HELP tandem_backup_last_success_timestamp_seconds Creation time of the last WIP store backup taken since the daemon started (0: none).
# TYPE tandem_backup_last_success_timestamp_seconds gauge
tandem_backup_last_success_timestamp_seconds 1.7965e+09
# HELP tandem_backups_total WIP store backups taken (result ok) or failed since the daemon started.
# TYPE tandem_backups_total counter
tandem_backups_total{result="failed"} 1
tandem_backups_total{result="ok"} 5
# HELP tandem_epoch Current epoch.
# TYPE tandem_epoch gauge
tandem_epoch 9
# HELP tandem_heartbeat_rtt_seconds Last heartbeat round-trip time.
# TYPE tandem_heartbeat_rtt_seconds gauge
tandem_heartbeat_rtt_seconds{path="ha1"} 0.00025
# HELP tandem_promotions_total Times this node became active.
# TYPE tandem_promotions_total counter
tandem_promotions_total 3
# HELP tandem_replication_peer_needs_snapshot 1 if the peer, reconnecting now, would need a full snapshot (it holds less than the retained log).
# TYPE tandem_replication_peer_needs_snapshot gauge
tandem_replication_peer_needs_snapshot 1
# HELP tandem_replication_retained_bytes Bytes of log retained to catch the peer up.
# TYPE tandem_replication_retained_bytes gauge
tandem_replication_retained_bytes 4096
# HELP tandem_replication_slow_writes_total WIP store writes that took half of disk.stall-timeout or more (since the store opened).
# TYPE tandem_replication_slow_writes_total counter
tandem_replication_slow_writes_total 3
# HELP tandem_replication_write_errors_total Failures of pebble's own work on the WIP store's files: flushes, compactions, background reads (since the store opened).
# TYPE tandem_replication_write_errors_total counter
tandem_replication_write_errors_total 11
# HELP tandem_role 1 for the node's current role.
# TYPE tandem_role gauge
tandem_role{role="active"} 1
tandem_role{role="maintenance"} 0
tandem_role{role="passive"} 0
tandem_role{role="starting"} 0
tandem_role{role="stopping"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tandem_backup_last_success_timestamp_seconds", "tandem_backups_total", "tandem_epoch", "tandem_heartbeat_rtt_seconds", "tandem_promotions_total", "tandem_replication_commit_duration_seconds", "tandem_replication_peer_needs_snapshot", "tandem_replication_retained_bytes", "tandem_replication_slow_writes_total", "tandem_replication_write_errors_total", "tandem_role"); err != nil {
		t.Error(err)
	}
	// The other two histograms are there, empty.
	if n, err := testutil.GatherAndCount(reg, "tandem_replication_local_sync_duration_seconds", "tandem_replication_peer_wait_duration_seconds"); err != nil || n != 2 {
		t.Errorf("gathered %d local sync and peer wait histograms (%v), want 2", n, err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n < 25 {
		t.Errorf("gathered %d metrics (%v)", n, err)
	}
	st.Role = "passive"
	st.Counters.Promotions = 4
	if got := testutil.ToFloat64(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		c.Collect(filter(ch, "tandem_promotions_total"))
	})); got != 4 {
		t.Errorf("promotions after the status changed = %v, want 4", got)
	}
}

func TestStatusErrorIsVisible(t *testing.T) {
	c := NewCollector(func(context.Context) (api.Status, error) { return api.Status{}, errors.New("stopping") })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tandem_status_error 1 if the status could not be read for this scrape.
# TYPE tandem_status_error gauge
tandem_status_error 1
`), "tandem_status_error"); err != nil {
		t.Error(err)
	}
}

// filter passes only the named metric on to out.
func filter(out chan<- prometheus.Metric, name string) chan<- prometheus.Metric {
	in := make(chan prometheus.Metric)
	go func() {
		for m := range in {
			if strings.Contains(m.Desc().String(), `"`+name+`"`) {
				out <- m
			}
		}
	}()
	return in
}
