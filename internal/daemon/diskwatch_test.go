package daemon

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// The free-space alarm as the data directory's file system fills and is
// freed: a warning below warn, critical below crit, back to a warning,
// held within a point above warn, then cleared; one event per change of
// level, and a statfs error changes nothing.
func TestDiskWatchLevels(t *testing.T) {
	const size = 100 << 30
	var free uint64
	var statErr error
	clk := clock.NewManual(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	w := &diskWatch{dir: "/var/lib/tandem", warnPct: 15, critPct: 5, every: time.Second, clk: clk, ev: newEventLog(50), log: zap.NewNop(),
		statfs: func(string) (uint64, uint64, error) { return free, size, statErr }}
	steps := []struct {
		freePct  float64
		err      error
		severity string // "" = not raised
		text     string
	}{
		{50, nil, "", ""},
		{14.5, nil, "warning", "has 14.5 GiB free of 100.0 GiB (14.5 %, below 15 %)"},
		{10, nil, "warning", "(10.0 %, below 15 %)"},
		{4, nil, "critical", "(4.0 %, below 5 %)"},
		{4, errors.New("statfs: input/output error"), "critical", "(4.0 %, below 5 %)"},
		{6, nil, "warning", "(6.0 %, below 15 %)"},
		{15.5, nil, "warning", "(15.5 %, clears at 16 %)"}, // within a point: held
		{16.5, nil, "", ""},
		{30, nil, "", ""},
	}
	for i, s := range steps {
		free, statErr = uint64(s.freePct/100*size), s.err
		w.check()
		clk.Advance(time.Second)
		a, ok := w.ev.alarm(diskAlarm)
		switch {
		case s.severity == "" && ok:
			t.Fatalf("step %d (%.1f %% free): alarm %+v, want none", i, s.freePct, a)
		case s.severity != "" && (!ok || a.Severity != s.severity || !strings.Contains(a.Text, s.text) || a.Latched):
			t.Fatalf("step %d (%.1f %% free): alarm %+v (raised %t), want %s with %q", i, s.freePct, a, ok, s.severity, s.text)
		}
	}
	var got []string
	for _, e := range w.ev.last(50) {
		if e.Kind == "alarm" {
			got = append(got, strings.SplitN(e.Text, ":", 2)[0])
		}
	}
	want := []string{"disk-space (warning)", "disk-space (critical)", "disk-space (warning)", "disk-space cleared"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("alarm events %q, want %q", got, want)
	}
}

// The real statfs reads the file system of a directory that exists and
// fails, naming it, for one that does not.
func TestStatfsReadsTheFileSystem(t *testing.T) {
	free, size, err := statfs(t.TempDir())
	if err != nil || size == 0 || free > size {
		t.Fatalf("statfs of a temporary directory: free %d, size %d, %v", free, size, err)
	}
	if _, _, err := statfs("/nonexistent/tandem-data"); err == nil {
		t.Fatal("statfs of a missing directory: no error")
	}
}
