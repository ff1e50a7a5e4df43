package pairlab

import (
	"strings"
	"testing"
	"time"
)

func ms(n int) int64 { return int64(n) * int64(time.Millisecond) }

func TestAnalyze(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(n int) int64 { return base.UnixNano() + ms(n) }
	probes := []Probe{
		{Seq: 1, Sent: at(0), Done: at(1), OK: true, Node: "a", Epoch: 1},
		{Seq: 2, Sent: at(5), Done: at(6), OK: true, Node: "a", Epoch: 1}, // before the failure
		{Seq: 3, Sent: at(10), Done: at(900), Err: "timeout"},
		{Seq: 4, Sent: at(15), Done: at(330), OK: true, Node: "a", Epoch: 1},  // old node, after claim at 300
		{Seq: 5, Sent: at(320), Done: at(321), OK: true, Node: "b", Epoch: 2}, // first answer of b
		{Seq: 6, Sent: at(325), Done: at(326), OK: true, Node: "b", Epoch: 2},
	}
	o, err := Analyze(probes, "a", base.Add(8*time.Millisecond), base.Add(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if o.Outage != 313*time.Millisecond || o.NewNode != "b" || o.NewEpoch != 2 {
		t.Errorf("outage = %v from %s@%d, want 313ms from b@2", o.Outage, o.NewNode, o.NewEpoch)
	}
	if o.DupVIP != 30*time.Millisecond || o.OldAfter != 1 {
		t.Errorf("dup = %v (%d answers), want 30ms (1)", o.DupVIP, o.OldAfter)
	}
	if _, err := Analyze(probes[:3], "a", base, time.Time{}); err == nil {
		t.Error("no new answer: no error")
	}
}

func TestReadProbes(t *testing.T) {
	in := `{"seq":1,"sent":1,"done":2,"ok":true,"node":"a","epoch":1}
{"seq":2,"sent":3,"done":4,"ok":false,"err":"refused"}
{"seq":3,"sent":5,"do`
	ps, err := ReadProbes(strings.NewReader(in))
	if err != nil || len(ps) != 2 || ps[1].Err != "refused" {
		t.Fatalf("ReadProbes = %+v, %v", ps, err)
	}
	if _, err := ReadProbes(strings.NewReader("garbage\n{}\n")); err == nil {
		t.Error("a bad line in the middle was accepted")
	}
}

func TestQuantile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.9: 90 * time.Millisecond, 0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond} {
		if got := Quantile(ds, q); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if Quantile(nil, 0.5) != 0 {
		t.Error("empty quantile")
	}
}
