package latency

import (
	"testing"
	"time"
)

func TestHistogramBucketsAndQuantiles(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 {
		t.Errorf("empty histogram: quantile %v, want 0", h.Quantile(0.99))
	}
	// Bounds: 50µs, 100µs, 200µs, ... 6.5536s.
	for _, tc := range []struct {
		d      time.Duration
		bucket int
	}{
		{-time.Millisecond, 0}, // a clock step back counts as 0
		{0, 0},
		{50 * time.Microsecond, 0}, // bounds are inclusive
		{51 * time.Microsecond, 1},
		{150 * time.Microsecond, 2},
		{3 * time.Millisecond, 6}, // 3.2 ms
		{6553600 * time.Microsecond, Buckets - 2},
		{7 * time.Second, Buckets - 1},
	} {
		var one Histogram
		one.Observe(tc.d)
		if one.Counts[tc.bucket] != 1 || one.Count != 1 {
			t.Errorf("%v went to %v, want bucket %d", tc.d, one.Counts, tc.bucket)
		}
	}
	if Bounds[len(Bounds)-1] != 6553600*time.Microsecond {
		t.Errorf("last bound %v", Bounds[len(Bounds)-1])
	}
	// 90 fast, 9 medium, 1 slow.
	for i := 0; i < 90; i++ {
		h.Observe(40 * time.Microsecond)
	}
	for i := 0; i < 9; i++ {
		h.Observe(3 * time.Millisecond)
	}
	h.Observe(time.Second)
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 50 * time.Microsecond},
		{0.9, 50 * time.Microsecond},
		{0.91, 3200 * time.Microsecond},
		{0.99, 3200 * time.Microsecond},
		{0.999, 1638400 * time.Microsecond},
		{1, 1638400 * time.Microsecond},
	} {
		if got := h.Quantile(tc.q); got != tc.want {
			t.Errorf("quantile %v = %v, want %v", tc.q, got, tc.want)
		}
	}
	if h.Count != 100 || h.Sum != 90*40*time.Microsecond+9*3*time.Millisecond+time.Second {
		t.Errorf("count %d sum %v", h.Count, h.Sum)
	}
	h.Observe(time.Minute)
	if got := h.Quantile(1); got != -1 {
		t.Errorf("quantile above the last bound = %v, want -1", got)
	}
}
