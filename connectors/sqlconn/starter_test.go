package sqlconn

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
)

// NewStarter checks its params without reaching the server (Open is lazy),
// so these run without one.
func TestNewStarterParams(t *testing.T) {
	for _, d := range []Dialect{Postgres, MySQL} {
		c, err := Open(d, connectors.Settings{"database": "test", "purge-after": "0"}, Options{Name: "erp"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		st, err := c.NewStarter(OpBuffer, map[string]any{"table": "app.orders", "interval": "250ms"})
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		p, ok := st.(*BufferPoller)
		if !ok || p.source != "app.orders" || p.interval != 250*time.Millisecond || p.clk != c.clk {
			t.Fatalf("%s: starter %#v", d, st)
		}
		if st, err := c.NewStarter(OpBuffer, map[string]any{"table": "orders"}); err != nil || st.(*BufferPoller).interval != time.Second {
			t.Fatalf("%s: default interval: %v", d, err)
		}

		prefix := `sqlconn: ` + string(d) + ` starter "buffer": param `
		for _, tc := range []struct {
			params map[string]any
			want   string
		}{
			{nil, `"table": required`},
			{map[string]any{"interval": "1s"}, `"table": required`},
			{map[string]any{"table": 7}, `"table": a string is required, got number`},
			{map[string]any{"table": "orders; drop table x"}, `"table": "orders; drop table x" is not a table name`},
			{map[string]any{"table": "orders", "interval": 5}, `"interval": a duration string`},
			{map[string]any{"table": "orders", "interval": "0s"}, `"interval": 0s is below the minimum 1ms`},
			{map[string]any{"table": "orders", "source": "orders"}, `"source": unknown (buffer takes interval, table)`},
		} {
			_, err := c.NewStarter(OpBuffer, tc.params)
			var pe *connectors.ParamError
			if !errors.As(err, &pe) || !connectors.IsPermanent(err) || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %v: %v, want %s%s", d, tc.params, err, prefix, tc.want)
			}
		}
		_, err = c.NewStarter("poll", map[string]any{"table": "orders"})
		if !errors.Is(err, connectors.ErrUnknownOperation) || !strings.Contains(err.Error(), `starter "poll" (`+string(d)+` starters: buffer)`) {
			t.Errorf("%s: unknown operation: %v", d, err)
		}
	}
}
