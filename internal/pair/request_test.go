package pair

import (
	"strings"
	"testing"
	"time"
)

// pairedSim is two nodes on the default profile, a second after boot: a
// active, b passive and in sync.
func pairedSim() (*sim, *simNode, *simNode) {
	tm, _ := Profile("default")
	s := newSim(Config{Timing: tm})
	a, b := s.nodes[0], s.nodes[1]
	s.start(a)
	s.start(b)
	s.run(s.now.Add(time.Second))
	return s, a, b
}

// TestActiveAnswersARequestOnce: the active answers a passive peer's
// switchover request (Advert.WantActive) once, by the same rules as its own
// switchover. A request it cannot serve yet waits up to the grace (half of
// switchover-timeout) for switchoverBlocked to allow it; then it is
// refused with switchover-failed naming the reason, and not answered
// again while it stands (the heartbeats carry it every interval); a new
// request (the bit dropped, then set again) is answered again. The
// scenario scripts cannot reach the refusal: the requesting passive checks
// the same conditions first, so only a race between the two views leads
// there. Forged adverts play it.
func TestActiveAnswersARequestOnce(t *testing.T) {
	s, a, b := pairedSim()
	if st := a.m.Status(); st.Role != RoleActive || st.Substate != "paired" {
		t.Fatalf("a after boot: %s/%s", st.Role, st.Substate)
	}
	// From here on only forged adverts of b count (their sequence numbers
	// are above b's own); b's heartbeats still keep it alive.
	seq := uint64(1) << 40
	send := func(want, outdated bool) []string {
		t.Helper()
		seq++
		adv := b.advert
		adv.WantActive, adv.Outdated = want, outdated
		s.log = nil
		s.deliver(a, PeerAlive{Path: "ha1", Seq: seq, Advert: adv})
		s.run(s.now.Add(10 * time.Millisecond))
		var out []string
		for _, l := range s.log {
			if strings.Contains(l, " a: ") {
				out = append(out, l)
			}
		}
		return out
	}
	has := func(lines []string, sub string) bool {
		for _, l := range lines {
			if strings.Contains(l, sub) {
				return true
			}
		}
		return false
	}

	// Blocked: not refused at once (the peer may be a few ms ahead of
	// this node's view), but after the grace.
	if got := send(true, true); len(got) != 0 {
		t.Fatalf("a blocked request was answered at once: %q", got)
	}
	s.log = nil
	s.run(s.now.Add(a.m.askGrace()))
	if !has(s.log, "a: raise-alarm switchover-failed: the peer asked for a switchover, refused after 30s: the peer's data is outdated (I5)") {
		t.Fatalf("a refusal after the grace: want switchover-failed naming the reason, got %q", s.log)
	}
	if has(s.log, "stop-runtime") || a.m.Status().Role != RoleActive {
		t.Fatalf("a refused request paused the runtime: %q", s.log)
	}
	if !a.m.Advert().Refused {
		t.Fatal("a does not advertise the refusal: the peer would wait out its timeout")
	}
	// The same request, heard again and now possible: not answered twice.
	if got := send(true, false); has(got, "stop-runtime") {
		t.Fatalf("the standing request was answered twice: %q", got)
	}
	// Withdrawn, then asked again while blocked, and unblocked within the
	// grace: a switches over then.
	if got := send(false, false); has(got, "stop-runtime") {
		t.Fatalf("no request, yet: %q", got)
	}
	if a.m.Advert().Refused {
		t.Fatal("a still advertises a refusal after the request was withdrawn")
	}
	if got := send(true, true); len(got) != 0 {
		t.Fatalf("a blocked request was answered at once: %q", got)
	}
	if got := send(true, false); !has(got, "stop-runtime graceful") {
		t.Fatalf("a request that became possible was not answered with a switchover: %q", got)
	}
	if st := a.m.Status(); st.Substate != "handing-over" || !strings.Contains(st.SubReason, "handing over to the peer: ") || st.SubReason == st.Reason {
		t.Errorf("a: %s/%s (%q, role's reason %q), want active/handing-over, saying why", st.Role, st.Substate, st.SubReason, st.Reason)
	}
	if st := b.m.Status(); st.Substate != "in-sync" || st.SubReason != "the WIP store holds every commit the active acknowledged" {
		t.Errorf("b: %s/%s (%q), want passive/in-sync, saying what it means", st.Role, st.Substate, st.SubReason)
	}
}

// TestPassiveWithdrawsARefusedRequest: the active's Refused bit ends the
// passive's request at once (not after switchover-timeout) with
// switchover-failed, and a new request waits until the bit is gone.
// Forged adverts of a play the refusal.
func TestPassiveWithdrawsARefusedRequest(t *testing.T) {
	s, a, b := pairedSim()
	s.deliver(b, Admin{Cmd: AdminSwitchover})
	if !b.m.Status().SwitchoverRequested {
		t.Fatalf("b's request not standing: %+v", b.m.Status())
	}
	adv := a.advert
	adv.Refused = true
	s.deliver(b, PeerAlive{Path: "ha1", Seq: 1 << 40, Advert: adv})
	st := b.m.Status()
	if st.SwitchoverRequested {
		t.Fatal("b still asks after the active refused")
	}
	if got := st.Alarms["switchover-failed"]; !strings.Contains(got, "switchover request withdrawn: the active refused it") {
		t.Fatalf("b's alarm %q, want the refusal", got)
	}
	if _, err := b.m.Step(s.now, Admin{Cmd: AdminSwitchover}); err == nil || !strings.Contains(err.Error(), "still shows its refusal") {
		t.Fatalf("a new request while the refusal shows: %v", err)
	}
}
