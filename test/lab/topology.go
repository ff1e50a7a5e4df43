package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
)

// Host names of the pair topology.
const (
	NodeA   = "a"
	NodeB   = "b"
	Client  = "client"
	Gateway = "gw"
	Svc     = "svc"
)

// Interface names inside the hosts.
const (
	LANIf = "lan0"
	HA1If = "ha1"
	HA2If = "ha2"
)

// The pair's virtual addresses, reserved in the lab and configured on no host.
var (
	VIP4 = netip.MustParseAddr("192.0.2.10")
	VIP6 = netip.MustParseAddr("2001:db8:0:1::10")
	// VMAC is the virtual MAC tests use for the VIP's macvlan option.
	VMAC = net.HardwareAddr{0x02, 0x74, 0x64, 0x00, 0x00, 0x10}
)

// LAN prefixes.
var (
	LAN4 = netip.MustParsePrefix("192.0.2.0/24")
	LAN6 = netip.MustParsePrefix("2001:db8:0:1::/64")
)

// hostPlan is the fixed addressing of one host.
type hostPlan struct {
	name  string
	ha    [2]string  // HA link addresses (nodes only)
	mac   [6]byte    // lan0 MAC
	haMAC [2][6]byte // ha1, ha2 MACs
}

var plan = []hostPlan{
	{name: Gateway, mac: mac(0x01)},
	{name: NodeA, ha: [2]string{"198.51.100.1/30", "198.51.100.5/30"}, mac: mac(0x11), haMAC: [2][6]byte{mac(0x31), mac(0x51)}},
	{name: NodeB, ha: [2]string{"198.51.100.2/30", "198.51.100.6/30"}, mac: mac(0x12), haMAC: [2][6]byte{mac(0x32), mac(0x52)}},
	{name: Svc, mac: mac(0x20)},
	{name: Client, mac: mac(0x64)},
}

func mac(last byte) [6]byte { return [6]byte{0x02, 0x74, 0x64, 0x00, 0x01, last} }

// lanAddrs returns the host's LAN addresses. The IPv6 suffix is written
// with the same digits as the IPv4 one (::11 for .11), which keeps captures
// readable.
func (p hostPlan) lanAddrs() (netip.Addr, netip.Addr) {
	v4 := map[string]string{Gateway: "192.0.2.1", NodeA: "192.0.2.11", NodeB: "192.0.2.12", Svc: "192.0.2.20", Client: "192.0.2.100"}[p.name]
	v6 := map[string]string{Gateway: "2001:db8:0:1::1", NodeA: "2001:db8:0:1::11", NodeB: "2001:db8:0:1::12", Svc: "2001:db8:0:1::20", Client: "2001:db8:0:1::100"}[p.name]
	return netip.MustParseAddr(v4), netip.MustParseAddr(v6)
}

// Options configure New.
type Options struct {
	// Prefix names the run; empty picks a fresh random one.
	Prefix string
	// HALinks is the number of dedicated HA links between a and b: 1 or 2
	// (0 means 2).
	HALinks int
	// Persistent keeps the lab after the creating process exits, until
	// Down or SweepAll (the tdlab CLI's "up").
	Persistent bool
	// Logf receives progress lines (t.Logf fits). Nil discards them.
	Logf func(format string, args ...any)
}

// Lab is one running topology. Its methods are safe for concurrent use.
type Lab struct {
	Prefix  string
	HALinks int

	logf   func(string, ...any)
	hosts  map[string]*Host
	fabric string // namespace name of the fabric

	lock *os.File // nil for an attached (not owned) lab

	mu        sync.Mutex
	rec       record
	procs     map[*Process]bool
	faults    map[*Fault]bool
	nextTable int
	nextQueue uint16
	closed    bool
}

// Host is one namespace of the lab.
type Host struct {
	Name string
	NS   string           // network namespace name (for ip netns exec)
	MAC  net.HardwareAddr // MAC of lan0
	LAN4 netip.Addr
	LAN6 netip.Addr
	// HA holds the address on ha1 and ha2 (nodes a and b only).
	HA []netip.Addr

	lab *Lab
}

// New sweeps leftovers of dead runs and builds the pair topology. Close
// removes it. On error nothing of the new run is left behind.
func New(ctx context.Context, opts Options) (*Lab, error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.HALinks == 0 {
		opts.HALinks = 2
	}
	if opts.HALinks < 1 || opts.HALinks > 2 {
		return nil, fmt.Errorf("lab: Options.HALinks = %d: want 1 or 2", opts.HALinks)
	}
	if err := checkTools(); err != nil {
		return nil, err
	}
	if err := Sweep(ctx, opts.Logf); err != nil {
		opts.Logf("lab: sweep of leftovers incomplete: %v", err)
	}
	prefix := opts.Prefix
	if prefix == "" {
		p, err := newPrefix()
		if err != nil {
			return nil, err
		}
		prefix = p
	}
	if err := validPrefix(prefix); err != nil {
		return nil, err
	}
	lock, err := acquire(prefix)
	if err != nil {
		return nil, err
	}
	l := newLab(prefix, opts.HALinks, opts.Logf)
	l.lock = lock
	l.rec.Persistent = opts.Persistent
	if err := l.build(ctx); err != nil {
		cerr := l.Close()
		return nil, errors.Join(err, cerr)
	}
	opts.Logf("lab: %s up (%d HA links)", prefix, opts.HALinks)
	return l, nil
}

func newLab(prefix string, haLinks int, logf func(string, ...any)) *Lab {
	l := &Lab{
		Prefix:  prefix,
		HALinks: haLinks,
		logf:    logf,
		hosts:   map[string]*Host{},
		fabric:  prefix + "-fab",
		procs:   map[*Process]bool{},
		faults:  map[*Fault]bool{},
		rec:     record{Prefix: prefix, HALinks: haLinks},
	}
	for _, p := range plan {
		v4, v6 := p.lanAddrs()
		h := &Host{Name: p.name, NS: prefix + "-" + p.name, MAC: net.HardwareAddr(p.mac[:]), LAN4: v4, LAN6: v6, lab: l}
		for i := 0; i < haLinks && p.ha[0] != ""; i++ {
			h.HA = append(h.HA, netip.MustParsePrefix(p.ha[i]).Addr())
		}
		l.hosts[p.name] = h
	}
	return l
}

// Attach returns a handle on a lab another process created (persistent
// labs of the CLI). It does not own the lab: Close releases only what this
// handle added (processes, faults); Down removes the lab.
func Attach(prefix string, logf func(string, ...any)) (*Lab, error) {
	if err := validPrefix(prefix); err != nil {
		return nil, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	r, err := readRecord(prefix)
	if err != nil {
		return nil, fmt.Errorf("lab: no lab %s: %w", prefix, err)
	}
	l := newLab(prefix, r.HALinks, logf)
	l.rec = *r
	return l, nil
}

// Down removes a lab by prefix: its processes, namespaces and registry
// files. It refuses a lab whose owner is alive.
func Down(ctx context.Context, prefix string, logf func(string, ...any)) error {
	if err := validPrefix(prefix); err != nil {
		return err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if lockHeld(prefix) {
		return fmt.Errorf("lab: %s is owned by a live process; stop it instead", prefix)
	}
	return removeRun(ctx, prefix, logf)
}

// Host returns the named host; it panics on an unknown name, which is a bug
// in the test.
func (l *Lab) Host(name string) *Host {
	h, ok := l.hosts[name]
	if !ok {
		panic(fmt.Sprintf("lab: no host %q", name))
	}
	return h
}

// Hosts returns every host, in a fixed order.
func (l *Lab) Hosts() []*Host {
	out := make([]*Host, 0, len(plan))
	for _, p := range plan {
		out = append(out, l.hosts[p.name])
	}
	return out
}

// FabricNS returns the name of the fabric namespace (bridges lan, ha1, ha2).
func (l *Lab) FabricNS() string { return l.fabric }

// FabricPort returns the name, inside the fabric namespace, of the bridge
// port at the far end of host's interface ifname.
func (l *Lab) FabricPort(host, ifname string) string {
	bridge := strings.TrimSuffix(ifname, "0") // lan0 -> lan, ha1 -> ha1
	return bridge + "-" + host
}

func checkTools() error {
	for _, t := range []string{"ip", "nft", "iptables", "ip6tables"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("lab: %s not found (make test installs it): %w", t, err)
		}
	}
	return nil
}

// build creates the namespaces, bridges, cables and addresses.
func (l *Lab) build(ctx context.Context) error {
	nss := []string{l.fabric}
	for _, h := range l.Hosts() {
		nss = append(nss, h.NS)
	}
	// Record first: if we die halfway, the sweeper knows what to remove.
	l.mu.Lock()
	l.rec.Namespaces = nss
	err := writeRecord(&l.rec)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	for _, ns := range nss {
		if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		if _, err := run(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	// Fabric: one bridge per segment; no STP and no forward delay (ports
	// forward at once), no multicast snooping (NA to ff02::1 must flood, as
	// on an unmanaged switch).
	bridges := []string{"lan", "ha1"}
	if l.HALinks == 2 {
		bridges = append(bridges, "ha2")
	}
	for _, br := range bridges {
		if _, err := run(ctx, "ip", "-n", l.fabric, "link", "add", br, "type", "bridge",
			"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"); err != nil {
			return err
		}
		if _, err := run(ctx, "ip", "-n", l.fabric, "link", "set", br, "up"); err != nil {
			return err
		}
	}
	for _, p := range plan {
		h := l.hosts[p.name]
		// Host settings before any address exists: no DAD, so IPv6
		// addresses (link-local included) are usable at once.
		if err := sysctls(ctx, h.NS, map[string]string{
			"net.ipv6.conf.all.accept_dad":     "0",
			"net.ipv6.conf.default.accept_dad": "0",
			"net.ipv6.conf.all.forwarding":     "0",
		}); err != nil {
			return err
		}
		if err := l.cable(ctx, h, LANIf, "lan", net.HardwareAddr(p.mac[:])); err != nil {
			return err
		}
		if _, err := run(ctx, "ip", "-n", h.NS, "addr", "add", h.LAN4.String()+"/24", "dev", LANIf); err != nil {
			return err
		}
		if _, err := run(ctx, "ip", "-n", h.NS, "addr", "add", h.LAN6.String()+"/64", "dev", LANIf, "nodad"); err != nil {
			return err
		}
		for i := range h.HA {
			ifname := []string{HA1If, HA2If}[i]
			if err := l.cable(ctx, h, ifname, ifname, net.HardwareAddr(p.haMAC[i][:])); err != nil {
				return err
			}
			if _, err := run(ctx, "ip", "-n", h.NS, "addr", "add", p.ha[i], "dev", ifname); err != nil {
				return err
			}
		}
		if p.name != Gateway {
			gw := l.hosts[Gateway]
			if _, err := run(ctx, "ip", "-n", h.NS, "route", "add", "default", "via", gw.LAN4.String()); err != nil {
				return err
			}
			if _, err := run(ctx, "ip", "-n", h.NS, "-6", "route", "add", "default", "via", gw.LAN6.String()); err != nil {
				return err
			}
		}
	}
	return nil
}

// cable connects host's interface ifname to a new port of bridge in the
// fabric. Both ends are created directly in their namespaces.
func (l *Lab) cable(ctx context.Context, h *Host, ifname, bridge string, hw net.HardwareAddr) error {
	port := l.FabricPort(h.Name, ifname)
	if _, err := run(ctx, "ip", "link", "add", ifname, "netns", h.NS, "address", hw.String(), "type", "veth",
		"peer", "name", port, "netns", l.fabric); err != nil {
		return err
	}
	if _, err := run(ctx, "ip", "-n", l.fabric, "link", "set", port, "master", bridge, "up"); err != nil {
		return err
	}
	_, err := run(ctx, "ip", "-n", h.NS, "link", "set", ifname, "up")
	return err
}

func sysctls(ctx context.Context, ns string, kv map[string]string) error {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var script strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&script, "echo %s > /proc/sys/%s\n", kv[k], strings.ReplaceAll(k, ".", "/"))
	}
	_, err := nsRun(ctx, ns, "sh", "-ec", script.String())
	return err
}

// Close stops the processes the lab started, clears its faults and, for a
// lab this process owns and did not make persistent, removes it. It is
// idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := make([]*Process, 0, len(l.procs))
	for p := range l.procs {
		procs = append(procs, p)
	}
	faults := make([]*Fault, 0, len(l.faults))
	for f := range l.faults {
		faults = append(faults, f)
	}
	l.mu.Unlock()

	ctx := context.Background()
	var errs []error
	for _, p := range procs {
		p.Kill()
	}
	for _, f := range faults {
		if err := f.Clear(); err != nil {
			errs = append(errs, err)
		}
	}
	if l.lock == nil || l.rec.Persistent {
		if l.lock != nil {
			l.lock.Close()
		}
		return errors.Join(errs...)
	}
	for _, ns := range append([]string{l.fabric}, l.nsNames()...) {
		killNamespacePIDs(ctx, ns, l.logf)
		if _, err := run(ctx, "ip", "netns", "del", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		os.Remove(recordPath(l.Prefix))
		os.Remove(lockPath(l.Prefix))
	}
	l.lock.Close()
	l.logf("lab: %s down", l.Prefix)
	return errors.Join(errs...)
}

func (l *Lab) nsNames() []string {
	var out []string
	for _, h := range l.Hosts() {
		out = append(out, h.NS)
	}
	return out
}

// Run executes a command inside h's namespace and returns its standard
// output; the error holds what it printed on failure.
func (h *Host) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return nsRun(ctx, h.NS, name, args...)
}
