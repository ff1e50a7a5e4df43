// Package latency is the latency histogram that the WIP store fills and
// the status API, the metrics and the CLI read.
//
// The buckets are fixed: their upper bounds (inclusive) are Bounds, 50 µs
// doubling up to 6.55 s, and a last bucket counts what lies above. Doubling
// keeps any quantile read from a histogram within a factor of two of the
// truth, across the range from a fast local fsync to a peer-ack-timeout;
// fixed bounds let histograms be added and shipped as plain counts. A
// Histogram is a value: a copy is a snapshot. It is not safe for
// concurrent use; its owner guards it.
package latency

import "time"

// Buckets is the number of buckets: one per bound, and one above them.
const Buckets = 19

// Bounds are the buckets' upper bounds.
var Bounds = func() [Buckets - 1]time.Duration {
	var b [Buckets - 1]time.Duration
	d := 50 * time.Microsecond
	for i := range b {
		b[i] = d
		d *= 2
	}
	return b
}()

// Histogram counts durations into the buckets.
type Histogram struct {
	// Counts[i] is the number of durations d with Bounds[i-1] < d <=
	// Bounds[i]; the last bucket counts those above every bound.
	Counts [Buckets]uint64 `json:"counts"`
	Count  uint64          `json:"count"`
	Sum    time.Duration   `json:"sum_ns"`
}

// Observe counts d (a negative d, from a clock stepped back, as 0).
func (h *Histogram) Observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(Bounds) && d > Bounds[i] {
		i++
	}
	h.Counts[i]++
	h.Count++
	h.Sum += d
}

// Add adds o's counts to h.
func (h *Histogram) Add(o *Histogram) {
	for i := range h.Counts {
		h.Counts[i] += o.Counts[i]
	}
	h.Count += o.Count
	h.Sum += o.Sum
}

// Quantile returns the upper bound of the bucket that holds the q-quantile
// (0 < q <= 1): the true quantile is at most that, and above half of it
// (except in the first bucket). It returns 0 for an empty histogram and -1
// when the quantile lies above the last bound.
func (h Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	rank := uint64(q*float64(h.Count) + 0.999999)
	rank = min(max(rank, 1), h.Count)
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			if i == len(Bounds) {
				return -1
			}
			return Bounds[i]
		}
	}
	return -1
}
