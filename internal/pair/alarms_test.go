package pair

import (
	"os"
	"regexp"
	"slices"
	"testing"
)

// TestEveryAlarmHasAKind holds the alarm tables to the code: every alarm
// this package raises is either a condition alarm (and the machine has a
// place that clears it) or an event alarm (which the operator acknowledges).
// An alarm added without a kind could never be cleared on a running node.
func TestEveryAlarmHasAKind(t *testing.T) {
	src, err := os.ReadFile("machine.go")
	if err != nil {
		t.Fatal(err)
	}
	ids := func(call string) map[string]bool {
		out := map[string]bool{}
		for _, m := range regexp.MustCompile(`m\.`+call+`\("([a-z-]+:?)`).FindAllSubmatch(src, -1) {
			out[string(m[1])] = true
		}
		return out
	}
	raised, cleared := ids("raise"), ids("clear")
	if len(raised) < 10 {
		t.Fatalf("found %d raised alarms in machine.go: the pattern no longer matches the code", len(raised))
	}
	for id := range raised {
		_, cond := conditionAlarms[id]
		event := slices.Contains(eventAlarms, id)
		switch {
		case cond && event:
			t.Errorf("alarm %q is in both tables", id)
		case !cond && !event:
			t.Errorf("alarm %q has no kind: add it to conditionAlarms or eventAlarms", id)
		case cond && !cleared[id]:
			t.Errorf("condition alarm %q is never cleared by the machine", id)
		case event != AlarmLatched(id):
			t.Errorf("AlarmLatched(%q) = %t", id, !event)
		}
	}
	for id := range conditionAlarms {
		if !raised[id] {
			t.Errorf("condition alarm %q is never raised", id)
		}
	}
	for _, id := range eventAlarms {
		if !raised[id] {
			t.Errorf("event alarm %q is never raised", id)
		}
	}
	for id, want := range map[string]bool{
		"forced": true, "action-failed:claim-vip": true, "path-down:ha1": false,
		"outdated": false, "wip-quarantine": false, "": false,
	} {
		if got := AlarmLatched(id); got != want {
			t.Errorf("AlarmLatched(%q) = %t, want %t", id, got, want)
		}
	}
}
