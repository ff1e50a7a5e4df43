package natsconn

import (
	"errors"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/connectors"
)

// NewStarter checks params without I/O; the connection's settings are
// given directly (Open would connect).
func TestNewStarterParams(t *testing.T) {
	c := &Conn{stream: "ORDERS", consumer: "tandem", filter: "orders.>"}
	st, err := c.NewStarter(OpSubscribe, nil)
	if s, ok := st.(*Subscriber); err != nil || !ok || s.consumer != "tandem" || s.filter != "orders.>" || s.batch != 16 {
		t.Fatalf("settings as defaults: %#v %v", st, err)
	}
	st, err = c.NewStarter(OpSubscribe, map[string]any{"consumer": "billing", "filter-subject": "orders.eu.>", "batch": 4})
	if s, ok := st.(*Subscriber); err != nil || !ok || s.consumer != "billing" || s.filter != "orders.eu.>" || s.batch != 4 {
		t.Fatalf("params: %#v %v", st, err)
	}
	prefix := `natsconn: nats starter "subscribe": param `
	for _, tc := range []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{"consumer": 3}, `"consumer": a string is required, got number`},
		{map[string]any{"consumer": "a.b"}, `"consumer": "a.b" is not a consumer name`},
		{map[string]any{"consumer": ""}, `"consumer": must not be empty`},
		{map[string]any{"filter-subject": []any{"a"}}, `"filter-subject": a string is required, got list`},
		{map[string]any{"batch": 0}, `"batch": 0 is below the minimum 1`},
		{map[string]any{"batch": "8"}, `"batch": a whole number is required, got string`},
		{map[string]any{"stream": "OTHER"}, `"stream": unknown (subscribe takes batch, consumer, filter-subject)`},
	} {
		_, err := c.NewStarter(OpSubscribe, tc.params)
		var pe *connectors.ParamError
		if !errors.As(err, &pe) || !connectors.IsPermanent(err) || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %s%s", tc.params, err, prefix, tc.want)
		}
	}
	_, err = c.NewStarter("consume", nil)
	if !errors.Is(err, connectors.ErrUnknownOperation) || !strings.Contains(err.Error(), `starter "consume" (nats starters: subscribe)`) {
		t.Errorf("unknown operation: %v", err)
	}
}
