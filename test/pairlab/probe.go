package pairlab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"
)

// Probe is one line of vipprobe's output.
type Probe struct {
	Seq   uint64 `json:"seq"`
	Sent  int64  `json:"sent"` // Unix ns
	Done  int64  `json:"done"` // Unix ns
	OK    bool   `json:"ok"`
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
	Err   string `json:"err"`
}

// SentAt and DoneAt return the probe's times.
func (p Probe) SentAt() time.Time { return time.Unix(0, p.Sent) }

// DoneAt is when the probe's answer (or failure) arrived.
func (p Probe) DoneAt() time.Time { return time.Unix(0, p.Done) }

// ReadProbes parses vipprobe's output; a truncated last line (the prober
// was killed mid-write) is ignored, any other bad line is an error.
func ReadProbes(r io.Reader) ([]Probe, error) {
	var out []Probe
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var pending error
	for n := 1; sc.Scan(); n++ {
		if pending != nil {
			return nil, pending
		}
		var p Probe
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			pending = fmt.Errorf("pairlab: probe line %d: %w", n, err)
			continue
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

// Outage is what the client saw around one failover.
type Outage struct {
	// Outage runs from the failure to the first answer of the new active.
	Outage time.Duration
	// DupVIP is how long after the new active's claim the client still
	// reached the old node (0 if never).
	DupVIP time.Duration
	// OldAfter counts answers from the old node after the claim.
	OldAfter int
	// NewNode and NewEpoch identify the first answer after the failure
	// from a node other than old.
	NewNode  string
	NewEpoch uint64
}

// Analyze measures one failover in probes: the failure happened at fail,
// the old active was old, the new active claimed the VIP at claim (zero if
// unknown). It fails if no other node answered after the failure.
func Analyze(probes []Probe, old string, fail, claim time.Time) (Outage, error) {
	ps := append([]Probe(nil), probes...)
	sort.Slice(ps, func(i, j int) bool { return ps[i].Done < ps[j].Done })
	var o Outage
	found := false
	for _, p := range ps {
		if !p.OK || p.Node == old || p.DoneAt().Before(fail) {
			continue
		}
		o.Outage = p.DoneAt().Sub(fail)
		o.NewNode, o.NewEpoch = p.Node, p.Epoch
		found = true
		break
	}
	if !found {
		return o, fmt.Errorf("pairlab: no answer from a node other than %s after the failure at %s", old, fail.Format(time.RFC3339Nano))
	}
	if !claim.IsZero() {
		for _, p := range ps {
			if p.OK && p.Node == old && p.DoneAt().After(claim) {
				o.OldAfter++
				if d := p.DoneAt().Sub(claim); d > o.DupVIP {
					o.DupVIP = d
				}
			}
		}
	}
	return o, nil
}

// Quantile returns the q-quantile (0..1) of ds by the nearest-rank method.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(q*float64(len(s))+0.999999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(s) {
		rank = len(s) - 1
	}
	return s[rank]
}
