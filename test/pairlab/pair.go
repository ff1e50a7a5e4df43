package pairlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
)

// Binaries are the programs a pair runs, built once per test binary.
type Binaries struct {
	Tandemd, Tandemctl, Vipprobe string
}

// Build compiles tandemd, tandemctl and vipprobe into dir.
func Build(ctx context.Context, dir string) (Binaries, error) {
	root, err := moduleRoot()
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{
		Tandemd:   filepath.Join(dir, "tandemd"),
		Tandemctl: filepath.Join(dir, "tandemctl"),
		Vipprobe:  filepath.Join(dir, "vipprobe"),
	}
	for out, pkg := range map[string]string{b.Tandemd: "./cmd/tandemd", b.Tandemctl: "./cmd/tandemctl", b.Vipprobe: "./test/pairlab/cmd/vipprobe"} {
		cmd := exec.CommandContext(ctx, goTool(), "build", "-o", out, pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("pairlab: go build %s: %v\n%s", pkg, err, msg)
		}
	}
	return b, nil
}

func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// moduleRoot finds the directory holding go.mod above this process's
// working directory.
func moduleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if fileExists(filepath.Join(d, "go.mod")) {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", errors.New("pairlab: no go.mod above the working directory")
		}
		d = up
	}
}

// Options configure a pair.
type Options struct {
	Lab  *lab.Lab
	Bins Binaries
	// Dir holds keys, configurations, data directories, sockets and logs.
	Dir string
	// Timing is the profile name ("default", "fast") or a YAML mapping.
	Timing string
	// VirtualMAC puts the VIP on a macvlan with lab.VMAC.
	VirtualMAC bool
	// ForceStopAfter is the runtime's pause bound ("" = 0).
	ForceStopAfter string
	// JobRetention and PurgeEvery set the runtime's job purge ("": the
	// daemon's defaults).
	JobRetention, PurgeEvery string
	// RetainBytes sets replication.retain-bytes ("": the default).
	RetainBytes string
	// VerifyEvery sets replication.verify-every ("": the default).
	VerifyEvery string
	// OnPeerLoss sets replication.on-peer-loss ("": the default, degrade).
	OnPeerLoss string
	// Extra is appended to each node's configuration file (YAML).
	Extra string
	// Watchdog, when set, runs tandemd under a service watchdog of that
	// interval, as systemd's WatchdogSec does (serviceWatchdog).
	Watchdog time.Duration
	Logf     func(format string, args ...any)
}

// Pair is two tandemd nodes in a lab.
type Pair struct {
	opt   Options
	Nodes map[string]*Node
	A, B  *Node
}

// Node is one tandemd of the pair.
type Node struct {
	Name    string
	Host    *lab.Host
	Dir     string
	Config  string
	Socket  string
	LogPath string
	API     *api.Client

	pair *Pair
	mu   sync.Mutex
	proc *lab.Process
	log  *os.File
}

const configTmpl = `node: {{.Name}}
peer: {{.Peer}}
pair-id: 42
key-file: {{.Key}}
data-dir: {{.Dir}}/data
timing: {{.Timing}}
paths:
  - {name: ha1, interface: {{.HA1If}}, local: {{.HA1}}, peer: {{.PeerHA1}}}
{{- if .HA2}}
  - {name: ha2, interface: {{.HA2If}}, local: {{.HA2}}, peer: {{.PeerHA2}}}
{{- end}}
  - {name: lan, interface: {{.LANIf}}, local: {{.LAN}}, peer: {{.PeerLAN}}}
replication:
  listen: [{{.HA1}}:7101{{if .HA2}}, {{.HA2}}:7101{{end}}]
  peers: [{{.PeerHA1}}:7101{{if .HA2}}, {{.PeerHA2}}:7101{{end}}]
  peer-ack-timeout: 1s
{{- if .RetainBytes}}
  retain-bytes: {{.RetainBytes}}
{{- end}}
{{- if .VerifyEvery}}
  verify-every: {{.VerifyEvery}}
{{- end}}
{{- if .OnPeerLoss}}
  on-peer-loss: {{.OnPeerLoss}}
{{- end}}
vip:
  interface: {{.LANIf}}
  addresses: [{{.VIP4}}/24, {{.VIP6}}/64]
{{- if .VMAC}}
  virtual-mac: {interface: vmac0, address: "{{.VMAC}}"}
{{- end}}
tie-breaker:
  gateways: [{{.GW}}]
management:
  socket: {{.Dir}}/tandemd.sock
  metrics: {{.LAN}}:9100
data-plane:
  port: 8080
runtime:
  force-stop-after: {{.ForceStop}}
{{- if .JobRetention}}
  job-retention: {{.JobRetention}}
{{- end}}
{{- if .PurgeEvery}}
  purge-every: {{.PurgeEvery}}
{{- end}}
log:
  level: debug
  format: json
{{.Extra}}
`

// New writes the pair key and both nodes' configurations; it starts
// nothing.
func New(o Options) (*Pair, error) {
	if o.Timing == "" {
		o.Timing = "fast"
	}
	if o.ForceStopAfter == "" {
		o.ForceStopAfter = "0s"
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	key := make([]byte, 48)
	rand.Read(key)
	keyPath := filepath.Join(o.Dir, "pair.key")
	if err := os.WriteFile(keyPath, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	t := template.Must(template.New("cfg").Parse(configTmpl))
	p := &Pair{opt: o, Nodes: map[string]*Node{}}
	gw := o.Lab.Host(lab.Gateway)
	for _, pr := range [][2]string{{lab.NodeA, lab.NodeB}, {lab.NodeB, lab.NodeA}} {
		h, peer := o.Lab.Host(pr[0]), o.Lab.Host(pr[1])
		dir := filepath.Join(o.Dir, h.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		v := map[string]any{
			"Name": h.Name, "Peer": peer.Name, "Key": keyPath, "Dir": dir, "Timing": o.Timing,
			"HA1If": "ha1", "HA1": h.HA[0], "PeerHA1": peer.HA[0],
			"LANIf": lab.LANIf, "LAN": h.LAN4, "PeerLAN": peer.LAN4,
			"VIP4": lab.VIP4, "VIP6": lab.VIP6, "GW": gw.LAN4, "ForceStop": o.ForceStopAfter, "Extra": o.Extra,
			"JobRetention": o.JobRetention, "PurgeEvery": o.PurgeEvery, "RetainBytes": o.RetainBytes, "VerifyEvery": o.VerifyEvery, "OnPeerLoss": o.OnPeerLoss,
		}
		if len(h.HA) > 1 {
			v["HA2If"], v["HA2"], v["PeerHA2"] = "ha2", h.HA[1], peer.HA[1]
		}
		if o.VirtualMAC {
			v["VMAC"] = lab.VMAC.String()
		}
		var b bytes.Buffer
		if err := t.Execute(&b, v); err != nil {
			return nil, err
		}
		n := &Node{Name: h.Name, Host: h, Dir: dir, Config: filepath.Join(dir, "tandemd.yaml"),
			Socket: filepath.Join(dir, "tandemd.sock"), LogPath: filepath.Join(dir, "tandemd.log"), pair: p}
		n.API = api.NewClient(n.Socket)
		if err := os.WriteFile(n.Config, b.Bytes(), 0o600); err != nil {
			return nil, err
		}
		p.Nodes[h.Name] = n
	}
	p.A, p.B = p.Nodes[lab.NodeA], p.Nodes[lab.NodeB]
	return p, nil
}

// Bins returns the binaries the pair runs.
func (p *Pair) Bins() Binaries { return p.opt.Bins }

// Other returns the node that is not n.
func (p *Pair) Other(n *Node) *Node {
	if n == p.A {
		return p.B
	}
	return p.A
}

// Start runs tandemd on the node; its log is appended to LogPath.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil && !n.proc.Exited() {
		return fmt.Errorf("pairlab: %s already running (pid %d)", n.Name, n.proc.PID)
	}
	f, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	var wd *serviceWatchdog
	var env []string
	if every := n.pair.opt.Watchdog; every > 0 {
		if wd, env, err = newServiceWatchdog(n, every); err != nil {
			f.Close()
			return err
		}
	}
	p, err := n.Host.Start("tandemd", []string{n.pair.opt.Bins.Tandemd, "run", "--config", n.Config}, lab.ProcOptions{Env: env, Stdout: f, Stderr: f})
	if err != nil {
		f.Close()
		if wd != nil {
			wd.conn.Close()
			os.RemoveAll(wd.dir)
		}
		return err
	}
	n.proc, n.log = p, f
	if wd != nil {
		go wd.run(p)
	}
	n.pair.opt.Logf("pairlab: tandemd %s started (pid %d)", n.Name, p.PID)
	return nil
}

// Proc returns the node's current process (nil before Start).
func (n *Node) Proc() *lab.Process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// Kill SIGKILLs the daemon: no release, no handover, as a crash.
func (n *Node) Kill() {
	if p := n.Proc(); p != nil {
		p.Kill()
		n.pair.opt.Logf("pairlab: tandemd %s killed", n.Name)
	}
}

// Crash kills the daemon with SIGKILL, then does what its systemd unit's
// ExecStopPost does (image/tandemd.service): `tandemd cleanup` removes the
// VIP the dead run left configured. It does not restart the daemon.
func (n *Node) Crash(ctx context.Context) error {
	n.Kill()
	out, err := n.Host.Run(ctx, n.pair.opt.Bins.Tandemd, "cleanup", "--config", n.Config)
	if err != nil {
		return fmt.Errorf("pairlab: %s: tandemd cleanup: %v: %s", n.Name, err, out)
	}
	n.pair.opt.Logf("pairlab: %s: cleanup after the crash: %s", n.Name, strings.TrimSpace(string(out)))
	return nil
}

// Stop sends SIGTERM and waits up to grace for the orderly stop.
func (n *Node) Stop(grace time.Duration) error {
	p := n.Proc()
	if p == nil {
		return nil
	}
	err := p.Stop(syscall.SIGTERM, grace)
	n.pair.opt.Logf("pairlab: tandemd %s stopped: %v", n.Name, err)
	return err
}

// Status asks the node's local API.
func (n *Node) Status(ctx context.Context) (api.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return n.API.Status(ctx)
}

// WaitFor polls the node's status until ok returns true or ctx ends; it
// returns the last status seen.
func (n *Node) WaitFor(ctx context.Context, what string, ok func(api.Status) bool) (api.Status, error) {
	var last api.Status
	var lastErr error
	for {
		st, err := n.Status(ctx)
		if err == nil {
			last = st
			if ok(st) {
				return st, nil
			}
		}
		lastErr = err
		if ctx.Err() != nil {
			return last, fmt.Errorf("pairlab: %s: waiting for %s: %w (last status role=%s/%s epoch=%d, last error %v)",
				n.Name, what, ctx.Err(), last.Role, last.SubState, last.Epoch, lastErr)
		}
		clock.Sleep(ctx, clock.Real(), 20*time.Millisecond)
	}
}

// Role waits until the node reports role (and, if sub is not empty, that
// sub-state).
func (n *Node) Role(ctx context.Context, role, sub string) (api.Status, error) {
	return n.WaitFor(ctx, role+"/"+sub, func(s api.Status) bool {
		return s.Role == role && (sub == "" || s.SubState == sub)
	})
}

// Ctl runs tandemctl against the node and returns its output.
func (n *Node) Ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, n.pair.opt.Bins.Tandemctl, append([]string{"--socket", n.Socket}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Log returns what the node's daemons logged so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.LogPath)
	return string(b)
}

// Active returns the node that reports itself active and the other one.
func (p *Pair) Active(ctx context.Context) (active, other *Node, err error) {
	for _, n := range []*Node{p.A, p.B} {
		if st, err := n.Status(ctx); err == nil && st.Role == "active" {
			return n, p.Other(n), nil
		}
	}
	return nil, nil, fmt.Errorf("no active node: %s", p.Describe(ctx))
}

// WaitWhole waits until one node is active and the other passive in sync,
// and returns the active one.
func (p *Pair) WaitWhole(ctx context.Context) (*Node, error) {
	for {
		if a, o, err := p.Active(ctx); err == nil {
			if st, err := o.Status(ctx); err == nil && st.Role == "passive" && st.SubState == "in-sync" {
				return a, nil
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pair not whole again: %s", p.Describe(context.Background()))
		}
		clock.Sleep(ctx, clock.Real(), 100*time.Millisecond)
	}
}

// Close stops both daemons (SIGTERM, then SIGKILL after grace).
func (p *Pair) Close() {
	var wg sync.WaitGroup
	for _, n := range p.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if pr := n.Proc(); pr != nil && !pr.Exited() {
				n.Stop(10 * time.Second)
			}
			n.mu.Lock()
			if n.log != nil {
				n.log.Close()
			}
			n.mu.Unlock()
		}()
	}
	wg.Wait()
}

// Prober runs vipprobe in the client namespace.
type Prober struct {
	proc *lab.Process
	out  *os.File
	path string
}

// StartProbe probes the VIP (IPv4) every interval until Stop.
func (p *Pair) StartProbe(name string, interval time.Duration) (*Prober, error) {
	path := filepath.Join(p.opt.Dir, name+".jsonl")
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	c := p.opt.Lab.Host(lab.Client)
	proc, err := c.Start("vipprobe", []string{p.opt.Bins.Vipprobe, "-target", fmt.Sprintf("%s:8080", lab.VIP4), "-interval", interval.String(), "-timeout", "200ms", "-duration", "30m"}, lab.ProcOptions{Stdout: f})
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Prober{proc: proc, out: f, path: path}, nil
}

// Stop ends the prober and returns every probe it made.
func (pr *Prober) Stop() ([]Probe, error) {
	pr.proc.Stop(syscall.SIGTERM, 5*time.Second)
	pr.out.Close()
	f, err := os.Open(pr.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadProbes(f)
}

// Describe summarises the nodes' roles for messages.
func (p *Pair) Describe(ctx context.Context) string {
	var b strings.Builder
	for _, n := range []*Node{p.A, p.B} {
		st, err := n.Status(ctx)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v; ", n.Name, err)
			continue
		}
		fmt.Fprintf(&b, "%s: %s/%s epoch %d vip=%v; ", n.Name, st.Role, st.SubState, st.Epoch, st.VIP.Owned)
	}
	return b.String()
}
