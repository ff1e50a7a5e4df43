package sqlconn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
)

// bufferEnv makes a source table with a buffer and returns the poller.
func bufferEnv(t *testing.T, d Dialect, clk clock.Clock) (*env, string, *BufferPoller) {
	e := open(t, d, nil)
	src := e.table(t, "id INT, name VARCHAR(20)")
	if err := e.c.InstallBuffer(ctx(t), src); err != nil {
		t.Fatal(err)
	}
	// Installing twice is harmless.
	if err := e.c.InstallBuffer(ctx(t), src); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.c.DropBuffer(context.Background(), src); err != nil {
			t.Error(err)
		}
	})
	p, err := e.c.BufferStarter(src, PollerOptions{Interval: time.Second, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return e, src, p
}

// recorder is a StartFunc keeping the triggers it accepted, in order.
type recorder struct {
	mu   sync.Mutex
	seen []connectors.Trigger
	keys map[string]int
	got  chan struct{}
}

func newRecorder() *recorder {
	return &recorder{keys: map[string]int{}, got: make(chan struct{}, 1000)}
}

func (r *recorder) start(_ context.Context, tr connectors.Trigger) error {
	r.mu.Lock()
	r.seen = append(r.seen, tr)
	r.keys[tr.Key]++
	r.mu.Unlock()
	r.got <- struct{}{}
	return nil
}

func (r *recorder) wait(t *testing.T, n int) {
	t.Helper()
	c := ctx(t)
	for range n {
		select {
		case <-r.got:
		case <-c.Done():
			t.Fatalf("waited for %d triggers: %v", n, c.Err())
		}
	}
}

func TestBufferStarterOneJobPerRow(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		e, src, p := bufferEnv(t, d, clk)
		e.exec(t, "INSERT INTO "+src+" (id, name) VALUES (1, 'a'), (2, 'b')")
		e.exec(t, "UPDATE "+src+" SET name = 'B' WHERE id = 2")
		e.exec(t, "DELETE FROM "+src+" WHERE id = 1")

		rec := newRecorder()
		run, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(run, rec.start) }()
		rec.wait(t, 4)
		// Idle now: a new row is found after the poll interval.
		if err := clk.WaitForTimers(ctx(t), 1); err != nil {
			t.Fatal(err)
		}
		e.exec(t, "INSERT INTO "+src+" (id, name) VALUES (3, 'c')")
		clk.Advance(time.Second)
		rec.wait(t, 1)
		// Back to sleep means the last row's transaction committed (a
		// cancel before that would roll it back, by design).
		if err := clk.WaitForTimers(ctx(t), 1); err != nil {
			t.Fatal(err)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tr := range rec.seen {
			row := tr.Input["row"].(map[string]any)
			got = append(got, fmt.Sprintf("%s %v %v", tr.Input["op"], row["id"], row["name"]))
		}
		want := "[insert 1 a insert 2 b update 2 B delete 1 a insert 3 c]"
		if fmt.Sprint(got) != want {
			t.Fatalf("triggers = %v, want %s", got, want)
		}
		for k, n := range rec.keys {
			if n != 1 {
				t.Fatalf("key %s started %d times", k, n)
			}
		}
		if n, err := p.Pending(ctx(t)); err != nil || n != 0 {
			t.Fatalf("pending = %d, %v", n, err)
		}
	})
}

// A poller that dies after start returned but before its commit leaves
// the row pending; the next poller delivers it again with the SAME key,
// which is how the runtime recognises the job it already has.
func TestBufferStarterCrashBeforeCommitRedeliversSameKey(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		e, src, p := bufferEnv(t, d, clk)
		e.exec(t, "INSERT INTO "+src+" (id, name) VALUES (1, 'a')")

		var first connectors.Trigger
		run, crash := context.WithCancel(context.Background())
		err := p.Run(run, func(_ context.Context, tr connectors.Trigger) error {
			first = tr
			crash() // the process dies here: no mark, no commit
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := p.Pending(ctx(t)); n != 1 {
			t.Fatalf("pending after crash = %d, want 1", n)
		}
		rec := newRecorder()
		run2, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(run2, rec.start) }()
		rec.wait(t, 1)
		stop()
		<-done
		if rec.seen[0].Key != first.Key || first.Key == "" {
			t.Fatalf("redelivered key %q, first %q", rec.seen[0].Key, first.Key)
		}
	})
}

// A refused start (the runtime could not commit the job) leaves the row
// pending; it is retried after the interval.
func TestBufferStarterRefusedStartRetries(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		e, src, p := bufferEnv(t, d, clk)
		e.exec(t, "INSERT INTO "+src+" (id, name) VALUES (1, 'a')")
		rec := newRecorder()
		refuse := true
		var mu sync.Mutex
		run, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- p.Run(run, func(c context.Context, tr connectors.Trigger) error {
				mu.Lock()
				r := refuse
				refuse = false
				mu.Unlock()
				if r {
					return errors.New("wip not in sync")
				}
				return rec.start(c, tr)
			})
		}()
		if err := clk.WaitForTimers(ctx(t), 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		rec.wait(t, 1)
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// Two pollers (a split brain) on one buffer: every row starts exactly once.
func TestBufferStarterTwoPollersNoDuplicate(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		e, src, p := bufferEnv(t, d, clk)
		const rows = 40
		for i := range rows {
			e.exec(t, "INSERT INTO "+src+" (id, name) VALUES ("+fmt.Sprint(i)+", 'x')")
		}
		p2, err := e.c.BufferStarter(src, PollerOptions{Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		rec := newRecorder()
		run, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, poller := range []*BufferPoller{p, p2} {
			wg.Go(func() {
				if err := poller.Run(run, rec.start); err != nil {
					t.Error(err)
				}
			})
		}
		rec.wait(t, rows)
		stop()
		wg.Wait()
		if len(rec.keys) != rows || len(rec.seen) != rows {
			t.Fatalf("starts = %d distinct keys = %d, want %d each", len(rec.seen), len(rec.keys), rows)
		}
	})
}

func TestBufferDDLRejectsBadNames(t *testing.T) {
	if _, err := BufferDDL(Postgres, "t; drop table x", nil); err == nil {
		t.Error("bad source accepted")
	}
	if _, err := BufferDDL(MySQL, "t", nil); !errors.Is(err, ErrNoColumns) {
		t.Errorf("mysql without columns: %v", err)
	}
	if _, err := BufferDDL(MySQL, "t", []string{"ok", "bad col"}); err == nil {
		t.Error("bad column accepted")
	}
}

// PostgreSQL truncates identifiers beyond 63 bytes, so two long source
// tables could share a trigger; such names are refused, naming the limit.
func TestBufferNamesWithinTheServersLimit(t *testing.T) {
	ok := strings.Repeat("a", 63-len("_tandem_buf_todo"))
	if _, err := BufferDDL(Postgres, ok, nil); err != nil {
		t.Errorf("longest accepted source (%d bytes): %v", len(ok), err)
	}
	long := ok + "b"
	if _, err := BufferDDL(Postgres, long, nil); !errors.Is(err, ErrParam) || !strings.Contains(err.Error(), "63-byte limit") {
		t.Errorf("%d-byte source: %v, want a refusal naming the 63-byte limit", len(long), err)
	}
	if _, err := BufferDropDDL(Postgres, long); err == nil {
		t.Error("drop DDL for a too-long source accepted")
	}
	if _, err := quoteIdent(MySQL, strings.Repeat("m", 64)); err != nil {
		t.Errorf("mysql 64-byte identifier: %v", err)
	}
	if _, err := quoteIdent(MySQL, strings.Repeat("m", 65)); err == nil {
		t.Error("mysql 65-byte identifier accepted")
	}
	c := &Conn{d: Postgres}
	if _, err := c.NewStarter(OpBuffer, map[string]any{"table": long}); err == nil || !strings.Contains(err.Error(), `param "table"`) {
		t.Errorf("starter with a too-long table: %v", err)
	}
}
