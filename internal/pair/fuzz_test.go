package pair

import (
	"errors"
	"testing"
	"time"
)

// FuzzStep feeds one machine an arbitrary event sequence decoded from the
// input and checks what must hold whatever the input: no panic; Step either
// errors or returns; a claim or a primary replication comes after the
// persisted active epoch in the same Ready (I1, I3); persisted epochs never
// decrease; Wake is in the future; an active never holds an epoch it does not own.
func FuzzStep(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14})
	f.Add([]byte{1, 0, 40, 1, 0, 40, 5, 1, 40, 6, 0, 40, 7, 1, 40})
	f.Add([]byte{9, 3, 1, 10, 0, 0, 11, 2, 100, 0, 0, 5, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		node := uint8(1 + len(data)%2)
		m, rd, err := New(testConfig(node), Persisted{Role: RolePassive, Epoch: uint64(len(data) % 5)}, simStart)
		if err != nil {
			t.Fatal(err)
		}
		now := simStart
		persisted := m.epoch
		check := func(rd Ready) {
			var activeEpoch uint64
			for _, a := range rd.Actions {
				switch a.Kind {
				case ActPersist:
					if a.State.Epoch < persisted {
						t.Fatalf("persisted epoch decreased %d -> %d", persisted, a.State.Epoch)
					}
					persisted = a.State.Epoch
					activeEpoch = 0
					if a.State.Role == RoleActive {
						activeEpoch = a.State.Epoch
					}
				case ActClaimVIP:
					if activeEpoch == 0 {
						t.Fatalf("claim-vip without a persisted active epoch in %v", rd.Actions)
					}
				case ActSetReplication:
					if a.Primary && a.Epoch != activeEpoch {
						t.Fatalf("primary in epoch %d, persisted %d", a.Epoch, activeEpoch)
					}
				}
			}
			if m.role == RoleActive && ownerOf(m.epoch) != node {
				t.Fatalf("node %d active in epoch %d", node, m.epoch)
			}
			if !rd.Stopped && !rd.Wake.After(now) {
				t.Fatalf("wake %v not after now %v", rd.Wake, now)
			}
		}
		check(rd)
		var seq uint64
		for i := 0; i+2 < len(data); i += 3 {
			op, x, y := data[i], data[i+1], data[i+2]
			now = now.Add(time.Duration(y) * 5 * time.Millisecond)
			peer := 3 - node
			var ev Event
			switch op % 16 {
			case 0:
				rd = m.Tick(now)
				check(rd)
				continue
			case 1:
				seq++
				ev = PeerAlive{Path: "ha1", Seq: seq, Advert: Advert{Node: peer, Epoch: uint64(x % 8), Role: Role(x >> 5 % 5),
					HearPeer: x&1 == 0, Handover: x&2 != 0, Maintenance: x&4 != 0, MaintGen: uint64(x & 3), LSN: uint64(y), LANUp: x&8 == 0, DataKnown: true}}
			case 2:
				ev = PeerSilent{}
			case 3:
				ev = PathDown{Path: "ha2"}
			case 4:
				ev = PathUp{Path: "ha2"}
			case 5:
				ev = GatewayProbe{Seq: m.seq, Reachable: x&1 == 0, VIPHeld: x&2 != 0}
			case 6:
				ev = WitnessReply{Seq: m.seq, OK: x&1 == 0}
			case 7:
				ev = LANLink{Up: x&1 == 0}
			case 8:
				ev = Replication{State: ReplState(x % 6), LSN: uint64(y), PeerInSync: x&8 != 0, PeerAckedAll: x&16 != 0}
			case 9:
				alarms := []string{"", "forced", "outdated", "path-down:ha2", "action-failed:claim-vip", "vip-conflict", "switchover-failed"}
				ev = Admin{Cmd: AdminCmd(x % 7), AckDataLoss: x&8 != 0, Alarm: alarms[int(y)%len(alarms)]}
			case 10:
				ev = VIPConflict{MAC: "02:00:00:00:00:01"}
			case 11:
				ev = ClockJump{Delta: time.Duration(int8(x)) * 20 * time.Millisecond}
			case 12:
				ev = RuntimePaused{}
			case 13:
				ev = ActionFailed{Kind: ActionKind(x % 17), Err: errors.New("x")}
			case 14:
				ev = Stop{}
			case 15:
				// An event in the past must be refused.
				if _, err := m.Step(m.now.Add(-time.Nanosecond), Stop{}); err == nil && !m.stopped {
					t.Fatal("a step in the past was accepted")
				}
				continue
			}
			rd, err := m.Step(now, ev)
			if err != nil {
				if m.stopped && !errors.Is(err, ErrStopped) {
					t.Fatalf("stopped machine: %v", err)
				}
				continue
			}
			check(rd)
			if rd.Stopped {
				return
			}
		}
	})
}
