// Package metrics exposes the pair's state to Prometheus.
//
// Every metric is derived, at scrape time, from the same api.Status snapshot
// the local API serves, so /metrics and `tandemctl status` can never
// disagree and no component keeps a second copy of its state for metrics.
// Counters come from api.Status.Counters, which the daemon only increments.
//
// Metric names (all prefixed tandem_):
//
//	role{role}                          1 for the current role, 0 for the others
//	epoch                               current epoch
//	maintenance                         1 in maintenance mode
//	peer_alive                          1 while a valid heartbeat arrived within dead-after
//	heartbeat_path_up{path}             1 while the path is up
//	heartbeat_rtt_seconds{path}         last round-trip time
//	heartbeat_loss_ratio{path}          loss over the recent window
//	heartbeat_dropped_total{path}       invalid datagrams dropped
//	replication_committed_lsn           last committed log sequence number
//	replication_peer_acked_lsn          last LSN the peer acknowledged
//	replication_lag_batches/bytes/seconds
//	replication_rejected_frames_total
//	replication_commit_duration_seconds       histogram: a group of commits, formed to released (primary)
//	replication_local_sync_duration_seconds   histogram: the node's own durable write (group or received batch)
//	replication_peer_wait_duration_seconds    histogram: local durability to the peer's ack (sync primary)
//	vip_owned                           1 while this node owns the VIP
//	vip_conflicts_total                 foreign claims seen on the VIP
//	gateway_reachable                   tie-breaker verdict
//	alarms_active{severity}             alarms raised and not cleared
//	runtime_running_jobs                jobs in flight
//	runtime_purged_jobs_total           finished jobs deleted after runtime.job-retention
//	backups_total{result}               WIP store backups taken (ok) or failed since start
//	backup_last_success_timestamp_seconds  creation time of the last backup taken (0: none)
//	promotions_total, demotions_total, self_fences_total, switchovers_total
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/latency"
)

// Roles, in the order the role metric lists them.
var Roles = []string{"starting", "passive", "active", "maintenance", "stopping"}

// Collector turns status snapshots into metrics.
type Collector struct {
	status  func(context.Context) (api.Status, error)
	timeout time.Duration
	descs   map[string]*prometheus.Desc
}

// NewCollector returns a Collector reading status through fn at each scrape.
func NewCollector(fn func(context.Context) (api.Status, error)) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tandem_"+name, help, labels, nil)
	}
	return &Collector{status: fn, timeout: 2 * time.Second, descs: map[string]*prometheus.Desc{
		"role":          d("role", "1 for the node's current role.", "role"),
		"epoch":         d("epoch", "Current epoch."),
		"maintenance":   d("maintenance", "1 in maintenance mode (no automatic failover)."),
		"peer_alive":    d("peer_alive", "1 while the peer's heartbeats arrive."),
		"path_up":       d("heartbeat_path_up", "1 while the heartbeat path is up.", "path"),
		"rtt":           d("heartbeat_rtt_seconds", "Last heartbeat round-trip time.", "path"),
		"loss":          d("heartbeat_loss_ratio", "Heartbeat loss over the recent window.", "path"),
		"dropped":       d("heartbeat_dropped_total", "Invalid heartbeat datagrams dropped.", "path"),
		"committed":     d("replication_committed_lsn", "Last committed log sequence number."),
		"acked":         d("replication_peer_acked_lsn", "Last LSN the peer acknowledged."),
		"lag_batches":   d("replication_lag_batches", "Committed batches the peer has not acknowledged."),
		"lag_bytes":     d("replication_lag_bytes", "Committed bytes the peer has not acknowledged."),
		"lag_seconds":   d("replication_lag_seconds", "Age of the oldest unacknowledged commit."),
		"rejected":      d("replication_rejected_frames_total", "Replication frames rejected."),
		"slow_writes":   d("replication_slow_writes_total", "WIP store writes that took half of disk.stall-timeout or more (since the store opened)."),
		"write_errors":  d("replication_write_errors_total", "Failures of pebble's own work on the WIP store's files: flushes, compactions, background reads (since the store opened)."),
		"retained":      d("replication_retained_bytes", "Bytes of log retained to catch the peer up."),
		"lat_commit":    d("replication_commit_duration_seconds", "Primary: a group of WIP commits from forming to its writers' release (local fsync and, in sync mode, the peer's ack)."),
		"lat_local":     d("replication_local_sync_duration_seconds", "This node's durable WIP write: a group's write and fsync (primary) or a received batch's apply and fsync (secondary)."),
		"lat_peer":      d("replication_peer_wait_duration_seconds", "Sync primary: from a group's local durability to the peer's ack (0 when the ack came first)."),
		"holds":         d("replication_peer_holds_lsn", "Last LSN the peer is known to hold durably (0: not known)."),
		"needs_snap":    d("replication_peer_needs_snapshot", "1 if the peer, reconnecting now, would need a full snapshot (it holds less than the retained log)."),
		"vip_owned":     d("vip_owned", "1 while this node owns the VIP."),
		"vip_conflicts": d("vip_conflicts_total", "Foreign claims of the VIP seen."),
		"gateway":       d("gateway_reachable", "1 while the tie-breaker reaches a gateway."),
		"alarms":        d("alarms_active", "Alarms raised and not cleared.", "severity"),
		"running_jobs":  d("runtime_running_jobs", "Jobs in flight."),
		"purged_jobs":   d("runtime_purged_jobs_total", "Finished jobs deleted after the job retention."),
		"backups":       d("backups_total", "WIP store backups taken (result ok) or failed since the daemon started.", "result"),
		"backup_last":   d("backup_last_success_timestamp_seconds", "Creation time of the last WIP store backup taken since the daemon started (0: none)."),
		"promotions":    d("promotions_total", "Times this node became active."),
		"demotions":     d("demotions_total", "Times this node stopped being active."),
		"self_fences":   d("self_fences_total", "Times this node fenced itself."),
		"switchovers":   d("switchovers_total", "Planned handovers completed from this node."),
		"scrape_error":  d("status_error", "1 if the status could not be read for this scrape."),
	}}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	st, err := c.status(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.descs["scrape_error"], prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.descs["scrape_error"], prometheus.GaugeValue, 0)
	g := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v, labels...)
	}
	cnt := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, v, labels...)
	}
	for _, r := range Roles {
		g("role", b2f(st.Role == r), r)
	}
	g("epoch", float64(st.Epoch))
	g("maintenance", b2f(st.Maintenance))
	g("peer_alive", b2f(st.PeerView.Alive))
	for _, p := range st.Paths {
		g("path_up", b2f(p.Up), p.Name)
		g("rtt", p.RTT.Seconds(), p.Name)
		g("loss", p.Loss, p.Name)
		cnt("dropped", float64(p.Dropped), p.Name)
	}
	r := st.Replication
	g("committed", float64(r.CommittedLSN))
	g("acked", float64(r.PeerAckedLSN))
	g("lag_batches", float64(r.LagBatches))
	g("lag_bytes", float64(r.LagBytes))
	g("lag_seconds", r.LagTime.Seconds())
	cnt("rejected", float64(r.Rejected))
	cnt("slow_writes", float64(r.SlowWrites))
	cnt("write_errors", float64(r.WriteErrorsTotal))
	g("retained", float64(r.RetainedBytes))
	hist := func(name string, h latency.Histogram) {
		buckets := make(map[float64]uint64, len(latency.Bounds))
		var cum uint64
		for i, b := range latency.Bounds {
			cum += h.Counts[i]
			// Not b.Seconds(): its sum of whole and fractional seconds
			// makes le="1.6383999999999999" of 1.6384 s.
			buckets[float64(b)/float64(time.Second)] = cum
		}
		ch <- prometheus.MustNewConstHistogram(c.descs[name], h.Count, float64(h.Sum)/float64(time.Second), buckets)
	}
	hist("lat_commit", r.Latency.Commit)
	hist("lat_local", r.Latency.LocalSync)
	hist("lat_peer", r.Latency.PeerWait)
	g("holds", float64(r.PeerHoldsLSN))
	g("needs_snap", b2f(r.PeerCatchUp == "snapshot"))
	g("vip_owned", b2f(st.VIP.Owned))
	cnt("vip_conflicts", float64(st.VIP.Conflicts))
	g("gateway", b2f(st.TieBreaker.GatewayReachable))
	sev := map[string]int{"warning": 0, "critical": 0}
	for _, a := range st.Alarms {
		sev[a.Severity]++
	}
	for s, n := range sev {
		g("alarms", float64(n), s)
	}
	g("running_jobs", float64(st.Runtime.Running))
	cnt("purged_jobs", float64(st.Runtime.Purged))
	cnt("backups", float64(st.Backup.Taken), "ok")
	cnt("backups", float64(st.Backup.Failed), "failed")
	last := 0.0
	if st.Backup.Last != nil {
		last = float64(st.Backup.Last.Created.UnixNano()) / 1e9
	}
	g("backup_last", last)
	cnt("promotions", float64(st.Counters.Promotions))
	cnt("demotions", float64(st.Counters.Demotions))
	cnt("self_fences", float64(st.Counters.SelfFences))
	cnt("switchovers", float64(st.Counters.Switchovers))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
