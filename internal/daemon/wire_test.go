package daemon

import (
	"net"
	"net/netip"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/config"
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
			s, err := openStore(cfg, key, 1, clock.Real(), zap.New(core), nil, nil)
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

// closedAddr is a loopback address:port nothing listens on (a listener's,
// closed): the store's dials there are refused at once.
func closedAddr(t *testing.T) config.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().(*net.TCPAddr).AddrPort()
	_ = ln.Close()
	return config.AddrPort{AddrPort: a}
}
