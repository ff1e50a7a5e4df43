package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FieldError is one problem in a configuration file, at a field and line.
type FieldError struct {
	File  string
	Line  int    // 0 when the field is absent from the file
	Field string // dotted path, e.g. "vip.addresses[1]"
	Msg   string
}

func (e *FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
}

// ErrInvalid is wrapped by every error Load returns for a bad file.
var ErrInvalid = errors.New("config: invalid")

// Errors is every problem found in one file, in line order.
type Errors []*FieldError

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

func (es Errors) Unwrap() error { return ErrInvalid }

// positions maps dotted field paths to their line in the YAML source.
type positions map[string]int

// scalar is one scalar value of the file and the field that holds it.
type scalar struct{ path, value string }

// indexNode records the line of every field under n in pos and, by line,
// every scalar value in scalars, so that a decoding error, which yaml
// reports by line only, can name its field (fieldAt).
func indexNode(n *yaml.Node, path string, pos positions, scalars map[int][]scalar) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexNode(c, path, pos, scalars)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			pos[p] = k.Line
			indexNode(v, p, pos, scalars)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			pos[p] = c.Line
			indexNode(c, p, pos, scalars)
		}
	case yaml.ScalarNode:
		scalars[n.Line] = append(scalars[n.Line], scalar{path, n.Value})
	}
	if path != "" {
		if _, ok := pos[path]; !ok {
			pos[path] = n.Line
		}
	}
}

// fieldAt names the field of a decoding error at line whose message is
// msg: the scalar on that line whose value the message quotes, or the only
// scalar on that line; "" if neither.
func fieldAt(byLine map[int][]scalar, line int, msg string) string {
	cands := byLine[line]
	for _, c := range cands {
		if strings.Contains(msg, strconv.Quote(c.value)) {
			return c.path
		}
	}
	if len(cands) == 1 {
		return cands[0].path
	}
	return ""
}

// line returns the line of field, or of its nearest ancestor present in the
// file.
func (p positions) line(field string) int {
	for f := field; f != ""; {
		if l, ok := p[f]; ok {
			return l
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return 0
}

// problems collects field errors during validation.
type problems struct {
	file string
	pos  positions
	errs Errors
}

func (p *problems) add(field, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{File: p.file, Line: p.pos.line(field), Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	sort.SliceStable(p.errs, func(i, j int) bool {
		a, b := p.errs[i], p.errs[j]
		if (a.Line == 0) != (b.Line == 0) {
			return a.Line != 0 // errors on absent fields last
		}
		return a.Line < b.Line
	})
	return p.errs
}

// yamlLineErr turns yaml's "line N: msg" decoding errors into FieldErrors.
var reYAMLLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// byLine, when not nil, names the field of an error that yaml reports by
// line only (an invalid value).
func decodeErrors(file string, err error, byLine map[int][]scalar) error {
	name := func(fe *FieldError, fallback string) {
		if f := fieldAt(byLine, fe.Line, fe.Msg); f != "" {
			fe.Field = f
		} else {
			fe.Field = fallback
		}
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var out Errors
		for _, m := range te.Errors {
			fe := &FieldError{File: file, Msg: m, Field: "(document)"}
			if sm := reYAMLLine.FindStringSubmatch(m); sm != nil {
				fe.Line, _ = strconv.Atoi(sm[1])
				fe.Msg = sm[2]
				if f := fieldFromMsg(sm[2]); f != "(value)" {
					fe.Field = f
				} else {
					name(fe, f)
				}
			}
			out = append(out, fe)
		}
		return out
	}
	msg := err.Error()
	fe := &FieldError{File: file, Field: "(document)", Msg: strings.TrimPrefix(msg, "yaml: ")}
	if sm := reYAMLLine.FindStringSubmatch(fe.Msg); sm != nil {
		fe.Line, _ = strconv.Atoi(sm[1])
		fe.Msg = sm[2]
		name(fe, "(document)")
	}
	return Errors{fe}
}

var reFieldNotFound = regexp.MustCompile(`^field (\S+) not found`)

func fieldFromMsg(msg string) string {
	if m := reFieldNotFound.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	return "(value)"
}

// Duration is a time.Duration written as "150ms", "2s".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 150ms, 2s)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// Prefix is an address with its prefix length, "192.0.2.10/24".
type Prefix struct{ netip.Prefix }

// UnmarshalYAML parses an address/length.
func (p *Prefix) UnmarshalYAML(n *yaml.Node) error {
	v, err := netip.ParsePrefix(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not an address with prefix length (e.g. 192.0.2.10/24)", n.Line, n.Value)
	}
	p.Prefix = v
	return nil
}

// Addr is an IP address.
type Addr struct{ netip.Addr }

// UnmarshalYAML parses an IP address.
func (a *Addr) UnmarshalYAML(n *yaml.Node) error {
	v, err := netip.ParseAddr(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not an IP address", n.Line, n.Value)
	}
	a.Addr = v
	return nil
}

// AddrPort is "address:port" ("[v6]:port" for IPv6).
type AddrPort struct{ netip.AddrPort }

// UnmarshalYAML parses an address and port.
func (a *AddrPort) UnmarshalYAML(n *yaml.Node) error {
	v, err := netip.ParseAddrPort(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not address:port (e.g. 198.51.100.1:7101)", n.Line, n.Value)
	}
	a.AddrPort = v
	return nil
}

// AddrPorts is one address:port or a list of them.
type AddrPorts []AddrPort

// UnmarshalYAML accepts a scalar (one address) or a sequence.
func (a *AddrPorts) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var one AddrPort
		if err := one.UnmarshalYAML(n); err != nil {
			return err
		}
		*a = AddrPorts{one}
		return nil
	}
	var many []AddrPort
	if err := n.Decode(&many); err != nil {
		return err
	}
	*a = many
	return nil
}

// MAC is a hardware address, "02:74:64:00:00:10".
type MAC struct{ net.HardwareAddr }

// UnmarshalYAML parses a MAC address.
func (m *MAC) UnmarshalYAML(n *yaml.Node) error {
	v, err := net.ParseMAC(n.Value)
	if err != nil || len(v) != 6 {
		return fmt.Errorf("line %d: %q is not a 48-bit MAC address", n.Line, n.Value)
	}
	m.HardwareAddr = v
	return nil
}
