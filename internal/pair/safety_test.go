package pair

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"
)

// TestSafetyRandom drives the simulated pair through thousands of random
// fault sequences (crash, restart, freeze/thaw, path cuts in either direction,
// gateway and LAN loss, clock jumps, switchovers, maintenance, stops) and
// checks, at every instant:
//   - two nodes act as active at once for no longer than one network delay
//     (the first heartbeat in the higher epoch reaching the old active);
//   - a node's persisted epoch never decreases (I1);
//   - a claim and a primary replication follow the persisted active epoch
//     (I1, I3), and the runtime starts only with the VIP held.
//
// The LAN split without a witness is left out: it is the documented limit.
func TestSafetyRandom(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 150
	}
	for seed := int64(1); seed <= int64(n); seed++ {
		if msg := safetyRun(seed, 25); msg != "" {
			t.Fatalf("seed %d:\n%s", seed, msg)
		}
	}
}

// safetyVerbose makes safetyRun log (for replaying one seed while debugging).
var safetyVerbose = false

func safetyRun(seed int64, ops int) string {
	rng := rand.New(rand.NewSource(seed))
	base := Config{HealthFailover: rng.Intn(2) == 0, Witness: rng.Intn(3) == 0, Watchdog: rng.Intn(2) == 0}
	prof := "default"
	if rng.Intn(2) == 0 {
		prof = "fast"
	}
	base.Timing, _ = Profile(prof)
	if base.HealthFailover {
		// A short cooldown so health switchovers happen inside a run.
		base.Timing.HealthHold = base.Timing.DeadAfter
		base.Timing.HealthCooldown = 2 * base.Timing.DeadAfter
	}
	s := newSim(base)
	s.quiet = !safetyVerbose
	s.rng = rng.Intn
	if rng.Intn(2) == 0 {
		// A loaded machine: delivery jitter (which reorders heartbeats across
		// paths) and loss on one path.
		s.rand = rng
		s.jitter = time.Duration(rng.Int63n(int64(3 * base.Timing.Interval)))
		s.loss = map[string]float64{paths[rng.Intn(3)]: 0.05}
	}
	// One network delay: the first heartbeat in the higher epoch reaching the
	// old active (the promotion and its heartbeat leave in the same instant).
	s.dualBound = s.jitter + 2*time.Millisecond
	var script []string
	do := func(f string, a ...any) {
		script = append(script, fmt.Sprintf(f, a...))
	}
	s.start(s.nodes[0])
	s.start(s.nodes[1])
	iv := base.Timing.Interval
	for i := 0; i < ops; i++ {
		n := s.nodes[rng.Intn(2)]
		switch rng.Intn(16) {
		case 0:
			if n.up {
				s.crash(n)
				do("crash %s", n.name)
			}
		case 1:
			if !n.up {
				s.start(n)
				do("start %s", n.name)
			}
		case 2:
			if n.up && !n.froze {
				s.freeze(n)
				do("freeze %s", n.name)
			}
		case 3:
			if n.froze {
				s.thaw(n)
				do("thaw %s", n.name)
			}
		case 4, 5:
			p := paths[rng.Intn(3)]
			dir := []string{"a>b", "b>a"}[rng.Intn(2)]
			s.cut[p+":"+dir] = !s.cut[p+":"+dir]
			do("toggle %s %s -> cut=%t", p, dir, s.cut[p+":"+dir])
		case 6:
			n.gwOK = !n.gwOK
			do("gateway %s %t", n.name, n.gwOK)
		case 7:
			n.lanOK = !n.lanOK
			s.deliver(n, LANLink{Up: n.lanOK})
			do("lan %s %t", n.name, n.lanOK)
		case 8:
			s.deliver(n, Admin{Cmd: AdminSwitchover})
			do("switchover %s", n.name)
		case 9:
			cmd := AdminMaintenanceOn
			if rng.Intn(2) == 0 {
				cmd = AdminMaintenanceOff
			}
			s.deliver(n, Admin{Cmd: cmd})
			do("%s %s", cmd, n.name)
		case 10:
			if n.up && !n.froze {
				d := time.Duration(rng.Int63n(int64(20 * iv)))
				s.deliver(n, ClockJump{Delta: d})
				do("jump %s %v", n.name, d)
			}
		case 11:
			s.deliver(n, Stop{})
			do("stop %s", n.name)
		case 12:
			if base.Witness {
				s.lanSplit = !s.lanSplit
				do("lan-split %t", s.lanSplit)
			}
		case 13:
			for k := range s.cut {
				delete(s.cut, k)
			}
			s.lanSplit = false
			for _, n := range s.nodes {
				n.gwOK = true
				if !n.lanOK {
					n.lanOK = true
					s.deliver(n, LANLink{Up: true})
				}
				if n.froze {
					s.thaw(n)
				}
			}
			do("heal everything")
		case 14, 15:
			// Isolate a node: every heartbeat path cut, and its LAN or gateway lost.
			for _, p := range paths {
				s.cut[p+":a>b"], s.cut[p+":b>a"] = true, true
			}
			if rng.Intn(2) == 0 {
				n.lanOK = false
				s.deliver(n, LANLink{Up: false})
			} else {
				n.gwOK = false
			}
			do("isolate %s (lan=%t gw=%t)", n.name, n.lanOK, n.gwOK)
		}
		d := time.Duration(rng.Int63n(int64(15 * iv)))
		s.run(s.now.Add(d))
		do("run %v", d)
		if len(s.violations) > 0 {
			if safetyVerbose {
				script = append(script, s.log...)
			}
			return fmt.Sprintf("profile %s health=%t witness=%t jitter=%v loss=%v\n%s\n%s", prof, base.HealthFailover, base.Witness, s.jitter, s.loss,
				strings.Join(script, "\n"), strings.Join(s.violations, "\n"))
		}
	}
	return ""
}

// TestNoSpuriousTakeoverFastUnderLoss: the fast profile with 5 % loss on HA
// link 1 and up to 30 ms of delivery jitter on every path (a loaded machine's
// scheduling delay) for two simulated minutes: the role never moves. This is
// where keepalived at a 10 ms advert failed in our lab (ARCHITECTURE.md 9).
func TestNoSpuriousTakeoverFastUnderLoss(t *testing.T) {
	tm, _ := Profile("fast")
	seeds := 5
	if testing.Short() {
		seeds = 1
	}
	for seed := int64(1); seed <= int64(seeds); seed++ {
		rng := rand.New(rand.NewSource(seed))
		s := newSim(Config{Timing: tm})
		s.quiet = true
		s.rng, s.rand = rng.Intn, rng
		s.loss = map[string]float64{"ha1": 0.05}
		s.jitter = 30 * time.Millisecond
		claims := 0
		s.onClaim = func(*simNode) { claims++ }
		s.start(s.nodes[0])
		s.start(s.nodes[1])
		s.run(s.now.Add(2 * time.Minute))
		if claims != 1 || len(s.violations) > 0 {
			t.Errorf("seed %d: %d claims (want the first only), violations %v", seed, claims, s.violations)
		}
	}
}
