package sqlconn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// The local servers of `make test` (test/scripts/services.sh).
var localSettings = map[Dialect]connectors.Settings{
	Postgres: {"host": "127.0.0.1", "port": "5432", "user": "postgres", "database": "test", "connect-timeout": "5s"},
	MySQL:    {"host": "127.0.0.1", "port": "3306", "user": "root", "database": "test", "connect-timeout": "5s"},
}

func suffix(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// env is one test's connection with its own control table, dropped at the end.
type env struct {
	c       *Conn
	control string
}

func open(t *testing.T, d Dialect, extra connectors.Settings) *env {
	t.Helper()
	testenv.SkipIfShort(t, "needs the local "+string(d)+" server")
	s := connectors.Settings{}
	for k, v := range localSettings[d] {
		s[k] = v
	}
	ctl := "tdctl_" + suffix(t)
	s["control-table"] = ctl
	for k, v := range extra {
		s[k] = v
	}
	c, err := Open(d, s, Options{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.DB().PingContext(ctx); err != nil {
		c.Close()
		testenv.Missing(t, "%s on 127.0.0.1 unreachable (test/scripts/services.sh starts it): %v", d, err)
	}
	if err := c.InitControl(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{c: c, control: ctl}
	t.Cleanup(func() {
		e.exec(t, "DROP TABLE IF EXISTS "+ctl)
		c.Close()
	})
	return e
}

func (e *env) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.c.DB().ExecContext(ctx, q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (e *env) count(t *testing.T, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := e.c.DB().QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// table creates a fresh table (no primary key, so duplicates would show)
// and drops it at the end.
func (e *env) table(t *testing.T, cols string) string {
	name := "tdt_" + suffix(t)
	e.exec(t, "CREATE TABLE "+name+" ("+cols+")")
	t.Cleanup(func() { e.exec(t, "DROP TABLE IF EXISTS "+name) })
	return name
}

func dialects(t *testing.T, f func(t *testing.T, d Dialect)) {
	for _, d := range []Dialect{Postgres, MySQL} {
		t.Run(string(d), func(t *testing.T) { f(t, d) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestReplayReturnsStoredResultAndOneRow(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		e := open(t, d, nil)
		tbl := e.table(t, "id INT, name VARCHAR(50)")
		req := connectors.Request{Operation: OpInsert, Key: "job1/step2/0", Params: map[string]any{"table": tbl, "values": map[string]any{"id": 1, "name": "a"}}}
		if g := e.c.Guarantee(OpInsert); g != connectors.ExactlyOnce {
			t.Fatalf("Guarantee(insert) = %v", g)
		}
		first, err := e.c.Invoke(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		if first.Replayed || first.Values["rows_affected"] != int64(1) {
			t.Fatalf("first = %+v", first)
		}
		second, err := e.c.Invoke(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		if !second.Replayed || fmt.Sprint(second.Values) != fmt.Sprint(first.Values) {
			t.Fatalf("second = %+v, first %+v", second, first)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM "+tbl); n != 1 {
			t.Fatalf("rows = %d, want 1", n)
		}
		// A different key is a different operation.
		req.Key = "job1/step2/1"
		if r, err := e.c.Invoke(ctx(t), req); err != nil || r.Replayed {
			t.Fatalf("other key: %+v %v", r, err)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM "+tbl); n != 2 {
			t.Fatalf("rows = %d, want 2", n)
		}
	})
}

func TestConcurrentDuplicatesOneEffect(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		e := open(t, d, nil)
		tbl := e.table(t, "id INT, n INT")
		e.exec(t, "INSERT INTO "+tbl+" (id, n) VALUES (1, 0)")
		const N = 8
		for round := range 5 {
			key := fmt.Sprintf("split-brain/%d", round)
			var wg sync.WaitGroup
			results := make([]connectors.Result, N)
			errs := make([]error, N)
			for i := range N {
				wg.Go(func() {
					// Half insert a row, all bump the counter: the same
					// operation key must produce one insert and one bump.
					results[i], errs[i] = e.c.Invoke(ctx(t), connectors.Request{Operation: OpExecute, Key: key, Params: map[string]any{
						"statement": map[Dialect]string{
							Postgres: "WITH ins AS (INSERT INTO " + tbl + " (id, n) VALUES ($1, 0)) UPDATE " + tbl + " SET n = n + 1 WHERE id = 1",
							MySQL:    "UPDATE " + tbl + " SET n = n + 1 WHERE id = ?",
						}[d],
						"args": []any{map[Dialect]int{Postgres: 100 + round, MySQL: 1}[d]},
					}})
				})
			}
			wg.Wait()
			fresh := 0
			for i := range N {
				if errs[i] != nil {
					t.Fatalf("round %d attempt %d: %v", round, i, errs[i])
				}
				if !results[i].Replayed {
					fresh++
				}
				if fmt.Sprint(results[i].Values) != fmt.Sprint(results[0].Values) {
					t.Fatalf("round %d: results differ: %v vs %v", round, results[i].Values, results[0].Values)
				}
			}
			if fresh != 1 {
				t.Fatalf("round %d: %d attempts ran the operation, want 1", round, fresh)
			}
			if n := e.count(t, "SELECT n FROM "+tbl+" WHERE id = 1"); n != int64(round+1) {
				t.Fatalf("after round %d counter = %d, want %d", round, n, round+1)
			}
		}
		if d == Postgres {
			if n := e.count(t, "SELECT COUNT(*) FROM "+tbl+" WHERE id >= 100"); n != 5 {
				t.Fatalf("inserted rows = %d, want 5", n)
			}
		}
		if n := e.count(t, "SELECT COUNT(*) FROM "+e.control); n != 5 {
			t.Fatalf("control keys = %d, want 5", n)
		}
	})
}

// The same harness without the control table: the duplicates show, which
// is what AtLeastOnce declares (and proves the test above can fail).
func TestWithoutControlTableDuplicatesShow(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		e := open(t, d, connectors.Settings{"exactly-once": "false"})
		if e.c.Guarantee(OpInsert) != connectors.AtLeastOnce {
			t.Fatal("exactly-once=false must declare at-least-once")
		}
		tbl := e.table(t, "id INT")
		const N = 4
		var wg sync.WaitGroup
		for range N {
			wg.Go(func() {
				if _, err := e.c.Invoke(ctx(t), connectors.Request{Operation: OpInsert, Key: "same", Params: map[string]any{"table": tbl, "values": map[string]any{"id": 1}}}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := e.count(t, "SELECT COUNT(*) FROM "+tbl); n != N {
			t.Fatalf("rows = %d, want %d", n, N)
		}
	})
}

func TestOperations(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		e := open(t, d, nil)
		tbl := e.table(t, "id INT, name VARCHAR(50), doc VARCHAR(200)")
		inv := func(key, op string, p map[string]any) connectors.Result {
			t.Helper()
			r, err := e.c.Invoke(ctx(t), connectors.Request{Operation: op, Key: key, Params: p})
			if err != nil {
				t.Fatalf("%s: %v", op, err)
			}
			return r
		}
		inv("k1", OpInsert, map[string]any{"table": tbl, "values": map[string]any{"id": 1, "name": "a", "doc": map[string]any{"x": 1}}})
		inv("k2", OpInsert, map[string]any{"table": tbl, "values": map[string]any{"id": 2, "name": "b"}})
		if r := inv("k3", OpUpdate, map[string]any{"table": tbl, "set": map[string]any{"name": "z"}, "where": map[string]any{"id": 2}}); r.Values["rows_affected"] != int64(1) {
			t.Fatalf("update: %+v", r)
		}
		if r := inv("k4", OpDelete, map[string]any{"table": tbl, "where": map[string]any{"id": 1}}); r.Values["rows_affected"] != int64(1) {
			t.Fatalf("delete: %+v", r)
		}
		stmt := "SELECT id, name FROM " + tbl + " WHERE id = " + placeholder(d, 1)
		r := inv("", OpQuery, map[string]any{"statement": stmt, "args": []any{2}})
		rows, _ := r.Values["rows"].([]any)
		if len(rows) != 1 || fmt.Sprint(rows[0]) != "map[id:2 name:z]" {
			t.Fatalf("query: %+v", r.Values)
		}
		if e.c.Guarantee(OpQuery) != connectors.AtLeastOnce {
			t.Fatal("query should be at-least-once")
		}

		// call: a procedure inserting a row.
		proc := "tdp_" + suffix(t)
		if d == Postgres {
			e.exec(t, "CREATE PROCEDURE "+proc+"(i INT) LANGUAGE SQL AS $$ INSERT INTO "+tbl+" (id, name) VALUES (i, 'p') $$")
		} else {
			e.exec(t, "CREATE PROCEDURE "+proc+"(IN i INT) INSERT INTO "+tbl+" (id, name) VALUES (i, 'p')")
		}
		t.Cleanup(func() { e.exec(t, "DROP PROCEDURE IF EXISTS "+proc) })
		inv("k5", OpCall, map[string]any{"procedure": proc, "args": []any{7}})
		inv("k5", OpCall, map[string]any{"procedure": proc, "args": []any{7}})
		if n := e.count(t, "SELECT COUNT(*) FROM "+tbl+" WHERE id = 7"); n != 1 {
			t.Fatalf("call rows = %d, want 1", n)
		}
	})
}

func TestFailureLeavesNothing(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		e := open(t, d, nil)
		tbl := e.table(t, "id INT NOT NULL, name VARCHAR(5)")
		// The operation fails after the key was claimed: the key must not
		// stay, so the retry (fixed input) runs.
		_, err := e.c.Invoke(ctx(t), connectors.Request{Operation: OpInsert, Key: "bad", Params: map[string]any{"table": tbl, "values": map[string]any{"id": nil}}})
		if err == nil || !connectors.IsPermanent(err) {
			t.Fatalf("null into NOT NULL: err = %v, want permanent", err)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM "+e.control); n != 0 {
			t.Fatalf("control keys after failure = %d", n)
		}
		// Missing table: permanent, with the endpoint's message.
		_, err = e.c.Invoke(ctx(t), connectors.Request{Operation: OpInsert, Key: "k", Params: map[string]any{"table": "tdt_missing_" + suffix(t), "values": map[string]any{"id": 1}}})
		if err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), "tdt_missing_") {
			t.Fatalf("missing table: %v", err)
		}
		// A deadline: not permanent, nothing applied.
		short, cancel := context.WithCancel(context.Background())
		cancel()
		_, err = e.c.Invoke(short, connectors.Request{Operation: OpInsert, Key: "late", Params: map[string]any{"table": tbl, "values": map[string]any{"id": 1}}})
		if err == nil || connectors.IsPermanent(err) {
			t.Fatalf("cancelled: %v", err)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM "+tbl); n != 0 {
			t.Fatalf("rows after failures = %d", n)
		}
		if r, err := e.c.Invoke(ctx(t), connectors.Request{Operation: OpInsert, Key: "bad", Params: map[string]any{"table": tbl, "values": map[string]any{"id": 1}}}); err != nil || r.Replayed {
			t.Fatalf("retry after failure: %+v %v", r, err)
		}
	})
}

func TestBadCredentialsAndUnreachable(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		open(t, d, nil) // skips when the server is missing
		s := connectors.Settings{}
		for k, v := range localSettings[d] {
			s[k] = v
		}
		s["user"] = "tandem_nobody"
		s["password"] = "wrong-pass"
		c, err := Open(d, s, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = c.Test(ctx(t))
		if err == nil || !connectors.IsPermanent(err) {
			t.Fatalf("wrong user: %v, want a permanent error", err)
		}
		if strings.Contains(err.Error(), "wrong-pass") {
			t.Fatalf("error leaks the password: %v", err)
		}
		// 192.0.2.0/24 (TEST-NET-1) is unreachable from the root namespace.
		s = connectors.Settings{"host": "192.0.2.1", "database": "test", "connect-timeout": "1s"}
		c2, err := Open(d, s, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		short, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := c2.Test(short); err == nil || connectors.IsPermanent(err) {
			t.Fatalf("unreachable: %v, want a retryable error", err)
		}
	})
}

func TestLongKeyAndPurge(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		e := open(t, d, nil)
		tbl := e.table(t, "id INT")
		long := strings.Repeat("loop/", 100)
		req := connectors.Request{Operation: OpInsert, Key: long, Params: map[string]any{"table": tbl, "values": map[string]any{"id": 1}}}
		for range 2 {
			if _, err := e.c.Invoke(ctx(t), req); err != nil {
				t.Fatal(err)
			}
		}
		if n := e.count(t, "SELECT COUNT(*) FROM "+tbl); n != 1 {
			t.Fatalf("rows = %d", n)
		}
		// Age the key by the database's clock, then purge.
		if d == Postgres {
			e.exec(t, "UPDATE "+e.control+" SET created_at = now() - interval '2 hours'")
		} else {
			e.exec(t, "UPDATE "+e.control+" SET created_at = NOW(6) - INTERVAL 2 HOUR")
		}
		e.exec(t, "INSERT INTO "+e.control+" (idem_key, result) VALUES ('fresh', '{}')")
		n, err := e.c.Purge(ctx(t), time.Hour)
		if err != nil || n != 1 {
			t.Fatalf("purge = %d, %v; want 1", n, err)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM "+e.control); n != 1 {
			t.Fatalf("keys left = %d, want 1 (the fresh one)", n)
		}
	})
}

func TestPurgeLoopOnManualClock(t *testing.T) {
	testenv.SkipIfShort(t, "needs the local postgres server")
	e := open(t, Postgres, connectors.Settings{"purge-after": "0"}) // no loop of its own
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := connectors.Settings{}
	for k, v := range localSettings[Postgres] {
		s[k] = v
	}
	s["control-table"] = e.control
	s["purge-after"] = "1h"
	s["purge-every"] = "10m"
	c, err := Open(Postgres, s, Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e.exec(t, "INSERT INTO "+e.control+" (idem_key, result, created_at) VALUES ('old', '{}', now() - interval '3 hours')")
	if err := clk.WaitForTimers(ctx(t), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Minute)
	// The loop purges asynchronously after the tick: wait for its effect,
	// bounded by the test's deadline, not by a timed assertion.
	for e.count(t, "SELECT COUNT(*) FROM "+e.control) != 0 {
		if err := clock.Sleep(ctx(t), clock.Real(), 10*time.Millisecond); err != nil {
			t.Fatal("purge loop never purged the old key")
		}
	}
}

func TestBadInputNamesTheField(t *testing.T) {
	c, err := Open(Postgres, connectors.Settings{"database": "test", "purge-after": "0"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		req  connectors.Request
		want string
	}{
		{connectors.Request{Operation: "insert", Key: "k", Params: map[string]any{"values": map[string]any{"a": 1}}}, `"table"`},
		{connectors.Request{Operation: "insert", Key: "k", Params: map[string]any{"table": "t; drop", "values": map[string]any{"a": 1}}}, `"t; drop"`},
		{connectors.Request{Operation: "update", Key: "k", Params: map[string]any{"table": "t", "set": map[string]any{"a": 1}}}, `"where"`},
		{connectors.Request{Operation: "execute", Key: "k", Params: map[string]any{"statement": "x", "args": 3}}, `"args"`},
		{connectors.Request{Operation: "frobnicate", Key: "k"}, "frobnicate"},
		{connectors.Request{Operation: "execute", Params: map[string]any{"statement": "x"}}, "idempotency key"},
	} {
		_, err := c.Invoke(context.Background(), tc.req)
		if err == nil || !connectors.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want permanent naming %s", tc.req, err, tc.want)
		}
	}
	if _, err := c.Invoke(context.Background(), connectors.Request{Operation: "frobnicate", Key: "k"}); !errors.Is(err, connectors.ErrUnknownOperation) {
		t.Errorf("unknown op: %v", err)
	}
	for _, s := range []connectors.Settings{{}, {"database": "x", "purge-after": "soon"}, {"database": "x", "exactly-once": "maybe"}, {"database": "x", "control-table": "a-b"}} {
		if _, err := Open(MySQL, s, Options{}); err == nil {
			t.Errorf("Open(%v) accepted bad settings", s)
		}
	}
}

func TestDSNKeepsSecretsOutOfSettingsString(t *testing.T) {
	s := connectors.Settings{"database": "d", "user": "u", "password": "p@ss/w:rd"}
	dsn, err := DSN(Postgres, s)
	if err != nil || !strings.Contains(dsn, "postgres://u:p%40ss%2Fw%3Ard@127.0.0.1:5432/d") {
		t.Fatalf("DSN = %q, %v", dsn, err)
	}
	if strings.Contains(s.String(), "p@ss") {
		t.Fatal("settings leak the password")
	}
}

// BenchmarkInsert compares an exactly-once insert (claim, insert, store,
// commit) with a plain autocommit insert.
func BenchmarkInsert(b *testing.B) {
	for _, d := range []Dialect{Postgres, MySQL} {
		for _, mode := range []string{"true", "false"} {
			b.Run(string(d)+"/exactly-once="+mode, func(b *testing.B) {
				s := connectors.Settings{}
				for k, v := range localSettings[d] {
					s[k] = v
				}
				sfx := suffix(b)
				s["control-table"] = "tdctl_bench_" + sfx
				s["exactly-once"] = mode
				s["purge-after"] = "0"
				c, err := Open(d, s, Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				bg := context.Background()
				if err := c.DB().PingContext(bg); err != nil {
					testenv.Missing(b, "%s unreachable: %v", d, err)
				}
				if err := c.InitControl(bg); err != nil {
					b.Fatal(err)
				}
				tbl := "tdt_bench_" + sfx
				c.DB().ExecContext(bg, "CREATE TABLE "+tbl+" (id INT)")
				defer c.DB().ExecContext(bg, "DROP TABLE IF EXISTS "+tbl)
				defer c.DB().ExecContext(bg, "DROP TABLE IF EXISTS tdctl_bench_"+sfx)
				b.ResetTimer()
				for i := range b.N {
					if _, err := c.Invoke(bg, connectors.Request{Operation: OpInsert, Key: fmt.Sprint("bench/", i), Params: map[string]any{"table": tbl, "values": map[string]any{"id": i}}}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
