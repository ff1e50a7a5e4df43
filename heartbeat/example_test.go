package heartbeat_test

import (
	"context"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/heartbeat"
)

// The daemon's wiring: one Heartbeat per node, its verdicts turned into
// state-machine events, the state machine's view published back.
func Example() {
	ap := netip.MustParseAddrPort
	hb, err := heartbeat.New(heartbeat.Config{
		PairID: 1, NodeID: 1, Key: []byte("a pair key of at least 16 bytes"),
		Paths: []heartbeat.Path{
			{Name: "ha1", Local: ap("198.51.100.1:7405"), Remote: ap("198.51.100.2:7405"), Device: "ha1"},
			{Name: "ha2", Local: ap("198.51.100.5:7405"), Remote: ap("198.51.100.6:7405"), Device: "ha2"},
			{Name: "lan", Local: ap("192.0.2.11:7405"), Remote: ap("192.0.2.12:7405"), Device: "lan0"},
		},
		Interval: 100 * time.Millisecond, DeadAfter: 400 * time.Millisecond,
		Logger: zap.NewNop(),
	})
	if err != nil {
		return // on this machine the lab addresses do not exist
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go hb.Run(ctx)
	hb.Publish(heartbeat.Payload{Epoch: 7, Role: 1})
	for e := range hb.Events() {
		switch e.Kind {
		case heartbeat.PeerAlive: // feed e.Payload (epoch, role, LSNs) to the state machine
		case heartbeat.PeerSilent: // the state machine asks the tie-breaker before promoting
		case heartbeat.PathDown, heartbeat.PathUp: // alarms
		case heartbeat.PeerRestarted:
		}
	}
}
