package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/heartbeat"
	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/metrics"
	"github.com/tandem-ha/tandem/internal/pair"
	"github.com/tandem-ha/tandem/vip"
)

// vipLease is the valid lifetime of the VIP addresses: the owner renews it
// every third; a daemon that dies without releasing loses the VIP in the
// kernel by itself within a lease (plus Linux's one-second expiry check),
// even when nobody restarts it. 3 s is the vip package's minimum.
const vipLease = 3 * time.Second

// nodeIDs gives the two nodes of a pair their ids (1 and 2) from their
// names, the same way on both: the smaller name is 1.
func nodeIDs(node, peer string) (self, other uint8) {
	if node < peer {
		return 1, 2
	}
	return 2, 1
}

// pairTiming turns the configuration's timing section into the machine's
// timing, naming the field of any value the pair package refuses.
func pairTiming(cfg *config.Config) (pair.Timing, error) {
	t, err := pair.Profile(cfg.Timing.Profile)
	if err != nil {
		return t, cfg.Wrap("timing.profile", err)
	}
	set := func(name string, d config.Duration) error {
		if d == 0 {
			return nil
		}
		if err := t.Set(name, d.D()); err != nil {
			return cfg.Wrap("timing."+name, err)
		}
		return nil
	}
	if err := set("interval", cfg.Timing.Interval); err != nil {
		return t, err
	}
	if err := set("dead-after", cfg.Timing.DeadAfter); err != nil {
		return t, err
	}
	if err := set("startup-wait", cfg.Timing.StartupWait); err != nil {
		return t, err
	}
	names := make([]string, 0, len(cfg.Timing.Extra))
	for n := range cfg.Timing.Extra {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := set(n, cfg.Timing.Extra[n]); err != nil {
			return t, err
		}
	}
	if err := t.Validate(); err != nil {
		return t, cfg.Wrap("timing", err)
	}
	return t, nil
}

// checkConfig validates what config.Load cannot (relations owned by other
// packages) and describes the effective timing.
func checkConfig(cfg *config.Config) (string, error) {
	t, err := pairTiming(cfg)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "timing (%s): interval %v, dead-after %v, fence-after %v, startup-wait %v\n",
		cfg.Timing.Profile, t.Interval, t.DeadAfter, t.FenceAfter, t.StartupWait)
	if _, err := config.ReadKey(cfg.KeyFile); err != nil {
		return "", cfg.Wrap("key-file", err)
	}
	return b.String(), nil
}

// Run runs tandemd until ctx ends, then stops in order (see the package
// doc). It returns nil after an orderly stop.
func Run(ctx context.Context, cfg *config.Config) (err error) {
	log, err := NewLogger(cfg.Log.Level, cfg.Log.Format, cfg.Node)
	if err != nil {
		return cfg.Wrap("log", err)
	}
	defer log.Sync()
	clk := clock.Real()
	sd := systemd{log: log}
	if err := setRealtime(cfg.RealtimePriority); err != nil {
		return cfg.Wrap("realtime-priority", err)
	}
	timing, err := pairTiming(cfg)
	if err != nil {
		return err
	}
	key, err := config.ReadKey(cfg.KeyFile)
	if err != nil {
		return cfg.Wrap("key-file", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return cfg.Wrap("data-dir", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return cfg.Wrap("data-dir", err)
	}
	defer unlock()
	self, other := nodeIDs(cfg.Node, cfg.Peer)
	log.Info("starting", zap.String("version", Version), zap.String("peer", cfg.Peer), zap.Uint8("node_id", self),
		zap.String("timing", cfg.Timing.Profile), zap.Duration("interval", timing.Interval), zap.Duration("dead_after", timing.DeadAfter))

	// The VIP first: whatever a crashed run left configured goes before
	// anything else, so this node never answers for the VIP before the
	// machine decides it should (the peer may own it now).
	addrs := make([]netip.Addr, 0, len(cfg.VIP.Addresses))
	for _, p := range cfg.VIP.Addresses {
		addrs = append(addrs, p.Addr())
	}
	vm, err := newVIP(cfg, clk, log.Named("vip"))
	if err != nil {
		return err
	}
	defer vm.Close()
	left, err := vm.Recover(ctx)
	if err != nil {
		return fmt.Errorf("daemon: recover leftover VIPs: %w", err)
	}
	for _, l := range left {
		log.Warn("removed a VIP a previous run left behind", zap.Stringer("leftover", l))
	}

	var persisted pair.Persisted
	found, err := loadState(cfg.DataDir, &persisted)
	if err != nil {
		return err
	}
	if found {
		log.Info("pair state recovered", zap.Stringer("state", persisted))
	}

	// The driver ticks at most every 20 ms; four missed turns, or a
	// freeze, and the machine's verdict is too old to act on alone.
	gate := newGoAloneGate(clk, max(4*timing.Interval, 250*time.Millisecond))
	evlog := newEventLog(1000)
	st, err := openStore(cfg, key, self, persisted.Epoch, clk, log.Named("wip"), gate, storeEvents(evlog, clk))
	if err != nil {
		return err
	}
	defer st.Close()
	if p, changed := reconcileEpoch(persisted, st.Status().Epoch); changed {
		log.Warn("the WIP store has seen a later epoch than the pair state (restored from a backup, or the state file was lost): promotions go above it",
			zap.Uint64("store_epoch", p.Epoch), zap.Stringer("state", persisted))
		persisted = p
	}

	var paths []heartbeat.Path
	for _, p := range cfg.Paths {
		paths = append(paths, heartbeat.Path{
			Name:   p.Name,
			Local:  netip.AddrPortFrom(p.Local.Addr, uint16(p.Port)),
			Remote: netip.AddrPortFrom(p.Peer.Addr, uint16(p.Port)),
			Device: p.Interface,
		})
	}
	bootID, warning, err := nextBootID(cfg.DataDir, clk.Now())
	if err != nil {
		return err
	}
	if warning != "" {
		log.Warn("heartbeat boot id: " + warning)
	}
	hb, err := heartbeat.New(heartbeat.Config{
		BootID:        bootID,
		PersistBootID: func(id uint64) error { return persistBootID(cfg.DataDir, id) },
		PairID:        uint32(cfg.PairID), NodeID: self, Key: key, Paths: paths,
		Interval: timing.Interval, DeadAfter: timing.DeadAfter,
		Clock: clk, Logger: log.Named("heartbeat"),
	})
	if err != nil {
		return cfg.Wrap("paths", err)
	}
	defer hb.Close()

	gw, closeGW, err := newGatewayProber(cfg, timing, clk, log.Named("tiebreak"))
	if err != nil {
		return cfg.Wrap("tie-breaker", err)
	}
	defer closeGW()
	var wd watchdogDev
	if cfg.Watchdog.Device != "" {
		w, err := openWatchdog(cfg.Watchdog.Device)
		if err != nil {
			return cfg.Wrap("watchdog.device", err)
		}
		wd = w
	}

	rt, err := openRuntime(cfg, st, clk, log.Named("runtime"), func(e api.Event) { evlog.add(e.Time, "runtime", e.Text) })
	if err != nil {
		return err
	}

	m, first, err := pair.New(pair.Config{NodeID: self, Timing: timing, Watchdog: cfg.Watchdog.Device != "", HealthFailover: true}, persisted, clk.Now())
	if err != nil {
		return cfg.Wrap("timing", err)
	}

	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	d := &driver{
		node: cfg.Node, peerID: other, log: log.Named("driver"), clk: clk, timing: timing, dir: cfg.DataDir,
		m: m, hb: hb, store: st, vip: vm, vips: addrs, gw: gw, wd: wd, rt: rt,
		ev: evlog, runCtx: runCtx,
		in: make(chan pair.Event, 64), admin: make(chan adminReq), rtOps: make(chan pair.Action, 64),
		persisted: persisted, gate: gate, ackTimeout: cfg.Replication.PeerAckTimeout.D(),
		blockOnPeerLoss: cfg.Replication.OnPeerLoss == "block",
		restartAfter:    cfg.Disk.RestartAfterStall.D(), ioErrorHandover: cfg.Disk.IOErrorHandover.D(),
	}
	d.watch = newFreezeWatch(clk, driverPeriod(timing))
	d.dp = &dataPlane{node: cfg.Node, port: cfg.DataPlane.Port, log: log.Named("dataplane"), epoch: &d.epoch}
	d.dp.handler = rt.Handler()
	d.ev.add(clk.Now(), "role", fmt.Sprintf("tandemd %s started (%s)", Version, persisted))

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancelRun()

	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.runtimeWorker() }()
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.watch.run(runCtx) }()
	dw := &diskWatch{dir: filepath.Join(cfg.DataDir, "wip"), warnPct: *cfg.Disk.WarnFreePercent, critPct: *cfg.Disk.CriticalFreePercent,
		every: diskWatchEvery, clk: clk, ev: evlog, log: log.Named("disk"), statfs: statfs}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); dw.run(runCtx) }()
	// Heartbeats: their own goroutines, never behind the driver.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := hb.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("heartbeat stopped", zap.Error(err))
		}
	}()
	// LAN carrier and VIP conflicts become machine events.
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := watchLink(runCtx, cfg.VIP.Interface, func(up bool) { d.post(pair.LANLink{Up: up}) }); err != nil && runCtx.Err() == nil {
			log.Error("link watch stopped", zap.Error(err))
		}
	}()
	go func() {
		defer wg.Done()
		var cf conflictFilter
		for {
			select {
			case c, ok := <-vm.Conflicts():
				if !ok {
					return
				}
				d.ev.add(clk.Now(), "vip", fmt.Sprintf("%s also claimed by %s (%s)", c.VIP, c.MAC, c.Evidence))
				if cf.persistent(c.MAC.String(), clk.Now()) {
					d.post(pair.VIPConflict{MAC: c.MAC.String()})
				}
			case <-runCtx.Done():
				return
			}
		}
	}()

	// The local API and metrics.
	bj := &backupJob{dir: cfg.Backup.Dir, every: cfg.Backup.Every.D(), keep: cfg.Backup.Keep, node: cfg.Node,
		store: st.Store, clk: clk, log: log.Named("backup"), ev: evlog,
		// Not in the first minute of a term: a promotion resumes every
		// job then, and the checkpoint's I/O can wait.
		active: func() bool {
			ps := d.status.Load()
			return ps != nil && ps.Role == pair.RoleActive && clk.Since(d.roleSince()) >= min(cfg.Backup.Every.D(), time.Minute)
		}}
	bj.init()
	wg.Add(1)
	go func() { defer wg.Done(); bj.run(runCtx) }()
	vj := &verifyJob{every: cfg.Replication.VerifyEvery.D(), store: st.Store, clk: clk, log: log.Named("verify"), ev: evlog,
		// Passive, and its store neither mid-snapshot nor corrupt: the
		// machine's view of it (wipStore.Replication's mapping).
		passive: func() bool {
			ps := d.status.Load()
			return ps != nil && ps.Role == pair.RolePassive && ps.Substate != "inconsistent"
		},
		active: func() bool {
			ps := d.status.Load()
			return ps != nil && ps.Role == pair.RoleActive
		}}
	wg.Add(1)
	go func() { defer wg.Done(); vj.run(runCtx) }()
	be := &backend{d: d, peer: cfg.Peer, hb: hb, bj: bj}
	srv := api.NewServer(be, log.Named("api"))
	rt.RegisterAPI(srv)
	bj.register(srv)
	vj.register(srv)
	if err := os.MkdirAll(filepath.Dir(cfg.Management.Socket), 0o755); err != nil {
		return cfg.Wrap("management.socket", err)
	}
	ln, err := api.ListenUnix(cfg.Management.Socket)
	if err != nil {
		return cfg.Wrap("management.socket", err)
	}
	apiSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(log)}
	wg.Add(1)
	go func() { defer wg.Done(); apiSrv.Serve(ln) }()
	defer apiSrv.Close()
	if cfg.Management.Metrics.IsValid() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(metrics.NewCollector(be.Status), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mln, err := net.Listen("tcp", cfg.Management.Metrics.String())
		if err != nil {
			return cfg.Wrap("management.metrics", err)
		}
		msrv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() { defer wg.Done(); msrv.Serve(mln) }()
		defer msrv.Close()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		sd.watchdog(runCtx, clk, func() bool { return clk.Since(time.Unix(0, d.loopAt.Load())) < 5*time.Second })
	}()

	sd.ready()
	// A second signal during the orderly stop abandons it (see Main).
	hardCtx, hardCancel := context.WithCancel(context.Background())
	defer hardCancel()
	go func() {
		select {
		case <-ctx.Done():
			sd.stopping()
			select {
			case <-forceStop:
				hardCancel()
			case <-runCtx.Done():
			}
		case <-runCtx.Done():
		}
	}()
	err = d.loop(ctx, hardCtx, first)
	if err == nil && d.restarting {
		err = errStallRestart // stallRestart stopped the node: systemd starts it again
	}
	// Whatever the machine did, nothing may outlive the run on the network.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	d.dp.stop(sctx)
	cancelRun()
	d.wg.Wait() // the runtime worker is gone: nothing races the last Stop
	rt.Stop()
	if vm.Owned() {
		log.Warn("stopping while owning the VIP: releasing it")
		vm.Release(sctx)
	}
	log.Info("stopped", zap.Error(err))
	return err
}

// forceStop is signalled by Main on a second SIGTERM/SIGINT.
var forceStop = make(chan struct{})

// lockDataDir takes an exclusive lock on the data directory so two
// daemons never share one store (a mistake that would fork its history).
func lockDataDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK.tandemd"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s is in use by another tandemd: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// Cleanup removes what a dead tandemd left on the network: the VIP group
// of cfg (and its macvlan). It takes the data directory's lock first, so it
// can never pull the VIP from under a running daemon.
func Cleanup(ctx context.Context, cfg *config.Config) ([]vip.Leftover, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, cfg.Wrap("data-dir", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, cfg.Wrap("data-dir", err)
	}
	defer unlock()
	vm, err := newVIP(cfg, clock.Real(), zap.NewNop())
	if err != nil {
		return nil, err
	}
	defer vm.Close()
	if ctx == nil {
		ctx = context.Background()
	}
	return vm.Recover(ctx)
}

// newVIP builds the VIP manager for cfg's group.
func newVIP(cfg *config.Config, clk clock.Clock, log *zap.Logger) (*vip.Manager, error) {
	var vmac *vip.VirtualMAC
	if m := cfg.VIP.VirtualMAC; m != nil {
		vmac = &vip.VirtualMAC{Name: m.Interface, MAC: m.Address.HardwareAddr}
	}
	vips := make([]netip.Prefix, 0, len(cfg.VIP.Addresses))
	for _, p := range cfg.VIP.Addresses {
		vips = append(vips, p.Prefix)
	}
	vm, err := vip.New(vip.Config{
		Interface: cfg.VIP.Interface, VIPs: vips, VirtualMAC: vmac,
		Announce:     vip.Schedule{Repeats: *cfg.VIP.GARP.Repeats, Interval: cfg.VIP.GARP.Interval.D(), Refresh: cfg.VIP.GARP.Refresh.D()},
		AddrLifetime: vipLease, Clock: clk, Logger: log,
	})
	if err != nil {
		return nil, cfg.Wrap("vip", err)
	}
	return vm, nil
}

// conflictFilter passes a VIP conflict to the machine only once it has
// outlived the VIP lease. A node whose daemon died or froze while its
// kernel lives keeps answering ARP for the VIP until its address lease
// runs out (vipLease, renewed only by a running daemon): that conflict
// ends by itself, and acting on it would make the new active step down
// (the machine's rule for two live owners keeps node 1). A conflict that
// lasts longer than the lease comes from a live second owner: a real
// split brain, for the machine to resolve.
type conflictFilter struct {
	mac         string
	first, last time.Time
}

// conflictGap ends a conflict episode: the vip monitor reports a
// persisting conflict about once a second.
const conflictGap = 3 * time.Second

func (f *conflictFilter) persistent(mac string, now time.Time) bool {
	if mac != f.mac || now.Sub(f.last) > conflictGap {
		f.mac, f.first = mac, now
	}
	f.last = now
	return now.Sub(f.first) >= vipLease+time.Second
}

// reconcileEpoch raises the pair state's epoch ("the highest epoch seen or
// owned") to the WIP store's. A store restored from a backup, or kept when
// the state file was lost, has seen epochs the state does not know: a
// promotion must go above them, or the store refuses it (the epoch must
// grow) and the node could never take over. A node whose state says
// active in an epoch below its store's was not active in the store's: it
// starts passive.
func reconcileEpoch(p pair.Persisted, storeEpoch uint64) (pair.Persisted, bool) {
	if storeEpoch <= p.Epoch {
		return p, false
	}
	p.Epoch = storeEpoch
	if p.Role == pair.RoleActive {
		p.Role = pair.RolePassive
	}
	return p, true
}
