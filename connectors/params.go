package connectors

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Starter params are literal values from an orchestration's `starter:
// connector: params:` block (YAML scalars, lists and objects), checked
// once when the runtime asks a connector for a Starter. The checks are
// strict, so a misspelt or mistyped param refuses the deployment instead
// of being ignored: every param is named, typed and, where it matters,
// bounded, and a key the operation does not take is an error.

// ErrStarterParam is wrapped by every error about a starter's params
// (a *ParamError).
var ErrStarterParam = errors.New("connectors: bad starter parameter")

// ParamError is one starter param that is missing, of the wrong type, out
// of range or unknown.
type ParamError struct {
	Connector string // the connector's package and kind, e.g. "sqlconn: postgres"
	Operation string // the starter operation, e.g. "buffer"
	Param     string
	Problem   string
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("%s starter %q: param %q: %s", e.Connector, e.Operation, e.Param, e.Problem)
}

// Unwrap makes errors.Is(err, ErrStarterParam) true.
func (e *ParamError) Unwrap() error { return ErrStarterParam }

// UnknownStarter is the error of NewStarter for an operation kind has no
// starter for; it lists the valid ones.
func UnknownStarter(kind, operation string, valid ...string) error {
	return Permanent(fmt.Errorf("%w: starter %q (%s starters: %s)", ErrUnknownOperation, operation, kind, strings.Join(valid, ", ")))
}

// StarterParams reads a starter's params strictly. Each accessor declares
// one param (so it is known) and returns its value or the default; a
// problem is recorded rather than returned, and Err reports every problem,
// then every key no accessor declared, in a stable order.
type StarterParams struct {
	connector, op string
	params        map[string]any
	known         []string
	errs          []error
}

// NewStarterParams starts reading params for connector (package and kind,
// e.g. "natsconn: nats") and operation.
func NewStarterParams(connector, operation string, params map[string]any) *StarterParams {
	return &StarterParams{connector: connector, op: operation, params: params}
}

// Fail records a problem with param name.
func (p *StarterParams) Fail(name, format string, args ...any) {
	p.errs = append(p.errs, &ParamError{Connector: p.connector, Operation: p.op, Param: name, Problem: fmt.Sprintf(format, args...)})
}

func (p *StarterParams) get(name string) (any, bool) {
	if !slices.Contains(p.known, name) {
		p.known = append(p.known, name)
	}
	v, ok := p.params[name]
	return v, ok
}

// String returns param name, a non-empty string, or def when it is absent.
func (p *StarterParams) String(name, def string) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	s, ok := v.(string)
	switch {
	case !ok:
		p.Fail(name, "a string is required, got %s", typeName(v))
		return def
	case s == "":
		p.Fail(name, "must not be empty")
		return def
	}
	return s
}

// RequiredString returns param name, which must be a non-empty string.
func (p *StarterParams) RequiredString(name string) string {
	if _, ok := p.params[name]; !ok {
		p.get(name)
		p.Fail(name, "required")
		return ""
	}
	return p.String(name, "")
}

// Int returns param name, a whole number of at least least, or def when it
// is absent.
func (p *StarterParams) Int(name string, def, least int) int {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	var n int
	switch x := v.(type) {
	case int:
		n = x
	case int64:
		n = int(x)
	case uint64:
		n = int(min(x, 1<<31))
	case float64: // JSON numbers
		if x != float64(int64(x)) {
			p.Fail(name, "a whole number is required, got %v", x)
			return def
		}
		n = int(x)
	default:
		p.Fail(name, "a whole number is required, got %s", typeName(v))
		return def
	}
	if n < least {
		p.Fail(name, "%d is below the minimum %d", n, least)
		return def
	}
	return n
}

// Duration returns param name, a duration string ("500ms", "2s", "1m") of
// at least least, or def when it is absent.
func (p *StarterParams) Duration(name string, def, least time.Duration) time.Duration {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		p.Fail(name, "a duration string like \"500ms\" or \"2s\" is required, got %s", typeName(v))
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.Fail(name, "%q is not a duration like \"500ms\" or \"2s\"", s)
		return def
	}
	if d < least {
		p.Fail(name, "%s is below the minimum %s", d, least)
		return def
	}
	return d
}

// Err reports the recorded problems, then the params no accessor
// declared, as one error wrapping a *ParamError per problem (nil if there
// is none). It is Permanent: the same params always fail.
func (p *StarterParams) Err() error {
	errs := slices.Clone(p.errs)
	takes := "takes no params"
	if len(p.known) > 0 {
		takes = "takes " + strings.Join(slices.Sorted(slices.Values(p.known)), ", ")
	}
	for _, k := range slices.Sorted(maps.Keys(p.params)) {
		if !slices.Contains(p.known, k) {
			errs = append(errs, &ParamError{Connector: p.connector, Operation: p.op, Param: k, Problem: "unknown (" + p.op + " " + takes + ")"})
		}
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return Permanent(errs[0])
	}
	return Permanent(errors.Join(errs...))
}

// typeName names a param value's type as an orchestration author sees it.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case int, int64, uint64, float64:
		return "number"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
