package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `node: a
peer: b
pair-id: 42
key-file: /etc/tandem/pair.key
data-dir: /var/lib/tandem
timing: fast
paths:
  - {name: ha1, interface: ha1, local: 198.51.100.1, peer: 198.51.100.2}
  - {name: lan, interface: lan0, local: 192.0.2.11, peer: 192.0.2.12}
replication:
  listen: 198.51.100.1:7101
  peers: [198.51.100.2:7101]
vip:
  interface: lan0
  addresses: [192.0.2.10/24, 2001:db8:0:1::10/64]
tie-breaker:
  gateways: [192.0.2.1]
`

func TestParseGoodAppliesDefaults(t *testing.T) {
	c, err := Parse("good.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Timing.Profile != "fast" || c.Replication.Mode != "sync" || c.Replication.OnPeerLoss != "degrade" {
		t.Errorf("profile/mode/on-peer-loss = %q/%q/%q", c.Timing.Profile, c.Replication.Mode, c.Replication.OnPeerLoss)
	}
	if *c.VIP.GARP.Repeats != 5 || c.VIP.GARP.Interval.D().String() != "1s" {
		t.Errorf("garp defaults = %d/%v", *c.VIP.GARP.Repeats, c.VIP.GARP.Interval)
	}
	if c.Paths[0].Port != DefaultHeartbeatPort || c.DataPlane.Port != DefaultDataPlanePort || c.Management.Socket != DefaultSocket {
		t.Errorf("port/socket defaults not applied: %+v", c)
	}
	if len(c.Replication.Listen) != 1 || c.Replication.Listen[0].String() != "198.51.100.1:7101" {
		t.Errorf("a scalar listen = %v, want the one address", c.Replication.Listen)
	}
	two := strings.Replace(good, "listen: 198.51.100.1:7101", "listen: [198.51.100.1:7101, 198.51.100.5:7101]", 1)
	if c2, err := Parse("two.yaml", []byte(two)); err != nil || len(c2.Replication.Listen) != 2 || c2.Replication.Listen[1].String() != "198.51.100.5:7101" {
		t.Errorf("a listen list: %v, %v", err, c2)
	}
	if *c.Runtime.JobRetention != DefaultJobRetention || c.Runtime.PurgeEvery != DefaultPurgeEvery {
		t.Errorf("job-retention/purge-every defaults = %v/%v", *c.Runtime.JobRetention, c.Runtime.PurgeEvery)
	}
	if *c.Disk.RestartAfterStall != DefaultRestartAfterStall {
		t.Errorf("restart-after-stall default = %v", *c.Disk.RestartAfterStall)
	}
	never := strings.Replace(good, "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\ndisk:\n  restart-after-stall: 0s\n", 1)
	if c0, err := Parse("never.yaml", []byte(never)); err != nil || *c0.Disk.RestartAfterStall != 0 {
		t.Errorf("restart-after-stall: 0s parsed as %v, %v; want 0 (never)", err, c0)
	}
	if *c.Disk.IOErrorHandover != DefaultIOErrorHandover {
		t.Errorf("io-error-handover default = %v", *c.Disk.IOErrorHandover)
	}
	off := strings.Replace(good, "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\ndisk:\n  io-error-handover: 0s\n", 1)
	if c0, err := Parse("off.yaml", []byte(off)); err != nil || *c0.Disk.IOErrorHandover != 0 {
		t.Errorf("io-error-handover: 0s parsed as %v, %v; want 0 (never)", err, c0)
	}
	if *c.Replication.VerifyEvery != DefaultVerifyEvery {
		t.Errorf("verify-every default = %v", *c.Replication.VerifyEvery)
	}
	if c.Replication.MaxUnackedGroups != DefaultMaxUnackedGroups {
		t.Errorf("max-unacked-groups default = %d", c.Replication.MaxUnackedGroups)
	}
	if c.Backup.Dir != "" || *c.Backup.Every != DefaultBackupEvery || c.Backup.Keep != DefaultBackupKeep {
		t.Errorf("backup defaults = %+v", c.Backup)
	}
	keep := good + "runtime: {job-retention: 0s}\n"
	if c3, err := Parse("keep.yaml", []byte(keep)); err != nil || *c3.Runtime.JobRetention != 0 {
		t.Errorf("job-retention 0 (keep every job): %v, %+v", err, c3)
	}
	if got := c.Line("vip.addresses[1]"); got != 15 {
		t.Errorf("Line(vip.addresses[1]) = %d, want 15", got)
	}
	if got := c.Line("vip.garp.repeats"); got != 13 {
		t.Errorf("Line of an absent field = %d, want its nearest ancestor's (vip, 13)", got)
	}
}

func TestTimingMapping(t *testing.T) {
	src := strings.Replace(good, "timing: fast", "timing:\n  profile: default\n  interval: 50ms\n  dead-after: 400ms\n  fence-margin: 20ms", 1)
	c, err := Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c.Timing.Interval.D().String() != "50ms" || c.Timing.DeadAfter.D().String() != "400ms" || c.Timing.Extra["fence-margin"].D().String() != "20ms" {
		t.Errorf("timing = %+v", c.Timing)
	}
}

// TestBadInputsNameFieldAndLine is the contract with operators: each
// mistake is reported with the file, the line and the field.
func TestBadInputsNameFieldAndLine(t *testing.T) {
	cases := []struct {
		name, from, to string
		want           []string // substrings of the error
	}{
		{"unknown key", "data-dir: /var/lib/tandem", "data-dir: /var/lib/tandem\ndata-dri: /x", []string{"bad.yaml:6: data-dri: field data-dri not found"}},
		{"bad duration", "timing: fast", "timing: {interval: 10}", []string{"bad.yaml:6:", `"10" is not a duration`}},
		{"bad prefix", "2001:db8:0:1::10/64", "2001:db8:0:1::10", []string{"bad.yaml:15:", `"2001:db8:0:1::10" is not an address with prefix length`}},
		{"bad address", "local: 198.51.100.1,", "local: 198.51.100.300,", []string{"bad.yaml:8: paths[0].local: \"198.51.100.300\" is not an IP address"}},
		{"same node and peer", "peer: b", "peer: a", []string{"bad.yaml:2: peer: must differ from node"}},
		{"missing pair id", "pair-id: 42\n", "", []string{"bad.yaml: pair-id: required"}},
		{"bad mode", "  peers: [198.51.100.2:7101]", "  peers: [198.51.100.2:7101]\n  mode: semi", []string{"bad.yaml:13: replication.mode: \"semi\": want sync or async"}},
		{"verify too often", "  peers: [198.51.100.2:7101]", "  peers: [198.51.100.2:7101]\n  verify-every: 5s", []string{"bad.yaml:13: replication.verify-every: 5s: want at least 1m (0: never)"}},
		{"negative verify", "  peers: [198.51.100.2:7101]", "  peers: [198.51.100.2:7101]\n  verify-every: -1h", []string{"bad.yaml:13: replication.verify-every: must not be negative"}},
		{"pipeline too deep", "  peers: [198.51.100.2:7101]", "  peers: [198.51.100.2:7101]\n  max-unacked-groups: 65", []string{"bad.yaml:13: replication.max-unacked-groups: 65: want 1 to 64"}},
		{"negative pipeline", "  peers: [198.51.100.2:7101]", "  peers: [198.51.100.2:7101]\n  max-unacked-groups: -1", []string{"bad.yaml:13: replication.max-unacked-groups: -1: want 1 to 64"}},
		{"duplicate vip", "[192.0.2.10/24, 2001:db8:0:1::10/64]", "[192.0.2.10/24, 192.0.2.10/24]", []string{"vip.addresses[1]: 192.0.2.10 listed twice"}},
		{"family mismatch", "peer: 198.51.100.2}", "peer: 2001:db8::2}", []string{"bad.yaml:8: paths[0].peer: address family differs"}},
		{"no gateways", "tie-breaker:\n  gateways: [192.0.2.1]\n", "", []string{"tie-breaker.gateways: at least one gateway"}},
		{"duplicate listen", "listen: 198.51.100.1:7101", "listen: [198.51.100.1:7101, 198.51.100.1:7101]", []string{"replication.listen[1]: 198.51.100.1:7101 listed twice"}},
		{"duplicate peer", "peers: [198.51.100.2:7101]", "peers: [198.51.100.2:7101, 198.51.100.2:7101]", []string{"replication.peers[1]: 198.51.100.2:7101 listed twice"}},
		{"bad listen in a list", "listen: 198.51.100.1:7101", "listen: [198.51.100.1:7101, 198.51.100.5]", []string{"bad.yaml:11: replication.listen[1]: \"198.51.100.5\" is not address:port"}},
		{"empty listen list", "listen: 198.51.100.1:7101", "listen: []", []string{"replication.listen: required"}},
		{"bad number", "pair-id: 42", "pair-id: x", []string{"bad.yaml:3: pair-id: cannot unmarshal"}},
		{"bad profile", "timing: fast", "timing: turbo", []string{"bad.yaml:6: timing.profile: \"turbo\": want default or fast"}},
		{"yaml syntax", "vip:\n", "vip: [\n", []string{"bad.yaml:"}},
		{"negative retention", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\nruntime:\n  job-retention: -1h\n", []string{"bad.yaml:19: runtime.job-retention: must not be negative"}},
		{"bad purge period", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\nruntime:\n  purge-every: often\n", []string{"bad.yaml:19: runtime.purge-every:", `"often" is not a duration`}},
		{"relative backup dir", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\nbackup:\n  dir: backups\n", []string{"bad.yaml:19: backup.dir: \"backups\": want an absolute path"}},
		{"backup inside the store", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\nbackup:\n  dir: /var/lib/tandem/wip/b\n", []string{"backup.dir: \"/var/lib/tandem/wip/b\" is inside the WIP store's directory"}},
		{"backup too often", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\nbackup:\n  dir: /b\n  every: 10ms\n", []string{"bad.yaml:20: backup.every: 10ms: want at least 1s"}},
		{"negative keep", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\nbackup:\n  dir: /b\n  keep: -2\n", []string{"bad.yaml:20: backup.keep: -2: want at least 1"}},
		{"disk level too high", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\ndisk:\n  warn-free-percent: 95\n", []string{"bad.yaml:19: disk.warn-free-percent: 95: want 0 (off) to 90"}},
		{"disk stall timeout too short", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\ndisk:\n  stall-timeout: 100ms\n", []string{"bad.yaml:19: disk.stall-timeout: 100ms: want 1s to 10m"}},
		{"io error handover too short", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\ndisk:\n  io-error-handover: 5s\n", []string{"bad.yaml:19: disk.io-error-handover: 5s: want 10s to 1h (0: never)"}},
		{"io error handover negative", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\ndisk:\n  io-error-handover: -1m\n", []string{"bad.yaml:19: disk.io-error-handover: must not be negative (0: never)"}},
		{"restart after stall too long", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\ndisk:\n  restart-after-stall: 2h\n", []string{"bad.yaml:19: disk.restart-after-stall: 2h0m0s: want 1s to 1h (0: never)"}},
		{"negative restart after stall", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\ndisk:\n  restart-after-stall: -1m\n", []string{"bad.yaml:19: disk.restart-after-stall: must not be negative (0: never)"}},
		{"disk levels crossed", "gateways: [192.0.2.1]\n", "gateways: [192.0.2.1]\ndisk:\n  warn-free-percent: 10\n  critical-free-percent: 10\n", []string{"bad.yaml:20: disk.critical-free-percent: 10: must be below disk.warn-free-percent (10), or 0 (off)"}},
		{"several at once", "node: a\npeer: b", "node: A\npeer: b b", []string{"bad.yaml:1: node:", "bad.yaml:2: peer:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(good, tc.from, tc.to, 1)
			if src == good {
				t.Fatalf("case does not change the file (%q not found)", tc.from)
			}
			_, err := Parse("bad.yaml", []byte(src))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := Parse("empty.yaml", nil); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
}

func TestWrapNamesLine(t *testing.T) {
	c, err := Parse("good.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Wrap("timing.dead-after", errors.New("must exceed 3 x interval"))
	if got := err.Error(); got != "good.yaml:6: timing.dead-after: must exceed 3 x interval" {
		t.Errorf("Wrap = %q", got)
	}
}

func TestReadKey(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	os.WriteFile(p, []byte(strings.Repeat("k", 40)+"\n"), 0o600)
	if k, err := ReadKey(p); err != nil || len(k) != 40 {
		t.Errorf("ReadKey = %d bytes, %v", len(k), err)
	}
	os.Chmod(p, 0o644)
	if _, err := ReadKey(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key accepted: %v", err)
	}
	os.WriteFile(p, []byte("short"), 0o600)
	os.Chmod(p, 0o600)
	if _, err := ReadKey(p); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("short key accepted: %v", err)
	}
	if _, err := ReadKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing key file accepted")
	}
}

// TestDocumentedExampleParses keeps docs/configuration.md's complete
// example valid: the first yaml block of the document must parse.
func TestDocumentedExampleParses(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i := strings.Index(s, "```yaml\n")
	if i < 0 {
		t.Fatal("docs/configuration.md has no ```yaml block")
	}
	s = s[i+len("```yaml\n"):]
	j := strings.Index(s, "```")
	if j < 0 {
		t.Fatal("unterminated yaml block")
	}
	c, err := Parse("docs/configuration.md", []byte(s[:j]))
	if err != nil {
		t.Fatalf("the documented example does not parse:\n%v", err)
	}
	if len(c.Paths) != 3 || len(c.VIP.Addresses) != 2 || c.Replication.PeerAckTimeout.D().String() != "2s" {
		t.Errorf("example parsed as %+v", c)
	}
}
