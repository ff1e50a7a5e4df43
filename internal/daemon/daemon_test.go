package daemon

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/pair"
)

func TestNodeIDsAgreeOnBothNodes(t *testing.T) {
	a1, a2 := nodeIDs("a", "b")
	b1, b2 := nodeIDs("b", "a")
	if a1 != b2 || a2 != b1 || a1 == a2 || (a1 != 1 && a1 != 2) {
		t.Errorf("a: self %d peer %d; b: self %d peer %d", a1, a2, b1, b2)
	}
}

func TestAdvertSurvivesTheHeartbeat(t *testing.T) {
	for _, a := range []pair.Advert{
		{Epoch: 7, Role: pair.RoleActive, LSN: 99, LANUp: true, HearPeer: true},
		{Epoch: 8, Role: pair.RolePassive, Maintenance: true, MaintGen: 3, Outdated: true, Handover: true, Degraded: true, DataKnown: true},
		{},
	} {
		got := advertFromPayload(payloadFromAdvert(a))
		if got != a {
			t.Errorf("advert %+v came back as %+v", a, got)
		}
	}
	// Every field the state machine adds must cross the wire: set each
	// one (but Node, which the driver fills from the configuration).
	var all pair.Advert
	v := reflect.ValueOf(&all).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if v.Type().Field(i).Name == "Node" {
			continue
		}
		switch f.Kind() {
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(uint64(i + 1))
		default:
			t.Fatalf("Advert.%s: kind %s not covered by this test", v.Type().Field(i).Name, f.Kind())
		}
	}
	if got := advertFromPayload(payloadFromAdvert(all)); got != all {
		t.Errorf("an advert with every field set came back as\n%+v\nwant\n%+v", got, all)
	}
}

const baseCfg = `node: a
peer: b
pair-id: 42
key-file: KEY
data-dir: DIR
paths:
  - {name: ha1, interface: ha1, local: 198.51.100.1, peer: 198.51.100.2}
replication:
  listen: 198.51.100.1:7101
  peers: [198.51.100.2:7101]
vip:
  interface: lan0
  addresses: [192.0.2.10/24]
tie-breaker:
  gateways: [192.0.2.1]
`

func writeCfg(t *testing.T, extra string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "pair.key")
	os.WriteFile(key, []byte(strings.Repeat("k", 48)), 0o600)
	src := strings.NewReplacer("KEY", key, "DIR", filepath.Join(dir, "data")).Replace(baseCfg) + extra
	p := filepath.Join(dir, "tandemd.yaml")
	os.WriteFile(p, []byte(src), 0o600)
	return p, dir
}

// TestTimingErrorsNameFieldAndLine: a timing the pair package refuses is
// reported with the file, the line and the field.
func TestTimingErrorsNameFieldAndLine(t *testing.T) {
	p, _ := writeCfg(t, "timing:\n  profile: default\n  interval: 100ms\n  dead-after: 200ms\n")
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = pairTiming(cfg)
	if err == nil {
		t.Fatal("dead-after 2 x interval accepted")
	}
	if !strings.Contains(err.Error(), p+":") || !strings.Contains(err.Error(), "dead-after") {
		t.Errorf("error %q does not name the file, line and field", err)
	}
	p, _ = writeCfg(t, "timing:\n  profile: fast\n  fence-aftr: 10ms\n")
	cfg, err = config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pairTiming(cfg); err == nil || !strings.Contains(err.Error(), "fence-aftr") || !strings.Contains(err.Error(), ":18:") {
		t.Errorf("misspelt timing key: %v, want it named with its line (18)", err)
	}
}

func TestMainExitCodes(t *testing.T) {
	p, dir := writeCfg(t, "")
	var out, errb strings.Builder
	if code := Main([]string{"check-config", "--config", p}, &out, &errb); code != 0 {
		t.Errorf("check-config of a good file: exit %d, %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "interval 100ms") {
		t.Errorf("check-config does not print the effective timing: %q", out.String())
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("node: a\npeer: a\n"), 0o600)
	errb.Reset()
	if code := Main([]string{"check-config", "--config", bad}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "bad.yaml:2: peer") {
		t.Errorf("check-config of a bad file: exit %d, %q", code, errb.String())
	}
	key := filepath.Join(dir, "new.key")
	if code := Main([]string{"keygen", "--out", key}, &out, &errb); code != 0 {
		t.Fatalf("keygen: exit %d", code)
	}
	if _, err := config.ReadKey(key); err != nil {
		t.Errorf("keygen wrote an unusable key: %v", err)
	}
	if code := Main([]string{"keygen", "--out", key}, &out, &errb); code != 2 {
		t.Errorf("keygen over an existing key: exit %d, want 2 (never overwrite)", code)
	}
}

// TestDataDirLockRefusesASecondDaemon: two daemons never share a store.
func TestDataDirLockRefusesASecondDaemon(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDataDir(dir); err == nil {
		t.Error("second lock of the same data dir succeeded")
	}
	unlock()
	u2, err := lockDataDir(dir)
	if err != nil {
		t.Errorf("lock after unlock: %v", err)
	} else {
		u2()
	}
}

// TestConflictFilterWaitsOutTheLease: a conflict from a dead or frozen
// daemon's kernel ends with its address lease and never reaches the
// machine; one that outlives the lease does; a pause starts a new episode.
func TestConflictFilterWaitsOutTheLease(t *testing.T) {
	var f conflictFilter
	t0 := time.Unix(1000, 0)
	for i := 0; i <= 3; i++ { // reported every second while the lease runs
		if f.persistent("02:00:00:00:00:01", t0.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("conflict passed at %ds, inside the lease", i)
		}
	}
	if !f.persistent("02:00:00:00:00:01", t0.Add(4*time.Second)) {
		t.Error("a conflict lasting the lease plus a second was not passed")
	}
	if f.persistent("02:00:00:00:00:01", t0.Add(10*time.Second)) {
		t.Error("a conflict after a 6 s pause counted as the same episode")
	}
	if f.persistent("02:00:00:00:00:02", t0.Add(11*time.Second)) {
		t.Error("another MAC inherited the episode")
	}
}
