package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/diskrot"
	"github.com/tandem-ha/tandem/internal/pair"
	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/wip"
)

// TestOpenStoreWarnsOfUnevenHALinkAddresses: a configuration with one
// listen address and two peers (as written before listen took a list)
// still opens, with a warning naming both fields; an even one does not
// warn, and the store listens on every listen address.
func TestOpenStoreWarnsOfUnevenHALinkAddresses(t *testing.T) {
	ap := func(s string) config.AddrPort { return config.AddrPort{AddrPort: netip.MustParseAddrPort(s)} }
	for _, tc := range []struct {
		name   string
		listen config.AddrPorts
		warn   bool
	}{
		{"one listen, two peers", config.AddrPorts{ap("127.0.0.1:0")}, true},
		{"two and two", config.AddrPorts{ap("127.0.0.1:0"), ap("127.0.0.1:0")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			cfg := &config.Config{DataDir: t.TempDir()}
			cfg.Replication.Listen = tc.listen
			cfg.Replication.Peers = []config.AddrPort{closedAddr(t), closedAddr(t)}
			cfg.Replication.Mode = "sync"
			key := make([]byte, 32)
			s, err := openStore(cfg, key, 1, 0, clock.Real(), zap.New(core), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := len(s.ListenAddrs()); got != len(tc.listen) {
				t.Errorf("listening on %d addresses, want %d", got, len(tc.listen))
			}
			warned := logs.FilterMessageSnippet("replication.listen and replication.peers").Len() > 0
			if warned != tc.warn {
				t.Errorf("warned %v, want %v (logs: %v)", warned, tc.warn, logs.All())
			}
		})
	}
}

// closedAddr is a loopback address:port nothing listens on: the store's
// dials there are refused at once.
func closedAddr(t *testing.T) config.AddrPort {
	t.Helper()
	return config.AddrPort{AddrPort: netip.MustParseAddrPort(testenv.LoopbackAddr(t))}
}

// TestOpenStoreReplacesWhatItCannotUse: the node's pair state decides
// what a missing store becomes, and a store pebble cannot open for
// corruption is set aside with the latched wip-set-aside alarm, in the
// event log too, and replaced by an Inconsistent one (not promotable: the
// machine sees ReplInconsistent until a snapshot arrives).
func TestOpenStoreReplacesWhatItCannotUse(t *testing.T) {
	open := func(t *testing.T, cfg *config.Config, epoch uint64, ev *eventLog) *wipStore {
		t.Helper()
		cfg.Replication.Listen = config.AddrPorts{closedAddr(t)}
		cfg.Replication.Peers = []config.AddrPort{closedAddr(t)}
		if cfg.Replication.Mode == "" {
			cfg.Replication.Mode = "sync"
		}
		s, err := openStore(cfg, make([]byte, 32), 1, epoch, clock.Real(), zap.NewNop(), newGoAloneGate(clock.Real(), time.Second), storeEvents(ev, clock.Real()))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("no store, new pair", func(t *testing.T) {
		s := open(t, &config.Config{DataDir: t.TempDir()}, 0, newEventLog(10))
		defer s.Close()
		if r, _ := s.Replication(); r.State == pair.ReplInconsistent {
			t.Fatal("a new pair's first store is inconsistent")
		}
	})
	t.Run("no store, node of a pair", func(t *testing.T) {
		s := open(t, &config.Config{DataDir: t.TempDir()}, 7, newEventLog(10))
		defer s.Close()
		if r, _ := s.Replication(); r.State != pair.ReplInconsistent {
			t.Fatalf("a node of a pair with its store moved away: %v, want inconsistent", r.State)
		}
	})
	t.Run("corrupt at open", func(t *testing.T) {
		cfg := &config.Config{DataDir: t.TempDir()}
		cfg.Replication.Mode = "async" // no peer here
		ev := newEventLog(10)
		s := open(t, cfg, 0, ev)
		ctx := context.Background()
		if err := s.Store.Promote(ctx, 1); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2000; i++ {
			b := s.NewBatch()
			b.Set([]byte(fmt.Sprint("k", i)), make([]byte, 1024))
			if _, err := s.Commit(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// Opening it again turns its WAL into a table.
		if err := open(t, cfg, 1, ev).Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := diskrot.FlipTrailers(cfg.DataDir + "/wip"); err != nil {
			t.Fatal(err)
		}
		s = open(t, cfg, 1, ev)
		defer s.Close()
		a, ok := ev.alarm("wip-set-aside")
		if !ok || !a.Latched || a.Severity != "warning" || !strings.Contains(a.Text, cfg.DataDir+"/wip.corrupt-") || !strings.Contains(a.Text, ".sst") {
			t.Fatalf("wip-set-aside alarm %+v (raised %v): want a latched warning naming the table and the set-aside store", a, ok)
		}
		if m, _ := filepath.Glob(cfg.DataDir + "/wip.corrupt-*/*.sst"); len(m) == 0 {
			t.Fatal("no tables in the set-aside store")
		}
		r, rs := s.Replication()
		if r.State != pair.ReplInconsistent || !strings.HasSuffix(rs.DataState, ", corrupt") || !strings.Contains(rs.Corruption, "met at open") {
			t.Fatalf("after the set-aside: %v, data %q, corruption %q", r.State, rs.DataState, rs.Corruption)
		}
		if !slices.ContainsFunc(ev.last(10), func(e api.Event) bool { return strings.Contains(e.Text, "set aside at ") }) {
			t.Fatalf("no set-aside event in %+v", ev.last(10))
		}
	})
}

// The peer's state as the API and tandemctl show it: the snapshot's
// progress on the side that sends it, and outdated while the active
// acknowledges commits the peer lacks (PeerOutdated, which the
// wip-peer-outdated alarm follows), through the peer's snapshot.
func TestReplicationViewPeerState(t *testing.T) {
	for _, tc := range []struct {
		name     string
		s        wip.Status
		peer     string
		outdated bool
	}{
		{"in sync", wip.Status{Role: wip.Primary, PeerState: wip.PeerInSync}, "in-sync", false},
		{"a snapshot under way", wip.Status{Role: wip.Primary, PeerState: wip.PeerSnapshot, PeerSnapshotPercent: 41.6}, "snapshot 42%", false},
		{"a snapshot before its first chunk", wip.Status{Role: wip.Primary, PeerState: wip.PeerSnapshot}, "snapshot", false},
		{"gone on alone, the peer away", wip.Status{Role: wip.Primary, PeerState: wip.PeerDisconnected, PeerOutdated: true}, "outdated", true},
		{"gone on alone, the peer catching up", wip.Status{Role: wip.Primary, PeerState: wip.PeerCatchingUp, PeerOutdated: true}, "outdated", true},
		{"gone on alone, the peer resynced", wip.Status{Role: wip.Primary, PeerState: wip.PeerSnapshot, PeerOutdated: true, PeerSnapshotPercent: 7}, "outdated (snapshot 7%)", true},
		{"gone on alone, the peer in sync again", wip.Status{Role: wip.Primary, PeerState: wip.PeerInSync, PeerOutdated: true}, "in-sync", false},
		{"a secondary", wip.Status{Role: wip.Secondary, PeerState: wip.PeerDisconnected, PeerOutdated: true}, "disconnected", false},
	} {
		_, rs := replicationView(tc.s, "sync")
		if rs.PeerState != tc.peer || rs.PeerOutdated != tc.outdated || rs.Mode != "sync" {
			t.Errorf("%s: peer %q, outdated %t, mode %q; want %q, %t, sync", tc.name, rs.PeerState, rs.PeerOutdated, rs.Mode, tc.peer, tc.outdated)
		}
	}
}
