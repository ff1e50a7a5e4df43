package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/connectors/all"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/engine"
	"github.com/tandem-ha/tandem/internal/pair"
	"github.com/tandem-ha/tandem/internal/tiebreak"
	"github.com/tandem-ha/tandem/wip"
)

// This file adapts the concrete components to the driver's narrow
// interfaces (driver.go).

// wipStore is the WIP store as the driver and the runtime see it.
type wipStore struct {
	*wip.Store
	mode string
}

// openStore opens data-dir/wip. pairEpoch is the pair state's epoch: on a
// node that has been in a pair (> 0), a store that holds nothing of it
// (moved away by the operator, a new one) is Inconsistent, and receives
// the active's data before it can be promoted, instead of being an empty
// promotable one. A store that pebble cannot open for corruption is set
// aside beside it and replaced the same way (wip.Options.SetAsideCorrupt);
// the wip-set-aside alarm says where it went.
func openStore(cfg *config.Config, key []byte, self uint8, pairEpoch uint64, clk clock.Clock, log *zap.Logger, gate *goAloneGate, events func(wip.Event)) (*wipStore, error) {
	o := wip.Options{
		Clock: clk, Logger: log, NodeID: self, PairKey: key,
		PeerAckTimeout:      cfg.Replication.PeerAckTimeout.D(),
		StallTimeout:        cfg.Disk.StallTimeout.D(),
		RetainBytes:         cfg.Replication.RetainBytes,
		RetainAge:           cfg.Replication.RetainAge.D(),
		MaxUnackedGroups:    cfg.Replication.MaxUnackedGroups,
		MayGoAlone:          gate.check,
		Events:              events,
		SetAsideCorrupt:     true,
		EmptyIsInconsistent: pairEpoch > 0,
	}
	if nl, np := len(cfg.Replication.Listen), len(cfg.Replication.Peers); nl != np {
		// Not an error: a configuration written before listen took a list
		// still starts. But the peer's further addresses are only of use
		// if the peer listens there, and it dials ours.
		log.Warn("replication.listen and replication.peers list different numbers of addresses; give one of each per HA link, in the same order, or replication cannot move to another HA link when one is cut",
			zap.Int("listen", nl), zap.Int("peers", np))
	}
	for i, a := range cfg.Replication.Listen { // config.check requires one
		if i == 0 {
			o.ListenAddr = a.String()
		} else {
			o.ExtraListenAddrs = append(o.ExtraListenAddrs, a.String())
		}
	}
	if len(cfg.Replication.Peers) > 0 {
		// HA link 1 first; the store moves to the next link's address
		// when a session ends or a dial fails.
		o.PeerAddr = cfg.Replication.Peers[0].String()
		for _, a := range cfg.Replication.Peers[1:] {
			o.ExtraPeerAddrs = append(o.ExtraPeerAddrs, a.String())
		}
	}
	if cfg.Replication.Mode == "async" {
		o.Mode = wip.Async
	}
	if cfg.Replication.OnPeerLoss == "block" {
		o.PeerLoss = wip.Block
	}
	s, err := wip.Open(cfg.DataDir+"/wip", o)
	if err != nil {
		return nil, cfg.Wrap("replication", err)
	}
	return &wipStore{Store: s, mode: cfg.Replication.Mode}, nil
}

func (w *wipStore) Promote(ctx context.Context, epoch uint64, force, peerFollows bool) error {
	// The machine promotes only when the peer is silent on every path and
	// the tie-breaker confirms (or on a handover the peer asked for):
	// the pair's verdict outranks a TCP session that has not noticed yet.
	opts := []wip.PromoteOption{wip.PeerGone()}
	if force {
		opts = append(opts, wip.Force())
	}
	if peerFollows {
		// A handover: the old active reconnects as passive; commits wait
		// for it and it stays promotable (RPO 0 through a switchover).
		opts = append(opts, wip.PeerFollows())
	}
	return w.Store.Promote(ctx, epoch, opts...)
}

// Replication maps the store's status onto the machine's inputs (I5:
// an Outdated or Inconsistent replica says so) and the API's view.
func (w *wipStore) Replication() (pair.Replication, api.ReplicationStatus) {
	return replicationView(w.Store.Status(), w.mode)
}

// replicationView is Replication's mapping of a store status s, of a store
// in replication mode mode.
func replicationView(s wip.Status, mode string) (pair.Replication, api.ReplicationStatus) {
	r := pair.Replication{LSN: s.DurableLSN, Failed: s.Failed != ""}
	switch {
	case s.Inconsistent, (s.Corruption != "" || s.Failed != "") && s.Role != wip.Primary:
		// A corrupt secondary is not promotable (wip refuses it) even
		// when a snapshot did not repair it and it is consistent again;
		// nor is a failed one, until tandemd is restarted.
		r.State = pair.ReplInconsistent
	case s.Outdated:
		r.State = pair.ReplOutdated
	case s.Role == wip.Primary:
		r.State = pair.ReplInSync
		r.PeerInSync = s.PeerState == wip.PeerInSync
		r.PeerAckedAll = r.PeerInSync && s.PeerAckedLSN >= s.CommittedLSN
	case s.PeerState == wip.PeerInSync:
		r.State = pair.ReplInSync
	case s.PeerState == wip.PeerCatchingUp || s.PeerState == wip.PeerSnapshot:
		r.State = pair.ReplCatchingUp
	default:
		r.State = pair.ReplDisconnected
	}
	data := r.State.String()
	if s.Inconsistent && s.SnapshotPercent > 0 {
		data = fmt.Sprintf("inconsistent (snapshot %.0f%%)", s.SnapshotPercent)
	}
	if s.Corruption != "" {
		data += ", corrupt"
	}
	if s.Failed != "" {
		data += ", failed"
	}
	peer := s.PeerState.String()
	peerOutdated := s.PeerOutdated && s.Role == wip.Primary && s.PeerState != wip.PeerInSync
	switch {
	case peerOutdated && s.PeerSnapshotPercent > 0:
		peer = fmt.Sprintf("outdated (snapshot %.0f%%)", s.PeerSnapshotPercent)
	case peerOutdated:
		peer = "outdated"
	case s.PeerSnapshotPercent > 0:
		peer = fmt.Sprintf("snapshot %.0f%%", s.PeerSnapshotPercent)
	}
	session := ""
	if s.SessionLocal != "" {
		session = s.SessionLocal + " -> " + s.SessionPeer
	}
	return r, api.ReplicationStatus{
		Session:           session,
		Role:              s.Role.String(),
		Mode:              mode,
		DataState:         data,
		PeerState:         peer,
		CommittedLSN:      s.CommittedLSN,
		PeerAckedLSN:      s.PeerAckedLSN,
		LagBatches:        s.LagBatches,
		LagBytes:          uint64(max(s.LagBytes, 0)),
		LagTime:           time.Duration(s.LagSeconds * float64(time.Second)),
		Rejected:          s.Counters.RejectedFrames + s.Counters.RejectedAuth + s.Counters.RejectedVersion + s.Counters.RejectedMode,
		RetainedFirst:     s.RetainedFirst,
		RetainedLast:      s.RetainedLast,
		RetainedBytes:     uint64(max(s.RetainedBytes, 0)),
		PeerHoldsLSN:      s.OtherHoldsLSN,
		PeerCatchUp:       s.OtherCatchUp,
		LastError:         s.LastError,
		LastErrorAt:       s.LastErrorAt,
		NextDialAt:        s.NextDialAt,
		DialError:         s.DialError,
		AckWaitSince:      s.AckWaitSince,
		PeerOutdated:      peerOutdated,
		GoAloneRefusal:    s.GoAloneRefusal,
		Corruption:        s.Corruption,
		CorruptionRepair:  s.CorruptionRepair,
		Failed:            s.Failed,
		FailedStall:       s.FailedStall,
		StallOver:         s.StallOver,
		WriteError:        s.BackgroundError,
		WriteErrorSince:   s.BackgroundErrorSince,
		WriteErrors:       s.BackgroundErrors,
		WriteErrorJobs:    s.BackgroundErrorJobs,
		WriteErrorNoSpace: s.BackgroundErrorNoSpace,
		WriteErrorsTotal:  s.Counters.BackgroundErrors,
		StalledSince:      s.StalledSince,
		StallReason:       s.StallReason,
		SlowWrite:         s.SlowWrite,
		SlowWriteSince:    s.SlowWriteSince,
		SlowWrites:        s.Counters.SlowWrites,
		Latency:           latencyStatus(s.Latency),
		RecentLatency:     latencyStatus(s.RecentLatency),
	}
}

// latencyStatus is l for the API. The bucket bounds are the API
// handler's to add (backend.Status): the driver reads this every tick.
func latencyStatus(l wip.Latencies) api.LatencyStatus {
	return api.LatencyStatus{Commit: l.Commit, LocalSync: l.LocalSync, PeerWait: l.PeerWait}
}

// runtimeAdapter is the engine as the driver sees it.
type runtimeAdapter struct{ *engine.Engine }

func (r runtimeAdapter) Pause(ctx context.Context) (string, error) {
	rep, err := r.Engine.Pause(ctx)
	return fmt.Sprintf("waited for %d job(s), handed over %d at their checkpoints, forced=%t, took %v",
		len(rep.Waited), len(rep.HandedOver), rep.Forced, rep.Took.Round(time.Millisecond)), err
}

func openRuntime(cfg *config.Config, st *wipStore, clk clock.Clock, log *zap.Logger, events func(api.Event)) (*runtimeAdapter, error) {
	reg := &connectors.Registry{}
	all.Register(reg)
	e, err := engine.New(engine.Options{
		Store: engine.OnWIP(st.Store), Connectors: reg, Clock: clk, Logger: log, Node: cfg.Node,
		ForceStopAfter: cfg.Runtime.ForceStopAfter.D(), Events: events,
		JobRetention: cfg.Runtime.JobRetention.D(), PurgeEvery: cfg.Runtime.PurgeEvery.D(),
	})
	if err != nil {
		return nil, cfg.Wrap("runtime", err)
	}
	return &runtimeAdapter{e}, nil
}

// gateway adapts tiebreak.Gateway.
type gateway struct{ g *tiebreak.Gateway }

func (g gateway) Probe(ctx context.Context) (bool, error) {
	r := g.g.Probe(ctx)
	return r.Reachable, r.Err
}

func newGatewayProber(cfg *config.Config, t pair.Timing, clk clock.Clock, log *zap.Logger) (gateway, func(), error) {
	gws := make([]netip.Addr, 0, len(cfg.TieBreaker.Gateways))
	for _, a := range cfg.TieBreaker.Gateways {
		gws = append(gws, a.Addr)
	}
	c := tiebreak.Config{Interface: cfg.VIP.Interface, Gateways: gws, Interval: t.ProbeEvery, Timeout: t.ProbeTimeout, Clock: clk, Logger: log}
	if w := cfg.TieBreaker.Witness; w.IsValid() {
		c.Witness = "tcp:" + w.String()
	}
	g, err := tiebreak.NewGateway(c)
	if err != nil {
		return gateway{}, nil, err
	}
	return gateway{g}, func() { g.Close() }, nil
}

func openWatchdog(path string) (watchdogDev, error) { return tiebreak.OpenWatchdog(path) }

func watchLink(ctx context.Context, ifname string, out func(up bool)) error {
	return tiebreak.WatchLink(ctx, ifname, out)
}
