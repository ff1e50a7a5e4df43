package sqlconn

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/connectors"
)

// FuzzBuildNeverInlinesInput: whatever names and values the runtime
// passes, generated SQL either is refused or quotes validated identifiers
// and carries every value as a bound parameter.
func FuzzBuildNeverInlinesInput(f *testing.F) {
	f.Add("orders", "id", "1", false)
	f.Add("erp.orders", "name", "x'); DROP TABLE t; --", true)
	f.Add("t\"x", "c`d", "v", false)
	f.Add("", "a", "", true)
	f.Fuzz(func(t *testing.T, table, col, val string, mysql bool) {
		d := Postgres
		if mysql {
			d = MySQL
		}
		c := &Conn{d: d}
		for _, req := range []connectors.Request{
			{Operation: OpInsert, Params: map[string]any{"table": table, "values": map[string]any{col: val}}},
			{Operation: OpUpdate, Params: map[string]any{"table": table, "set": map[string]any{col: val}, "where": map[string]any{"id": val}}},
			{Operation: OpDelete, Params: map[string]any{"table": table, "where": map[string]any{col: val}}},
			{Operation: OpCall, Params: map[string]any{"procedure": table, "args": []any{val}}},
		} {
			st, err := c.build(req)
			if err != nil {
				continue
			}
			if !identRe.MatchString(table) {
				t.Fatalf("%s accepted table %q", req.Operation, table)
			}
			if req.Operation != OpCall && req.Operation != OpUpdate && !identRe.MatchString(col) {
				t.Fatalf("%s accepted column %q", req.Operation, col)
			}
			if strings.ContainsAny(st.sql, ";'") {
				t.Fatalf("%s: SQL %q inlines input", req.Operation, st.sql)
			}
			found := false
			for _, a := range st.args {
				if a == val {
					found = true
				}
			}
			if !found {
				t.Fatalf("%s: value %q not bound (args %v)", req.Operation, val, st.args)
			}
		}
	})
}

// FuzzStoredResult: a control-table result either decodes or is a
// Permanent error, and decoding is stable (replays return equal values).
func FuzzStoredResult(f *testing.F) {
	f.Add(`{"rows_affected":1}`)
	f.Add(`{"rows":[{"id":1,"x":1.5,"s":"a"}],"count":1}`)
	f.Add(`{"n":12345678901234567890}`)
	f.Add(`[1]`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, blob string) {
		v, err := decodeValues([]byte(blob))
		if err != nil {
			if !connectors.IsPermanent(err) {
				t.Fatalf("decode error not permanent: %v", err)
			}
			return
		}
		w, err := normalize(v)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if fmt.Sprint(v) != fmt.Sprint(w) {
			t.Fatalf("unstable: %v then %v", v, w)
		}
	})
}
