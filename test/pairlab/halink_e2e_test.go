package pairlab

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/test/lab"
)

// TestE2EOneHALinkCutKeepsThePairProtected: the cable of a's HA link 1 is
// cut (no FIN reaches anyone) and jobs are started through the VIP. The
// replication session moves to HA link 2 by itself: every job is
// acknowledged, the active never goes on alone (no peer-outdated event:
// the move beats peer-ack-timeout, 1 s in the lab), the passive stays
// promotable, and when the active is then killed the passive takes over
// with every acknowledged job.
func TestE2EOneHALinkCutKeepsThePairProtected(t *testing.T) {
	e := newE2E(t)
	deployIngest(t, e, e.pair.A)
	evs, err := e.pair.A.API.Events(e.ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	if len(evs) > 0 {
		seq = evs[len(evs)-1].Seq
	}
	if _, err := e.lab.CutLink(e.ctx, lab.NodeA, "ha1"); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	acked := startIngestLoad(t, e, "h", 400, 8, time.Minute).wait(t)
	wctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	st, err := e.pair.A.WaitFor(wctx, "a's peer in sync with every commit acked", func(s api.Status) bool {
		r := s.Replication
		return r.PeerState == "in-sync" && r.PeerAckedLSN == r.CommittedLSN
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d jobs acknowledged over HA link 2 in %v; a: %+v", len(acked), time.Since(cut).Round(time.Millisecond), st.Replication)
	if ha2 := e.lab.Host(lab.NodeA).HA[1].String() + ":"; !strings.HasPrefix(st.Replication.Session, ha2) {
		t.Errorf("a's status shows the session %q, want it on HA link 2 (%s...)", st.Replication.Session, ha2)
	}
	evs, err = e.pair.A.API.Events(e.ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		t.Logf("a event at cut+%v: %s %s", ev.Time.Sub(cut).Round(time.Millisecond), ev.Kind, ev.Text)
		if ev.Kind == "replication" && strings.HasPrefix(ev.Text, "peer-outdated") {
			t.Errorf("a went on alone after HA link 1 was cut (%s): the passive did not move to HA link 2 in time", ev.Text)
		}
	}
	if sb := e.status(e.pair.B); sb.Replication.DataState != "in-sync" {
		t.Errorf("b after the move: data %q, want in-sync (promotable)", sb.Replication.DataState)
	}
	if err := e.pair.A.Crash(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.role(e.pair.B, "active", "")
	checkJobsOn(t, e, e.pair.B, acked)
}
