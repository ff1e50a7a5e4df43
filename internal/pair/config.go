package pair

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// ErrConfig is wrapped by every configuration error; the message names the field.
var ErrConfig = errors.New("pair: config")

// Timing holds the durations the machine decides with. The relations between
// them are what make the pair safe; Validate checks each one and names the field.
type Timing struct {
	// Interval is the heartbeat period on every path.
	Interval time.Duration
	// DeadAfter: the peer is silent when nothing valid arrived on any path for this long.
	// The passive's earliest promotion after the active's last heartbeat it received.
	DeadAfter time.Duration
	// SuspectAfter: silence after which a probe of the tie-breaker starts, so that
	// its answer is known by FenceAfter (active) and DeadAfter (passive).
	SuspectAfter time.Duration
	// ProbeTimeout bounds a tie-breaker probe; the daemon reports every probe
	// (reachable or not) within it.
	ProbeTimeout time.Duration
	// FenceAfter: an active that has heard nothing for this long and holds no fresh
	// reachable tie-breaker answer stops its runtime and releases the VIP.
	FenceAfter time.Duration
	// FenceMargin is the time the daemon may need to carry out a fence (stop the
	// runtime, delete the VIP) plus scheduling delay.
	FenceMargin time.Duration
	// StartupWait: after boot a node that has never seen the peer stays passive
	// this long (corosync's wait_for_all, bounded).
	StartupWait time.Duration
	// HealthHold: the active's LAN must stay down this long before a health
	// switchover (hysteresis against a flapping link).
	HealthHold time.Duration
	// HealthCooldown: no second health switchover within this time of the last one
	// (no ping-pong when both sides flap).
	HealthCooldown time.Duration
	// ProbeEvery is the period of the background tie-breaker probe that keeps the
	// LAN health bit current.
	ProbeEvery time.Duration
	// SwitchoverTimeout bounds a planned switchover (pause, drain, handover);
	// past it the handing-over node takes the role back.
	SwitchoverTimeout time.Duration
}

// Profiles: the two named timing sets.
//
// default: interval 100 ms, dead-after 400 ms: host loss is detected in
// 300-400 ms (dead-after minus the heartbeat phase), the passive promotes at
// dead-after, so p50 < 500 ms and p99 < 1 s hold with room for the claim.
// Four missed heartbeats on three paths is keepalived VRRPv3's 0.1 s class.
//
// fast: interval 10 ms, dead-after 100 ms: p99 < 150 ms. Dead-after is ten
// intervals, not three: keepalived at 10 ms with 3 x advert took over
// spuriously under CPU load in our lab; a 100 ms scheduling stall is rare,
// a 30 ms one is not.
var profiles = map[string]Timing{
	"default": {
		Interval:          100 * time.Millisecond,
		DeadAfter:         400 * time.Millisecond,
		SuspectAfter:      120 * time.Millisecond,
		ProbeTimeout:      80 * time.Millisecond,
		FenceAfter:        200 * time.Millisecond,
		FenceMargin:       50 * time.Millisecond,
		StartupWait:       10 * time.Second,
		HealthHold:        time.Second,
		HealthCooldown:    60 * time.Second,
		ProbeEvery:        time.Second,
		SwitchoverTimeout: 60 * time.Second,
	},
	"fast": {
		Interval:          10 * time.Millisecond,
		DeadAfter:         100 * time.Millisecond,
		SuspectAfter:      20 * time.Millisecond,
		ProbeTimeout:      40 * time.Millisecond,
		FenceAfter:        60 * time.Millisecond,
		FenceMargin:       20 * time.Millisecond,
		StartupWait:       5 * time.Second,
		HealthHold:        300 * time.Millisecond,
		HealthCooldown:    30 * time.Second,
		ProbeEvery:        200 * time.Millisecond,
		SwitchoverTimeout: 60 * time.Second,
	},
}

// MinInterval is the shortest heartbeat interval accepted (the fast profile's).
const MinInterval = 10 * time.Millisecond

// Profile returns a named timing profile ("default" or "fast").
func Profile(name string) (Timing, error) {
	t, ok := profiles[name]
	if !ok {
		return Timing{}, fmt.Errorf("%w: timing.profile: %q: want default or fast", ErrConfig, name)
	}
	return t, nil
}

// timingFields maps the YAML names (config's timing mapping) to the fields.
func (t *Timing) fields() map[string]*time.Duration {
	return map[string]*time.Duration{
		"interval":           &t.Interval,
		"dead-after":         &t.DeadAfter,
		"suspect-after":      &t.SuspectAfter,
		"probe-timeout":      &t.ProbeTimeout,
		"fence-after":        &t.FenceAfter,
		"fence-margin":       &t.FenceMargin,
		"startup-wait":       &t.StartupWait,
		"health-hold":        &t.HealthHold,
		"health-cooldown":    &t.HealthCooldown,
		"probe-every":        &t.ProbeEvery,
		"switchover-timeout": &t.SwitchoverTimeout,
	}
}

// Set overrides one value by its YAML name (config.Timing's Extra map, or
// interval/dead-after/startup-wait). Unknown names are an error naming them.
func (t *Timing) Set(name string, d time.Duration) error {
	p, ok := t.fields()[name]
	if !ok {
		names := make([]string, 0, 11)
		for n := range t.fields() {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("%w: timing.%s: unknown setting (want one of %s)", ErrConfig, name, strings.Join(names, ", "))
	}
	*p = d
	return nil
}

// Validate checks every value and the relations that make the pair safe:
//
//	dead-after > 3 x interval                          (three lost heartbeats are no failure)
//	suspect-after + probe-timeout <= fence-after       (a healthy active has its answer before it must fence)
//	suspect-after + fence-after + fence-margin <= dead-after (the self-fence is done before the passive may promote)
//
// The last one is the fencing guarantee. Let t0 be the passive's last
// hearing of the active. Its heartbeats say HearPeer until t0 +
// suspect-after, and the active's lease counts only those, so the active is
// fenced by t0 + suspect-after + fence-after + fence-margin, while the passive
// promotes no earlier than t0 + dead-after. This covers a symmetric cut (the
// active then stops hearing the passive within one interval <= suspect-after)
// and one-way loss alike.
func (t Timing) Validate() error {
	var errs []error
	bad := func(field, f string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: timing.%s: %s", ErrConfig, field, fmt.Sprintf(f, a...)))
	}
	for _, name := range []string{"interval", "dead-after", "suspect-after", "probe-timeout", "fence-after", "fence-margin", "startup-wait", "health-hold", "health-cooldown", "probe-every", "switchover-timeout"} {
		if d := *t.fields()[name]; d <= 0 {
			bad(name, "%v: must be positive", d)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if t.Interval < MinInterval {
		bad("interval", "%v: must be at least %v", t.Interval, MinInterval)
	}
	if t.DeadAfter <= 3*t.Interval {
		bad("dead-after", "%v: must exceed 3 x interval (%v)", t.DeadAfter, 3*t.Interval)
	}
	if t.SuspectAfter < t.Interval {
		bad("suspect-after", "%v: must be at least interval (%v): one late heartbeat is no suspicion", t.SuspectAfter, t.Interval)
	}
	if t.SuspectAfter+t.ProbeTimeout > t.FenceAfter {
		bad("fence-after", "%v: must be at least suspect-after + probe-timeout (%v) so a healthy active learns its tie-breaker answer before it must fence", t.FenceAfter, t.SuspectAfter+t.ProbeTimeout)
	}
	if t.SuspectAfter+t.FenceAfter+t.FenceMargin > t.DeadAfter {
		bad("fence-after", "%v: suspect-after + fence-after + fence-margin (%v) must not exceed dead-after (%v): the active must be fenced before the passive may promote", t.FenceAfter, t.SuspectAfter+t.FenceAfter+t.FenceMargin, t.DeadAfter)
	}
	if t.StartupWait < t.DeadAfter {
		bad("startup-wait", "%v: must be at least dead-after (%v)", t.StartupWait, t.DeadAfter)
	}
	if t.HealthHold < t.DeadAfter {
		bad("health-hold", "%v: must be at least dead-after (%v): a LAN blip shorter than a failure detection is no reason to move", t.HealthHold, t.DeadAfter)
	}
	if t.HealthCooldown < 2*t.HealthHold {
		bad("health-cooldown", "%v: must be at least 2 x health-hold (%v)", t.HealthCooldown, 2*t.HealthHold)
	}
	return errors.Join(errs...)
}

// Config is what the machine needs to know about its node and pair.
type Config struct {
	// NodeID is 1 or 2. Node 1 promotes into odd epochs, node 2 into even ones.
	NodeID uint8
	Timing Timing
	// Witness: promotion and the active's lease also need the witness's grant.
	Witness bool
	// Watchdog: the active kicks /dev/watchdog while its lease holds.
	Watchdog bool
	// HealthFailover enables the switchover when the active loses its data LAN
	// while the passive has it.
	HealthFailover bool
}

// Validate checks the node id and the timing.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID != 1 && c.NodeID != 2 {
		errs = append(errs, fmt.Errorf("%w: node-id: %d: want 1 or 2", ErrConfig, c.NodeID))
	}
	if err := c.Timing.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
