package connectors

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// read declares the params of a made-up starter operation.
func read(params map[string]any) (string, int, time.Duration, error) {
	p := NewStarterParams("xconn: x", "poll", params)
	name := p.RequiredString("name")
	n := p.Int("batch", 16, 1)
	d := p.Duration("every", time.Second, time.Millisecond)
	p.String("label", "")
	return name, n, d, p.Err()
}

func TestStarterParams(t *testing.T) {
	name, n, d, err := read(map[string]any{"name": "q", "batch": 4, "every": "250ms", "label": "x"})
	if err != nil || name != "q" || n != 4 || d != 250*time.Millisecond {
		t.Fatalf("got %q %d %v %v", name, n, d, err)
	}
	if _, n, d, err := read(map[string]any{"name": "q"}); err != nil || n != 16 || d != time.Second {
		t.Fatalf("defaults: %d %v %v", n, d, err)
	}
	if _, n, _, err := read(map[string]any{"name": "q", "batch": float64(8)}); err != nil || n != 8 {
		t.Fatalf("JSON whole number: %d %v", n, err)
	}
	for _, c := range []struct {
		params map[string]any
		param  string // the param the error must name
		want   string
	}{
		{map[string]any{}, "name", "required"},
		{nil, "name", "required"},
		{map[string]any{"name": 3}, "name", "a string is required, got number"},
		{map[string]any{"name": ""}, "name", "must not be empty"},
		{map[string]any{"name": nil}, "name", "got null"},
		{map[string]any{"name": "q", "batch": "4"}, "batch", "a whole number is required, got string"},
		{map[string]any{"name": "q", "batch": 1.5}, "batch", "a whole number is required, got 1.5"},
		{map[string]any{"name": "q", "batch": 0}, "batch", "0 is below the minimum 1"},
		{map[string]any{"name": "q", "every": 2}, "every", "a duration string"},
		{map[string]any{"name": "q", "every": "soon"}, "every", `"soon" is not a duration`},
		{map[string]any{"name": "q", "every": "0s"}, "every", "0s is below the minimum 1ms"},
		{map[string]any{"name": "q", "label": []any{"a"}}, "label", "got list"},
		{map[string]any{"name": "q", "nmae": "q"}, "nmae", "unknown (poll takes batch, every, label, name)"},
	} {
		_, _, _, err := read(c.params)
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Param != c.param || !errors.Is(err, ErrStarterParam) || !IsPermanent(err) {
			t.Errorf("%v: err %v, want a permanent ParamError for %q", c.params, err, c.param)
			continue
		}
		prefix := `xconn: x starter "poll": param "` + c.param + `": `
		if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, c.want) {
			t.Errorf("%v: %q, want %q...%q", c.params, msg, prefix, c.want)
		}
	}
	// Every problem is reported, unknown keys last and sorted.
	_, _, _, err = read(map[string]any{"batch": -1, "zz": 1, "aa": 2})
	lines := strings.Split(err.Error(), "\n")
	want := []string{`param "name": required`, `param "batch": -1 is below`, `param "aa": unknown`, `param "zz": unknown`}
	if len(lines) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("problem %d = %q, want %q", i, lines[i], w)
		}
	}
	// An operation that takes no params says so.
	p := NewStarterParams("xconn: x", "watch", map[string]any{"a": 1})
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), `param "a": unknown (watch takes no params)`) {
		t.Errorf("no params: %v", err)
	}
}

func TestUnknownStarter(t *testing.T) {
	err := UnknownStarter("nats", "poll", "subscribe")
	if !errors.Is(err, ErrUnknownOperation) || !IsPermanent(err) || !strings.Contains(err.Error(), `starter "poll" (nats starters: subscribe)`) {
		t.Fatalf("%v", err)
	}
}
