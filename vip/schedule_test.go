package vip

import (
	"math"
	"testing"
	"time"
)

func TestScheduleAt(t *testing.T) {
	const s = time.Second
	none := time.Duration(-1)
	for _, tc := range []struct {
		name  string
		sched Schedule
		want  []time.Duration // At(0), At(1), ...; none = no such announcement
	}{
		{"zero value is the default: 5 repeats 1 s apart", Schedule{},
			[]time.Duration{0, s, 2 * s, 3 * s, 4 * s, 5 * s, none, none}},
		{"no repeats", Schedule{Repeats: -1}, []time.Duration{0, none}},
		{"custom", Schedule{Repeats: 2, Interval: 250 * time.Millisecond},
			[]time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, none}},
		{"refresh after the repeats", Schedule{Repeats: 2, Interval: s, Refresh: 30 * s},
			[]time.Duration{0, s, 2 * s, 32 * s, 62 * s, 92 * s}},
		{"refresh only", Schedule{Repeats: -1, Refresh: 10 * s},
			[]time.Duration{0, 10 * s, 20 * s}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for n, want := range tc.want {
				got, ok := tc.sched.At(n)
				if want == none {
					if ok {
						t.Errorf("At(%d) = %v, want no announcement", n, got)
					}
					continue
				}
				if !ok || got != want {
					t.Errorf("At(%d) = %v, %v; want %v, true", n, got, ok, want)
				}
			}
			if _, ok := tc.sched.At(-1); ok {
				t.Error("At(-1) reported an announcement")
			}
		})
	}
}

func TestScheduleAtIsMonotonicAndSaturates(t *testing.T) {
	s := Schedule{Repeats: 3, Interval: time.Second, Refresh: time.Hour}
	prev := time.Duration(-1)
	for _, n := range []int{0, 1, 2, 3, 4, 5, 1000, 1 << 20, 1 << 40, math.MaxInt} {
		got, ok := s.At(n)
		if !ok {
			t.Fatalf("At(%d): refreshing schedule ended", n)
		}
		if got < prev {
			t.Fatalf("At(%d) = %v, earlier than the announcement before it (%v): overflow", n, got, prev)
		}
		prev = got
	}
	if got, _ := s.At(math.MaxInt); got != time.Duration(math.MaxInt64) {
		t.Fatalf("At(MaxInt) = %v, want saturation", got)
	}
}
