package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/heartbeat"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/latency"
	"github.com/tandem-ha/tandem/internal/pair"

	"go.uber.org/zap"
)

// Version is set at build time (-ldflags "-X .../daemon.Version=...").
var Version = "dev"

// backend answers the local API. Reads come from snapshots the driver
// publishes (never from the machine itself, which only the driver
// touches); commands go through the driver's admin channel and wait for the
// machine's verdict.
type backend struct {
	d    *driver
	peer string
	hb   *heartbeat.Heartbeat
	bj   *backupJob // nil in tests without one
}

var _ api.Backend = (*backend)(nil)

func (b *backend) Status(ctx context.Context) (api.Status, error) {
	d := b.d
	ps := d.status.Load()
	if ps == nil {
		return api.Status{}, fmt.Errorf("%w: starting", api.ErrUnavailable)
	}
	now := d.clk.Now()
	st := api.Status{
		Node:                d.node,
		Peer:                b.peer,
		Role:                roleName(*ps),
		SubState:            ps.Substate,
		Epoch:               ps.Epoch,
		Maintenance:         ps.Maintenance,
		SwitchoverRequested: ps.SwitchoverRequested,
		SwitchoverReady:     ps.SwitchoverBlocked == "",
		SwitchoverBlocked:   ps.SwitchoverBlocked,
		PeerView: api.PeerStatus{
			Alive:        ps.PeerAlive,
			Role:         ps.Peer.Role.String(),
			Epoch:        ps.Peer.Epoch,
			CommittedLSN: ps.Peer.LSN,
			AppliedLSN:   ps.Peer.LSN,
			DataState:    peerData(ps.Peer),
			LastSeen:     ps.LastHeard,
		},
		Alarms:  d.ev.activeAlarms(),
		Events:  d.ev.last(20),
		Version: Version,
		Now:     now,
	}
	if !ps.PeerSeen {
		st.PeerView.Role = "unknown"
	}
	for _, p := range b.hb.Stats() {
		st.Paths = append(st.Paths, pathStatus(p))
	}
	_, st.Replication = d.store.Replication()
	bounds := append([]time.Duration(nil), latency.Bounds[:]...) // the JSON's own copy
	st.Replication.Latency.Bounds, st.Replication.RecentLatency.Bounds = bounds, bounds
	if b.bj != nil {
		st.Backup = *b.bj.status.Load()
	}
	vs := d.vip.Status()
	st.VIP = api.VIPStatus{Owned: vs.Owned, Since: vs.Since, Conflicts: vs.Conflicts}
	for _, p := range vs.VIPs {
		st.VIP.Addresses = append(st.VIP.Addresses, p.String())
	}
	if vs.MAC != nil && vs.Link != "" && vs.Owned {
		st.VIP.VirtualMAC = vs.MAC.String()
	}
	if g := d.gwState.Load(); g != nil {
		st.TieBreaker = *g
	}
	if d.rt != nil {
		st.Runtime = d.rt.Status()
	} else {
		st.Runtime = api.RuntimeStatus{State: "none"}
	}
	st.RoleSince = d.roleSince()
	st.Counters = api.Counters{
		Promotions:  d.counters.promotions.Load(),
		Demotions:   d.counters.demotions.Load(),
		SelfFences:  d.counters.fences.Load(),
		Switchovers: d.counters.switchovers.Load(),
	}
	return st, nil
}

func roleName(s pair.Status) string {
	if s.Maintenance && s.Role != pair.RoleActive && s.Role != pair.RoleStopping {
		return "maintenance"
	}
	return s.Role.String()
}

// peerData is the peer's data as its heartbeat tells it: "ok", or
// "outdated" (I5), "failed" (its store has failed: it cannot follow or
// take over; NoFollow), or both.
func peerData(a pair.Advert) string {
	var d []string
	if a.Outdated {
		d = append(d, "outdated")
	}
	if a.NoFollow {
		d = append(d, "failed")
	}
	if len(d) == 0 {
		return "ok"
	}
	return strings.Join(d, ", ")
}

func pathStatus(p heartbeat.PathStats) api.PathStatus {
	return api.PathStatus{
		Name:     p.Name,
		Up:       p.Up,
		RTT:      p.RTT,
		Loss:     p.Loss,
		LastSeen: p.LastSeen,
		Dropped:  p.Dropped.Malformed + p.Dropped.Stranger + p.Dropped.BadMAC + p.Dropped.Replay,
	}
}

func (b *backend) Events(ctx context.Context, after uint64) ([]api.Event, error) {
	return b.d.ev.after(after), nil
}

// command hands an admin event to the driver and waits for the machine.
func (b *backend) command(ctx context.Context, ev pair.Admin, ok string) (api.ActionResult, error) {
	return b.commandThen(ctx, ev, func(pair.Status) string { return ok })
}

// commandThen is command with the answer's text made from the machine's
// status right after the command.
func (b *backend) commandThen(ctx context.Context, ev pair.Admin, ok func(pair.Status) string) (api.ActionResult, error) {
	req := adminReq{ev: ev, reply: make(chan adminReply, 1)}
	select {
	case b.d.admin <- req:
	case <-ctx.Done():
		return api.ActionResult{}, fmt.Errorf("%w: the daemon is busy", api.ErrUnavailable)
	case <-b.d.runCtx.Done():
		return api.ActionResult{}, fmt.Errorf("%w: the daemon is stopping", api.ErrUnavailable)
	}
	select {
	case r := <-req.reply:
		if err := r.err; err != nil {
			if errors.Is(err, pair.ErrRefused) {
				return api.ActionResult{Accepted: false, Text: err.Error()}, fmt.Errorf("%w: %v", api.ErrConflict, err)
			}
			if errors.Is(err, pair.ErrNoSuchAlarm) {
				return api.ActionResult{Accepted: false, Text: err.Error()}, fmt.Errorf("%w: %v", api.ErrNotFound, err)
			}
			return api.ActionResult{Accepted: false, Text: err.Error()}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		return api.ActionResult{Accepted: true, Text: ok(r.st)}, nil
	case <-ctx.Done():
		return api.ActionResult{}, ctx.Err()
	}
}

func (b *backend) Switchover(ctx context.Context) (api.ActionResult, error) {
	return b.commandThen(ctx, pair.Admin{Cmd: pair.AdminSwitchover}, func(st pair.Status) string {
		if st.SwitchoverRequested {
			return "switchover requested: the active peer pauses its runtime, then hands over to this node"
		}
		return "switchover started: the runtime pauses, then the peer takes over"
	})
}

func (b *backend) Maintenance(ctx context.Context, on bool) (api.ActionResult, error) {
	if on {
		return b.command(ctx, pair.Admin{Cmd: pair.AdminMaintenanceOn}, "maintenance on: no automatic failover until it is turned off")
	}
	return b.command(ctx, pair.Admin{Cmd: pair.AdminMaintenanceOff}, "maintenance off: automatic failover resumes")
}

// AckAlarm clears a latched alarm. The daemon's own alarms are handled
// here; the pair machine's go through the machine, which refuses a
// condition alarm and says when it clears.
func (b *backend) AckAlarm(ctx context.Context, id string) (api.ActionResult, error) {
	clears, own := daemonAlarms[id]
	if !own {
		return b.command(ctx, pair.Admin{Cmd: pair.AdminAckAlarm, Alarm: id}, "alarm "+id+" acknowledged")
	}
	if clears != "" {
		if _, raised := b.d.ev.alarm(id); !raised {
			return api.ActionResult{}, fmt.Errorf("%w: ack-alarm: %q is not raised on this node", api.ErrNotFound, id)
		}
		return api.ActionResult{}, fmt.Errorf("%w: ack-alarm: %q stands while its condition holds and clears when %s", api.ErrConflict, id, clears)
	}
	a, ok := b.d.ev.take(id)
	if !ok {
		return api.ActionResult{}, fmt.Errorf("%w: ack-alarm: %q is not raised on this node", api.ErrNotFound, id)
	}
	now := b.d.clk.Now()
	b.d.ev.add(now, "alarm", id+" acknowledged by the operator (it said: "+a.Text+")")
	b.d.log.Info("alarm acknowledged", zap.String("alarm", id), zap.String("text", a.Text))
	return api.ActionResult{Accepted: true, Text: "alarm " + id + " acknowledged"}, nil
}

func (b *backend) ForcePromote(ctx context.Context, ack bool) (api.ActionResult, error) {
	return b.command(ctx, pair.Admin{Cmd: pair.AdminForcePromote, AckDataLoss: ack}, "force-promote accepted")
}

// roleSince is when the current role began, from the event log's last
// role change (the start of the run when there was none).
func (d *driver) roleSince() time.Time {
	if t := d.roleAt.Load(); t != nil {
		return *t
	}
	return time.Time{}
}
