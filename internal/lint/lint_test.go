package lint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestModuleFollowsTheRules is the lint gate for the whole module.
func TestModuleFollowsTheRules(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := ModuleRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := Check(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		t.Error(v)
	}
}

// TestCheckCatchesEachRule runs the checker on a fixture module that breaks
// every rule once, so the gate above cannot pass by checking nothing.
func TestCheckCatchesEachRule(t *testing.T) {
	vs, err := Check(filepath.Join("testdata", "bad"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vs {
		got = append(got, v.String())
	}
	want := []string{
		"nodoc: [doc] package has no doc comment",
		"wip/wip.go:5:2: [log]",
		"wip/wip.go:12:2: [time] time.Sleep",
		"wip/wip.go:13:4: [time] tm.After",
		"wip/wip.go:14:9: [time] time.Now",
		"wip/wip_test.go:5:28: [skip] t.Skip",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d violations, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("violation %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}
