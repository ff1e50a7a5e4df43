package amqpconn

import (
	"errors"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/connectors"
)

// NewStarter checks params without I/O (Open connects on first use).
func TestNewStarterParams(t *testing.T) {
	withQueue, err := Open(connectors.Settings{"queue": "orders", "prefetch": "8"}, Options{Name: "mq"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := withQueue.NewStarter(OpConsume, nil)
	if s, ok := st.(*Subscriber); err != nil || !ok || s.queue != "orders" || s.prefetch != 8 {
		t.Fatalf("settings as defaults: %#v %v", st, err)
	}
	st, err = withQueue.NewStarter(OpConsume, map[string]any{"queue": "refunds", "prefetch": 2})
	if s, ok := st.(*Subscriber); err != nil || !ok || s.queue != "refunds" || s.prefetch != 2 {
		t.Fatalf("params: %#v %v", st, err)
	}
	noQueue, err := Open(connectors.Settings{}, Options{Name: "mq"})
	if err != nil {
		t.Fatal(err)
	}
	prefix := `amqpconn: amqp starter "consume": param `
	for _, tc := range []struct {
		c      *Conn
		params map[string]any
		want   string
	}{
		{noQueue, nil, `"queue": required (the connection has no queue setting)`},
		{noQueue, map[string]any{"prefetch": 4}, `"queue": required`},
		{withQueue, map[string]any{"queue": ""}, `"queue": must not be empty`},
		{withQueue, map[string]any{"queue": true}, `"queue": a string is required, got boolean`},
		{withQueue, map[string]any{"prefetch": 0}, `"prefetch": 0 is below the minimum 1`},
		{withQueue, map[string]any{"prefetch": 2.5}, `"prefetch": a whole number is required, got 2.5`},
		{withQueue, map[string]any{"exchange": "x"}, `"exchange": unknown (consume takes prefetch, queue)`},
	} {
		_, err := tc.c.NewStarter(OpConsume, tc.params)
		var pe *connectors.ParamError
		if !errors.As(err, &pe) || !connectors.IsPermanent(err) || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %s%s", tc.params, err, prefix, tc.want)
		}
	}
	_, err = withQueue.NewStarter("subscribe", nil)
	if !errors.Is(err, connectors.ErrUnknownOperation) || !strings.Contains(err.Error(), `starter "subscribe" (amqp starters: consume)`) {
		t.Errorf("unknown operation: %v", err)
	}
}
