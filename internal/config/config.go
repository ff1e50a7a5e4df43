// Package config loads tandemd's configuration file (YAML) and checks it.
//
// Contract: Load either returns a Config whose every field has been checked
// for form (types, ranges, required fields, relations between sections that
// this package understands), or an Errors value listing every problem found,
// each naming the file, the line and the dotted field path, for example
//
//	/etc/tandem/tandemd.yaml:14: vip.addresses[1]: "2001:db8::10" is not an address with prefix length
//
// Unknown keys are errors (a misspelt key must never be silently ignored on
// an HA pair). Relations owned by other packages (the timing rules of the
// pair state machine, for one) are checked by them; Config.Wrap attaches the
// file and line of the field they name to their errors.
//
// The file format is documented field by field in docs/configuration.md,
// whose complete example is parsed by this package's tests.
package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is tandemd's configuration.
type Config struct {
	// Node is this node's name ("a"); Peer the other node's ("b").
	Node string `yaml:"node"`
	Peer string `yaml:"peer"`
	// PairID identifies the pair on shared networks; both nodes use the same.
	PairID uint64 `yaml:"pair-id"`
	// KeyFile holds the pair key (at least 32 random bytes) shared by both
	// nodes: it authenticates heartbeats, replication and the witness.
	KeyFile string `yaml:"key-file"`
	// DataDir holds the WIP store and the node's local state.
	DataDir string `yaml:"data-dir"`

	Timing      Timing      `yaml:"timing"`
	Paths       []Path      `yaml:"paths"`
	Replication Replication `yaml:"replication"`
	VIP         VIP         `yaml:"vip"`
	TieBreaker  TieBreaker  `yaml:"tie-breaker"`
	Watchdog    Watchdog    `yaml:"watchdog"`
	Management  Management  `yaml:"management"`
	DataPlane   DataPlane   `yaml:"data-plane"`
	Runtime     Runtime     `yaml:"runtime"`
	Backup      Backup      `yaml:"backup"`
	Disk        Disk        `yaml:"disk"`
	Log         Log         `yaml:"log"`
	// RealtimePriority, 1-99, runs every thread of tandemd under SCHED_RR
	// at that priority so heartbeats keep their timing while the host is
	// loaded (the fast profile needs it); 0 (default) leaves the normal
	// scheduler.
	RealtimePriority int `yaml:"realtime-priority"`

	file string
	pos  positions
}

// Timing selects a timing profile and optionally overrides its values.
// In YAML it is either a profile name ("timing: fast") or a mapping.
type Timing struct {
	Profile     string   `yaml:"profile"` // default, fast
	Interval    Duration `yaml:"interval"`
	DeadAfter   Duration `yaml:"dead-after"`
	StartupWait Duration `yaml:"startup-wait"`
	// Other pair-timing overrides, by name, checked by the pair package.
	Extra map[string]Duration `yaml:",inline"`
}

// UnmarshalYAML accepts a bare profile name or a mapping.
func (t *Timing) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		t.Profile = n.Value
		return nil
	}
	type plain Timing
	return n.Decode((*plain)(t))
}

// Path is one heartbeat path.
type Path struct {
	Name      string `yaml:"name"`      // ha1, ha2, lan
	Interface string `yaml:"interface"` // bound with SO_BINDTODEVICE
	Local     Addr   `yaml:"local"`
	Peer      Addr   `yaml:"peer"`
	Port      int    `yaml:"port"` // UDP port, default 7100
}

// Replication configures the WIP stream between the nodes.
type Replication struct {
	Listen         AddrPorts  `yaml:"listen"` // one per HA link, in link order
	Peers          []AddrPort `yaml:"peers"`  // the peer's listeners, tried in turn (HA link 1, then 2)
	Mode           string     `yaml:"mode"`   // sync (default), async
	OnPeerLoss     string     `yaml:"on-peer-loss"`
	PeerAckTimeout Duration   `yaml:"peer-ack-timeout"`
	RetainBytes    int64      `yaml:"retain-bytes"`
	RetainAge      Duration   `yaml:"retain-age"`
	// VerifyEvery is how often the passive reads its whole WIP store back
	// to find bad blocks before a failover needs them (0: never).
	VerifyEvery *Duration `yaml:"verify-every"`
	// MaxUnackedGroups is how many locally durable commit groups of a
	// sync-mode active may wait for the passive's ack before the next
	// group is held back (0: DefaultMaxUnackedGroups).
	MaxUnackedGroups int `yaml:"max-unacked-groups"`
}

// Disk sets the free-space alarm of the file system that holds the WIP
// store (DataDir/wip): the store fails when it is full (wip-failed), so the
// alarm disk-space comes first, a warning below WarnFreePercent of it free
// and critical below CriticalFreePercent (0 turns a level off).
//
// StallTimeout is how long one write of the WIP store (a commit's log
// write and fsync, a batch the passive applies) may take before the store
// fails with a stalled disk (wip-failed), and the active hands over to an
// in-sync passive (0: DefaultStallTimeout).
//
// RestartAfterStall is how long the disk under a store failed on a stall
// must have answered again (a probe write completed) before tandemd stops
// and exits so that systemd starts it again and the store reopens (a
// passive; an active whose peer cannot take over, not in maintenance); at
// most MaxStallRestarts times an hour (nil:
// DefaultRestartAfterStall; 0: never, an operator restarts it).
//
// IOErrorHandover is how long pebble's own work on the active's store
// (flushes, compactions, their reads) may fail with an I/O error, not a
// full file system, before the active hands over to an in-sync passive,
// as DRBD's on-io-error detach moves the work off a failing disk; not in
// maintenance (nil:
// DefaultIOErrorHandover; 0: never, the alarm only).
type Disk struct {
	WarnFreePercent     *int      `yaml:"warn-free-percent"`
	CriticalFreePercent *int      `yaml:"critical-free-percent"`
	StallTimeout        Duration  `yaml:"stall-timeout"`
	RestartAfterStall   *Duration `yaml:"restart-after-stall"`
	IOErrorHandover     *Duration `yaml:"io-error-handover"`
}

// Default free-space alarm levels (Disk), in percent of the file system.
const (
	DefaultWarnFreePercent     = 15
	DefaultCriticalFreePercent = 5
	// DefaultStallTimeout is CockroachDB's max_sync_duration: a disk that
	// has not completed a write in that long is not coming back soon, and
	// a healthy one under load stays far below it.
	DefaultStallTimeout = Duration(20 * time.Second)
	// DefaultRestartAfterStall: a disk that has answered for a minute
	// after a stall (a storage path that failed over) is back.
	DefaultRestartAfterStall = Duration(time.Minute)
	// DefaultIOErrorHandover: longer than pebble takes to try a failed
	// compaction again (problem spans last 30 s), so a disk that failed
	// once and answers again ends the run of errors first.
	DefaultIOErrorHandover = Duration(time.Minute)
	// MaxStallRestarts bounds the restarts for a stall that is over, per
	// hour: on a disk that flaps, each costs the active a
	// peer-ack-timeout of held commits when the node's store hangs again.
	MaxStallRestarts = 3
)

// VIP is the group of virtual addresses the active owns.
type VIP struct {
	Interface  string      `yaml:"interface"`
	Addresses  []Prefix    `yaml:"addresses"`
	VirtualMAC *VirtualMAC `yaml:"virtual-mac"`
	GARP       GARP        `yaml:"garp"`
}

// VirtualMAC moves the VIP onto a macvlan with a fixed MAC.
type VirtualMAC struct {
	Interface string `yaml:"interface"` // name of the macvlan to create
	Address   MAC    `yaml:"address"`
}

// GARP is the announcement schedule after a claim.
type GARP struct {
	Repeats  *int     `yaml:"repeats"`  // after the first burst; default 5
	Interval Duration `yaml:"interval"` // default 1s
	Refresh  Duration `yaml:"refresh"`  // periodic re-announcement; 0 = off
}

// TieBreaker lets a node tell "the peer is gone" from "I am cut off".
type TieBreaker struct {
	Gateways []Addr   `yaml:"gateways"`
	Witness  AddrPort `yaml:"witness"`
}

// Watchdog is the optional hardware watchdog, kicked while the active's lease holds.
type Watchdog struct {
	Device string `yaml:"device"` // e.g. /dev/watchdog; empty = off
}

// Management is where operators reach the daemon.
type Management struct {
	Socket  string   `yaml:"socket"`  // local API (tandemctl); default /run/tandem/tandemd.sock
	Metrics AddrPort `yaml:"metrics"` // Prometheus /metrics on the management address; empty = off
}

// DataPlane is the HTTP listener bound to the VIP while active.
type DataPlane struct {
	Port int `yaml:"port"` // default 8080
}

// Runtime configures the orchestration runtime.
type Runtime struct {
	ForceStopAfter Duration `yaml:"force-stop-after"` // 0: wait for jobs indefinitely when pausing
	// JobRetention is how long finished jobs are kept after their last
	// update (default 168h); 0 keeps them all.
	JobRetention *Duration `yaml:"job-retention"`
	PurgeEvery   Duration  `yaml:"purge-every"` // default 10m
}

// Backup configures the WIP store's backups (disaster recovery). With no
// dir there are none; tandemctl backup needs dir too.
type Backup struct {
	// Dir holds the backups: on another disk or a mount of the DR site (on
	// the data-dir's file system they are hard links, which survive no
	// disk loss).
	Dir string `yaml:"dir"`
	// Every is how often the active takes one (default 1h); 0 only on
	// demand.
	Every *Duration `yaml:"every"`
	Keep  int       `yaml:"keep"` // how many to keep, newest first (default 24)
}

// Log configures zap.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default), console
}

// Load reads, decodes and checks a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes and checks a configuration held in memory; name is used in
// error messages.
func Parse(name string, b []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, decodeErrors(name, err, nil)
	}
	if len(root.Content) == 0 {
		return nil, Errors{{File: name, Field: "(document)", Msg: "the file is empty"}}
	}
	c := &Config{file: name, pos: positions{}}
	scalars := map[int][]scalar{}
	indexNode(&root, "", c.pos, scalars)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, decodeErrors(name, err, scalars)
	}
	c.applyDefaults()
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// Defaults.
const (
	DefaultHeartbeatPort = 7100
	DefaultDataPlanePort = 8080
	DefaultSocket        = "/run/tandem/tandemd.sock"
	DefaultGARPRepeats   = 5
	DefaultJobRetention  = Duration(168 * time.Hour)
	DefaultPurgeEvery    = Duration(10 * time.Minute)
	DefaultBackupEvery   = Duration(time.Hour)
	DefaultVerifyEvery   = Duration(24 * time.Hour)
	// DefaultMaxUnackedGroups: the next group is committed and sent while
	// the previous one waits for the peer (docs/benchmarks.md, "A bounded
	// sync pipeline").
	DefaultMaxUnackedGroups = 2
	// MaxMaxUnackedGroups bounds replication.max-unacked-groups: more
	// groups in flight are more fsyncs of smaller groups on both nodes.
	MaxMaxUnackedGroups = 64
	DefaultBackupKeep   = 24
)

func (c *Config) applyDefaults() {
	if c.Timing.Profile == "" {
		c.Timing.Profile = "default"
	}
	for i := range c.Paths {
		if c.Paths[i].Port == 0 {
			c.Paths[i].Port = DefaultHeartbeatPort
		}
	}
	if c.Replication.Mode == "" {
		c.Replication.Mode = "sync"
	}
	if c.Replication.OnPeerLoss == "" {
		c.Replication.OnPeerLoss = "degrade"
	}
	if c.Replication.VerifyEvery == nil {
		d := DefaultVerifyEvery
		c.Replication.VerifyEvery = &d
	}
	if c.Replication.MaxUnackedGroups == 0 {
		c.Replication.MaxUnackedGroups = DefaultMaxUnackedGroups
	}
	if c.VIP.GARP.Repeats == nil {
		n := DefaultGARPRepeats
		c.VIP.GARP.Repeats = &n
	}
	if c.VIP.GARP.Interval == 0 {
		c.VIP.GARP.Interval = Duration(1e9)
	}
	if c.Management.Socket == "" {
		c.Management.Socket = DefaultSocket
	}
	if c.DataPlane.Port == 0 {
		c.DataPlane.Port = DefaultDataPlanePort
	}
	if c.Runtime.JobRetention == nil {
		d := DefaultJobRetention
		c.Runtime.JobRetention = &d
	}
	if c.Runtime.PurgeEvery == 0 {
		c.Runtime.PurgeEvery = DefaultPurgeEvery
	}
	if c.Backup.Every == nil {
		d := DefaultBackupEvery
		c.Backup.Every = &d
	}
	if c.Backup.Keep == 0 {
		c.Backup.Keep = DefaultBackupKeep
	}
	if c.Disk.WarnFreePercent == nil {
		n := DefaultWarnFreePercent
		c.Disk.WarnFreePercent = &n
	}
	if c.Disk.CriticalFreePercent == nil {
		n := DefaultCriticalFreePercent
		c.Disk.CriticalFreePercent = &n
	}
	if c.Disk.StallTimeout == 0 {
		c.Disk.StallTimeout = DefaultStallTimeout
	}
	if c.Disk.IOErrorHandover == nil {
		d := DefaultIOErrorHandover
		c.Disk.IOErrorHandover = &d
	}
	if c.Disk.RestartAfterStall == nil {
		d := DefaultRestartAfterStall
		c.Disk.RestartAfterStall = &d
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
}

var reName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

func (c *Config) check() error {
	p := &problems{file: c.file, pos: c.pos}
	name := func(field, v string) {
		switch {
		case v == "":
			p.add(field, "required")
		case !reName.MatchString(v):
			p.add(field, "%q: use 1-31 lower-case letters, digits and '-'", v)
		}
	}
	name("node", c.Node)
	name("peer", c.Peer)
	if c.Node != "" && c.Node == c.Peer {
		p.add("peer", "must differ from node (%q)", c.Node)
	}
	if c.PairID == 0 {
		p.add("pair-id", "required (a number shared by both nodes, unique on the network)")
	}
	if c.KeyFile == "" {
		p.add("key-file", "required (the pair key; see docs/configuration.md)")
	}
	if c.DataDir == "" {
		p.add("data-dir", "required")
	}
	switch c.Timing.Profile {
	case "default", "fast":
	default:
		p.add("timing.profile", "%q: want default or fast", c.Timing.Profile)
	}

	if len(c.Paths) == 0 {
		p.add("paths", "at least one heartbeat path is required (HA link 1, optional HA link 2, data LAN)")
	}
	if len(c.Paths) > 3 {
		p.add("paths", "at most 3 heartbeat paths (HA link 1, HA link 2, data LAN); got %d", len(c.Paths))
	}
	seen := map[string]bool{}
	for i, path := range c.Paths {
		f := fmt.Sprintf("paths[%d]", i)
		name(f+".name", path.Name)
		if seen[path.Name] {
			p.add(f+".name", "%q used twice", path.Name)
		}
		seen[path.Name] = true
		if path.Interface == "" {
			p.add(f+".interface", "required (the path is bound to its link)")
		}
		if !path.Local.IsValid() {
			p.add(f+".local", "required")
		}
		if !path.Peer.IsValid() {
			p.add(f+".peer", "required")
		}
		if path.Local.IsValid() && path.Peer.IsValid() && path.Local.Is4() != path.Peer.Is4() {
			p.add(f+".peer", "address family differs from local (%s vs %s)", path.Local, path.Peer)
		}
		if path.Local == path.Peer && path.Local.IsValid() {
			p.add(f+".peer", "equals local (%s)", path.Local)
		}
		if path.Port < 1 || path.Port > 65535 {
			p.add(f+".port", "%d: want 1-65535", path.Port)
		}
	}

	r := c.Replication
	if len(r.Listen) == 0 {
		p.add("replication.listen", "required (this node's address:port on each HA link)")
	}
	if len(r.Peers) == 0 {
		p.add("replication.peers", "required (the peer's replication address:port, one per HA link)")
	}
	for _, l := range []struct {
		name  string
		addrs []AddrPort
	}{{"replication.listen", r.Listen}, {"replication.peers", r.Peers}} {
		seen := map[netip.AddrPort]bool{}
		for i, a := range l.addrs {
			if seen[a.AddrPort] {
				p.add(fmt.Sprintf("%s[%d]", l.name, i), "%s listed twice", a)
			}
			seen[a.AddrPort] = true
		}
	}
	switch r.Mode {
	case "sync", "async":
	default:
		p.add("replication.mode", "%q: want sync or async", r.Mode)
	}
	switch r.OnPeerLoss {
	case "degrade", "block":
	default:
		p.add("replication.on-peer-loss", "%q: want degrade or block", r.OnPeerLoss)
	}
	if r.PeerAckTimeout < 0 {
		p.add("replication.peer-ack-timeout", "must not be negative")
	}
	if r.RetainBytes < 0 {
		p.add("replication.retain-bytes", "must not be negative")
	}
	if v := *r.VerifyEvery; v < 0 {
		p.add("replication.verify-every", "must not be negative (0: never)")
	} else if v > 0 && v < Duration(time.Minute) {
		p.add("replication.verify-every", "%s: want at least 1m (0: never); each run reads the whole store", time.Duration(v))
	}
	if n := r.MaxUnackedGroups; n < 1 || n > MaxMaxUnackedGroups {
		p.add("replication.max-unacked-groups", "%d: want 1 to %d", n, MaxMaxUnackedGroups)
	}

	v := c.VIP
	if v.Interface == "" {
		p.add("vip.interface", "required (the data LAN interface)")
	}
	if len(v.Addresses) == 0 {
		p.add("vip.addresses", "at least one virtual address is required")
	}
	vips := map[netip.Addr]bool{}
	for i, a := range v.Addresses {
		f := fmt.Sprintf("vip.addresses[%d]", i)
		if vips[a.Addr()] {
			p.add(f, "%s listed twice", a.Addr())
		}
		vips[a.Addr()] = true
		if a.Addr().IsLinkLocalUnicast() || a.Addr().IsMulticast() || a.Addr().IsUnspecified() || a.Addr().IsLoopback() {
			p.add(f, "%s cannot be a virtual address", a.Addr())
		}
	}
	if m := v.VirtualMAC; m != nil {
		if m.Interface == "" {
			p.add("vip.virtual-mac.interface", "required (name of the macvlan to create)")
		}
		if m.Address.HardwareAddr == nil {
			p.add("vip.virtual-mac.address", "required")
		} else if m.Address.HardwareAddr[0]&1 == 1 {
			p.add("vip.virtual-mac.address", "%s is a multicast MAC", m.Address)
		}
	}
	if *v.GARP.Repeats < 0 || *v.GARP.Repeats > 100 {
		p.add("vip.garp.repeats", "%d: want 0-100", *v.GARP.Repeats)
	}
	if v.GARP.Interval <= 0 {
		p.add("vip.garp.interval", "must be positive")
	}
	if v.GARP.Refresh < 0 {
		p.add("vip.garp.refresh", "must not be negative")
	}

	if len(c.TieBreaker.Gateways) == 0 {
		p.add("tie-breaker.gateways", "at least one gateway address on the data LAN is required: without it a node cannot tell a dead peer from its own isolation")
	}
	for i, g := range c.TieBreaker.Gateways {
		if vips[g.Addr] {
			p.add(fmt.Sprintf("tie-breaker.gateways[%d]", i), "%s is a virtual address", g.Addr)
		}
	}

	if c.DataPlane.Port < 1 || c.DataPlane.Port > 65535 {
		p.add("data-plane.port", "%d: want 1-65535", c.DataPlane.Port)
	}
	if c.Runtime.ForceStopAfter < 0 {
		p.add("runtime.force-stop-after", "must not be negative")
	}
	if *c.Runtime.JobRetention < 0 {
		p.add("runtime.job-retention", "must not be negative (0 keeps every finished job)")
	}
	if c.Runtime.PurgeEvery < 0 {
		p.add("runtime.purge-every", "must not be negative")
	}
	if c.Backup.Dir != "" && !filepath.IsAbs(c.Backup.Dir) {
		p.add("backup.dir", "%q: want an absolute path", c.Backup.Dir)
	}
	if c.Backup.Dir != "" && c.DataDir != "" && within(c.Backup.Dir, filepath.Join(c.DataDir, "wip")) {
		p.add("backup.dir", "%q is inside the WIP store's directory", c.Backup.Dir)
	}
	if *c.Backup.Every < 0 {
		p.add("backup.every", "must not be negative (0: only on demand)")
	} else if *c.Backup.Every > 0 && *c.Backup.Every < Duration(time.Second) {
		p.add("backup.every", "%s: want at least 1s (0: only on demand)", time.Duration(*c.Backup.Every))
	}
	if c.Backup.Keep < 0 {
		p.add("backup.keep", "%d: want at least 1", c.Backup.Keep)
	}
	warn, crit := *c.Disk.WarnFreePercent, *c.Disk.CriticalFreePercent
	if warn < 0 || warn > 90 {
		p.add("disk.warn-free-percent", "%d: want 0 (off) to 90", warn)
	}
	if crit < 0 || crit > 90 {
		p.add("disk.critical-free-percent", "%d: want 0 (off) to 90", crit)
	} else if crit > 0 && warn > 0 && crit >= warn {
		p.add("disk.critical-free-percent", "%d: must be below disk.warn-free-percent (%d), or 0 (off)", crit, warn)
	}
	if d := c.Disk.StallTimeout.D(); d < time.Second || d > 10*time.Minute {
		p.add("disk.stall-timeout", "%s: want 1s to 10m", d)
	}
	if v := c.Disk.RestartAfterStall.D(); v < 0 {
		p.add("disk.restart-after-stall", "must not be negative (0: never)")
	} else if v > 0 && (v < time.Second || v > time.Hour) {
		p.add("disk.restart-after-stall", "%s: want 1s to 1h (0: never)", v)
	}
	if v := c.Disk.IOErrorHandover.D(); v < 0 {
		p.add("disk.io-error-handover", "must not be negative (0: never)")
	} else if v > 0 && (v < 10*time.Second || v > time.Hour) {
		p.add("disk.io-error-handover", "%s: want 10s to 1h (0: never)", v)
	}
	if c.RealtimePriority < 0 || c.RealtimePriority > 99 {
		p.add("realtime-priority", "%d: want 0 (off) or 1-99", c.RealtimePriority)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		p.add("log.format", "%q: want json or console", c.Log.Format)
	}
	return p.err()
}

// File returns the path the configuration was loaded from.
func (c *Config) File() string { return c.file }

// Line returns the line of a dotted field path, or of its nearest ancestor
// present in the file (0 if none).
func (c *Config) Line(field string) int { return c.pos.line(field) }

// Wrap attaches the file and line of field to err, for errors found by other
// packages' validation of a field of this file.
func (c *Config) Wrap(field string, err error) error {
	if err == nil {
		return nil
	}
	return Errors{{File: c.file, Line: c.Line(field), Field: field, Msg: strings.TrimSpace(err.Error())}}
}

// ReadKey reads the pair key file. It must hold at least 32 bytes; a key
// file readable by group or others is refused.
func ReadKey(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("config: key-file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("config: key-file %s: mode %v lets others read the pair key; chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: key-file: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < 32 {
		return nil, fmt.Errorf("config: key-file %s: %d bytes; want at least 32 (e.g. head -c 48 /dev/urandom | base64 > %s)", path, len(b), path)
	}
	return b, nil
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
