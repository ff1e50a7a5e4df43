package vip

import (
	"math"
	"time"
)

// Schedule says when a claimed group is announced: once at claim (and at
// every Announce), Repeats more times Interval apart, then every Refresh
// for as long as the group is owned.
//
// Zero fields take the defaults (DefaultRepeats, DefaultInterval, no
// refresh); Repeats = -1 sends the first announcement only.
//
// Why repeat at all when one gratuitous ARP is enough for Linux: a frame can
// be lost, a switch port can still be learning, and hosts that do not treat
// gratuitous ARP specially (older kernels, some appliances) ignore an update
// that arrives within their neighbour "locktime" (Linux: 1 s) of the last
// one. Repeats spaced by at least that long get through.
type Schedule struct {
	Repeats  int
	Interval time.Duration
	Refresh  time.Duration
}

// normalized returns s with its defaults applied.
func (s Schedule) normalized() Schedule {
	switch {
	case s.Repeats == 0:
		s.Repeats = DefaultRepeats
	case s.Repeats < 0:
		s.Repeats = 0
	}
	if s.Interval == 0 {
		s.Interval = DefaultInterval
	}
	if s.Refresh < 0 {
		s.Refresh = 0
	}
	return s
}

// At returns when announcement n is due, as an offset from announcement 0
// (sent at once), and false if the schedule has no announcement n. It is a
// pure function: the Manager follows it on its clock, and tests check it
// without one.
func (s Schedule) At(n int) (time.Duration, bool) {
	s = s.normalized()
	if n < 0 {
		return 0, false
	}
	if n <= s.Repeats {
		return time.Duration(n) * s.Interval, true
	}
	if s.Refresh <= 0 {
		return 0, false
	}
	base := time.Duration(s.Repeats) * s.Interval
	k := int64(n - s.Repeats)
	// A refreshing schedule never ends; past ~292 years the offset would
	// overflow, so it saturates instead of wrapping into the past.
	if k > (math.MaxInt64-int64(base))/int64(s.Refresh) {
		return time.Duration(math.MaxInt64), true
	}
	return base + time.Duration(k)*s.Refresh, true
}
