package fileconn

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
)

func TestNewStarterParams(t *testing.T) {
	c, dir := open(t, connectors.Settings{"pattern": "*.csv", "settle": "5s", "interval": "3s"}, nil)
	st, err := c.NewStarter(OpPoll, nil)
	if p, ok := st.(*Poller); err != nil || !ok || p.glob != "*.csv" || p.doneDir != filepath.Join(dir, ".done") || p.settle != 5*time.Second || p.interval != 3*time.Second {
		t.Fatalf("settings as defaults: %#v %v", st, err)
	}
	st, err = c.NewStarter(OpPoll, map[string]any{"pattern": "*.json", "done-dir": "/var/tmp/x", "settle": "0s", "interval": "100ms"})
	if p, ok := st.(*Poller); err != nil || !ok || p.glob != "*.json" || p.doneDir != "/var/tmp/x" || p.settle != 0 || p.interval != 100*time.Millisecond {
		t.Fatalf("params: %#v %v", st, err)
	}
	prefix := `fileconn: file starter "poll": param `
	for _, tc := range []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{"pattern": "[a-"}, `"pattern": "[a-" is not a glob`},
		{map[string]any{"pattern": 1}, `"pattern": a string is required, got number`},
		{map[string]any{"done-dir": ""}, `"done-dir": must not be empty`},
		{map[string]any{"settle": "-1s"}, `"settle": -1s is below the minimum 0s`},
		{map[string]any{"settle": 2}, `"settle": a duration string`},
		{map[string]any{"interval": "0s"}, `"interval": 0s is below the minimum 1ms`},
		{map[string]any{"dir": "/tmp"}, `"dir": unknown (poll takes done-dir, interval, pattern, settle)`},
	} {
		_, err := c.NewStarter(OpPoll, tc.params)
		var pe *connectors.ParamError
		if !errors.As(err, &pe) || !connectors.IsPermanent(err) || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %s%s", tc.params, err, prefix, tc.want)
		}
	}
	_, err = c.NewStarter("watch", nil)
	if !errors.Is(err, connectors.ErrUnknownOperation) || !strings.Contains(err.Error(), `starter "watch" (file starters: poll)`) {
		t.Errorf("unknown operation: %v", err)
	}
}

// The params reach the poller: only files matching the param pattern
// start jobs, settle is the param's, and files move to the param done-dir.
func TestNewStarterPollUsesParams(t *testing.T) {
	// Files look an hour old, younger than the settle setting: only the
	// settle param lets them start. The clock never advances, so the
	// poller lists the directory once.
	clk := clock.NewManual(clock.Real().Now().Add(time.Hour))
	c, dir := open(t, connectors.Settings{"settle": "2h"}, clk)
	done := filepath.Join(t.TempDir(), "done")
	for _, n := range []string{"a.csv", "b.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err := c.NewStarter(OpPoll, map[string]any{"pattern": "*.csv", "done-dir": done, "settle": "0s"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan string, 4)
	ended := make(chan error, 1)
	go func() {
		ended <- st.Run(ctx, func(_ context.Context, tr connectors.Trigger) error {
			got <- tr.Input["name"].(string)
			return nil
		})
	}()
	deadline, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	select {
	case n := <-got:
		if n != "a.csv" {
			t.Fatalf("started %s", n)
		}
	case <-deadline.Done():
		t.Fatal("no trigger")
	}
	cancel()
	if err := <-ended; err != nil {
		t.Fatal(err)
	}
	if fs := files(t, done); len(fs) != 1 || fs[0] != "a.csv" {
		t.Fatalf("done-dir holds %v", fs)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.txt")); err != nil {
		t.Fatalf("b.txt: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("extra trigger %s", <-got)
	}
}

// A relative done-dir, as a setting or a starter param, lies under dir.
func TestRelativeDoneDirIsUnderDir(t *testing.T) {
	c, dir := open(t, connectors.Settings{"done-dir": "started"}, clock.Real())
	if want := filepath.Join(dir, "started"); c.doneDir != want {
		t.Errorf("setting: done-dir %q, want %q", c.doneDir, want)
	}
	st, err := c.NewStarter(OpPoll, map[string]any{"done-dir": "picked"})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "picked"); st.(*Poller).doneDir != want {
		t.Errorf("param: done-dir %q, want %q", st.(*Poller).doneDir, want)
	}
	st, err = c.NewStarter(OpPoll, map[string]any{"done-dir": "/var/tmp/abs"})
	if err != nil || st.(*Poller).doneDir != "/var/tmp/abs" {
		t.Errorf("absolute param: %v %v", st, err)
	}
}
