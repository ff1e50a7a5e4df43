package fileconn

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
)

func open(t *testing.T, s connectors.Settings, clk clock.Clock) (*Conn, string) {
	t.Helper()
	dir := t.TempDir()
	if s == nil {
		s = connectors.Settings{}
	}
	s["dir"] = dir
	c, err := Open(s, Options{Name: t.Name(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return c, dir
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteReplayOneFile(t *testing.T) {
	c, dir := open(t, nil, nil)
	if err := c.Test(context.Background()); err != nil {
		t.Fatal(err)
	}
	req := connectors.Request{Operation: "write", Key: "job1/s1", Params: map[string]any{"data": map[string]any{"a": 1}}}
	r1, err := c.Invoke(context.Background(), req)
	if err != nil || r1.Replayed {
		t.Fatalf("%+v %v", r1, err)
	}
	// A repeat with other data (the job's variables cannot differ, but the
	// file must not be touched anyway).
	req.Params = map[string]any{"data": "other"}
	r2, err := c.Invoke(context.Background(), req)
	if err != nil || !r2.Replayed || r2.Values["path"] != r1.Values["path"] {
		t.Fatalf("%+v %v", r2, err)
	}
	got := files(t, dir)
	if len(got) != 1 || got[0] != KeyName("{key}.out", "job1/s1") {
		t.Fatalf("files %v", got)
	}
	b, _ := os.ReadFile(filepath.Join(dir, got[0]))
	if string(b) != `{"a":1}` {
		t.Fatalf("content %q", b)
	}
}

func TestConcurrentDuplicateWritesOneFile(t *testing.T) {
	c, dir := open(t, connectors.Settings{"name-pattern": "order-{key}.json"}, nil)
	const N = 16
	var wg sync.WaitGroup
	fresh := make(chan bool, N)
	for i := range N {
		wg.Go(func() {
			r, err := c.Invoke(context.Background(), connectors.Request{Operation: "write", Key: "dup", Params: map[string]any{"data": strings.Repeat("x", 1000+i)}})
			if err != nil {
				t.Error(err)
				return
			}
			fresh <- !r.Replayed
		})
	}
	wg.Wait()
	close(fresh)
	n := 0
	for f := range fresh {
		if f {
			n++
		}
	}
	got := files(t, dir)
	if n != 1 || len(got) != 1 || !strings.HasPrefix(got[0], "order-") {
		t.Fatalf("fresh writes %d, files %v", n, got)
	}
}

func TestPutReplacesAtomically(t *testing.T) {
	c, dir := open(t, nil, nil)
	if c.Guarantee("put") != connectors.AtLeastOnce || c.Guarantee("write") != connectors.ExactlyOnce {
		t.Fatal("guarantees")
	}
	for _, d := range []string{"v1", "v2"} {
		if _, err := c.Invoke(context.Background(), connectors.Request{Operation: "put", Key: "k", Params: map[string]any{"name": "status.txt", "data": d}}); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "status.txt")); string(b) != "v2" || len(files(t, dir)) != 1 {
		t.Fatalf("content %q files %v", b, files(t, dir))
	}
}

func TestBadInput(t *testing.T) {
	c, _ := open(t, nil, nil)
	for _, r := range []connectors.Request{
		{Operation: "write"},
		{Operation: "write", Key: "k", Params: map[string]any{"name": "fixed.txt"}},
		{Operation: "write", Key: "k", Params: map[string]any{"name": "../{key}"}},
		{Operation: "put", Key: "k"},
		{Operation: "delete", Key: "k"},
	} {
		if _, err := c.Invoke(context.Background(), r); err == nil || !connectors.IsPermanent(err) {
			t.Errorf("%+v: %v", r, err)
		}
	}
	for _, s := range []connectors.Settings{{}, {"dir": "/tmp", "name-pattern": "x"}, {"dir": "/tmp", "mode": "rw"}, {"dir": "/tmp", "settle": "x"}, {"dir": "/tmp", "pattern": "["}} {
		if _, err := Open(s, Options{}); err == nil {
			t.Errorf("Open(%v) accepted", s)
		}
	}
	c2, err := Open(connectors.Settings{"dir": "/nonexistent/tandem"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Test(context.Background()); err == nil || !connectors.IsPermanent(err) {
		t.Fatalf("Test on a missing dir: %v", err)
	}
}

func TestPollerStartsEachFileOnce(t *testing.T) {
	clk := clock.NewManual(clock.Real().Now().Add(time.Hour)) // files look settled
	c, dir := open(t, connectors.Settings{"pattern": "*.csv", "interval": "1s", "settle": "2s"}, clk)
	os.WriteFile(filepath.Join(dir, "a.csv"), []byte("1"), 0o644)
	os.WriteFile(filepath.Join(dir, "b.csv"), []byte("2"), 0o644)
	os.WriteFile(filepath.Join(dir, "ignore.txt"), []byte("x"), 0o644)

	var mu sync.Mutex
	var keys []string
	refused := false
	got := make(chan string, 10)
	run, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Poller().Run(run, func(_ context.Context, tr connectors.Trigger) error {
			mu.Lock()
			defer mu.Unlock()
			if tr.Input["name"] == "b.csv" && !refused {
				refused = true
				return errors.New("wip refused")
			}
			keys = append(keys, tr.Key)
			got <- tr.Input["data"].(string)
			return nil
		})
	}()
	if d := <-got; d != "1" {
		t.Fatalf("first %q", d)
	}
	// b.csv was refused: it stays and is started at the next listing.
	if err := clk.WaitForTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if d := <-got; d != "2" {
		t.Fatalf("second %q", d)
	}
	if err := clk.WaitForTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second) // a listing with nothing new
	if err := clk.WaitForTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !strings.HasPrefix(keys[0], "a.csv:1:") || !strings.HasPrefix(keys[1], "b.csv:1:") {
		t.Fatalf("keys %v", keys)
	}
	if got := files(t, filepath.Join(dir, ".done")); len(got) != 2 {
		t.Fatalf("done %v", got)
	}
	if got := files(t, dir); len(got) != 2 { // .done and ignore.txt
		t.Fatalf("left %v", got)
	}
}

func TestPollerLeavesUnsettledFiles(t *testing.T) {
	clk := clock.NewManual(clock.Real().Now())
	c, dir := open(t, connectors.Settings{"settle": "1h"}, clk)
	os.WriteFile(filepath.Join(dir, "young"), []byte("x"), 0o644)
	run, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan struct{}, 1)
	go func() {
		done <- c.Poller().Run(run, func(context.Context, connectors.Trigger) error { started <- struct{}{}; return nil })
	}()
	if err := clk.WaitForTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
		t.Fatal("a file younger than settle was started")
	default:
	}
	clk.Advance(2 * time.Hour)
	<-started
	stop()
	<-done
}
