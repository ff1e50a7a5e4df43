// Package orch is the orchestration definition format: a project (a set of
// orchestrations plus the connections they use) written in YAML, parsed and
// validated up front so that a deployment is refused with errors naming
// file, line and field rather than failing half-way through a job.
//
// A project is either one file holding `project:`, `connections:` and
// `orchestrations:`, or a set of files (a directory) where `project.yaml`
// holds the project name and connections and every other *.yaml / *.yml
// file holds orchestrations (a list under `orchestrations:`, or one
// orchestration at the top level). docs/orchestrations.md is the reference
// with examples; the summary:
//
//	project: billing
//	connections:
//	  db: {kind: postgres, settings: {host: 127.0.0.1, database: test}}
//	orchestrations:
//	  - name: sync-orders
//	    starter: {schedule: {every: 30s}}   # or cron: "*/5 * * * *", or http: {mode: async}
//	    vars: {n: 0}
//	    steps:
//	      - id: load
//	        call: {connection: db, operation: query, params: {sql: "'select 1'"}, result: rows}
//	      - id: bump
//	        assign: {n: "n + 1"}
//
// Step kinds: assign, if/then/else, for-each/do, while/do, try/catch,
// terminate, call. Every step has an id, unique within its orchestration:
// the runtime derives checkpoint cursors and idempotency keys from step ids
// (and loop indexes), so ids, not positions, name steps; renaming a step
// changes its keys.
//
// Expressions use github.com/expr-lang/expr: a small, sandboxed, typed
// language with no side effects and no I/O, compiled once at deploy time
// (syntax errors are deployment errors). The non-deterministic builtin
// now() is disabled: a resumed job re-evaluates the pure steps after its
// last checkpoint and must get the same values on the other node. Every
// string under params, assign, if, while, for-each, terminate.reason and
// output is an expression; write a literal string as "'text'".
//
// Parsing is pure: no I/O beyond the bytes given, no clock.
package orch

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/vm"
	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"

	"github.com/tandem-ha/tandem/connectors"
)

// ErrInvalid is wrapped by every error Parse returns for a bad definition.
var ErrInvalid = errors.New("orch: invalid definition")

// FieldError is one problem at a file, line and field.
type FieldError struct {
	File  string
	Line  int
	Field string // dotted path, e.g. "orchestrations[0].steps[2].call.retry.max-attempts"
	Msg   string
}

func (e *FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Field == "" {
		return loc + ": " + e.Msg
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
}

// Errors is every problem found, in file and line order.
type Errors []*FieldError

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (es Errors) Unwrap() error { return ErrInvalid }

// Project is a validated deployment unit.
type Project struct {
	Name           string
	Connections    map[string]Connection
	Orchestrations map[string]*Orchestration
}

// Connection is a named endpoint the project's calls use.
type Connection struct {
	Kind     string
	Settings connectors.Settings
}

// StarterKind says what starts an orchestration's jobs.
type StarterKind string

// Starter kinds.
const (
	StartNone      StarterKind = "none" // started only through the API
	StartSchedule  StarterKind = "schedule"
	StartHTTP      StarterKind = "http"
	StartConnector StarterKind = "connector"
)

// Starter is an orchestration's starter activity.
type Starter struct {
	Kind StarterKind
	// Schedule: exactly one of Every and Cron.
	Every    time.Duration
	Cron     string
	Schedule cron.Schedule // parsed Cron
	// HTTP: "sync", "async" or "both" (default both).
	HTTPMode string
	// Connector: a connection whose connector can start jobs (buffer
	// table polls, queue subscriptions).
	Connection string
	Operation  string
	Params     map[string]any // literal values
}

// Orchestration is one validated flow.
type Orchestration struct {
	Name    string
	File    string
	Line    int
	Starter Starter
	Vars    map[string]any // initial variables (literals)
	Output  *Expr          // evaluated at completion; nil: all variables
	Steps   []*Step
	// ByID indexes every step, nested ones included.
	ByID map[string]*Step
}

// StepKind is the kind of a step.
type StepKind string

// Step kinds.
const (
	KindAssign    StepKind = "assign"
	KindIf        StepKind = "if"
	KindForEach   StepKind = "for-each"
	KindWhile     StepKind = "while"
	KindTry       StepKind = "try"
	KindTerminate StepKind = "terminate"
	KindCall      StepKind = "call"
)

// Expr is a compiled expression with its source.
type Expr struct {
	Src  string
	Prog *vm.Program
}

// Eval runs the expression against vars.
func (e *Expr) Eval(vars map[string]any) (any, error) {
	v, err := expr.Run(e.Prog, vars)
	if err != nil {
		return nil, fmt.Errorf("orch: evaluating %q: %w", e.Src, err)
	}
	return v, nil
}

// Assignment sets Name to the value of Value.
type Assignment struct {
	Name  string
	Value *Expr
}

// Step is one activity.
type Step struct {
	ID   string
	Kind StepKind
	Line int

	Assign []Assignment // assign, in source order

	Cond  *Expr // if, while
	Then  []*Step
	Else  []*Step
	Items *Expr // for-each
	As    string
	Index string
	Do    []*Step // for-each, while
	// MaxIterations bounds a while loop (default 10000) so a wrong
	// condition fails the job instead of spinning forever.
	MaxIterations int

	Try   []*Step
	Catch []*Step

	TerminateStatus string // completed | failed
	Reason          *Expr

	Call *Call
}

// Call is a connector activity.
type Call struct {
	Connection string
	Operation  string
	Params     map[string]any // values: *Expr, or nested maps/lists of them, or literals
	Result     string         // variable receiving Result.Values ("" to drop)
	Retry      RetryPolicy
	Timeout    time.Duration // 0: none
}

// RetryPolicy is a call's per-activity retry policy: attempt n (n >= 2)
// waits Backoff * 2^(n-2), capped at MaxBackoff. No jitter: the pair has
// one active node, so there is no herd to spread.
type RetryPolicy struct {
	MaxAttempts int
	Backoff     time.Duration
	MaxBackoff  time.Duration
}

// Delay is the wait before attempt n (n >= 2).
func (r RetryPolicy) Delay(n int) time.Duration {
	d := r.Backoff
	for i := 2; i < n && d < r.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, r.MaxBackoff)
}

// Defaults of the format (documented in docs/orchestrations.md).
const (
	DefaultMaxAttempts   = 3
	DefaultBackoff       = time.Second
	DefaultMaxBackoff    = 30 * time.Second
	DefaultMaxIterations = 10000
	// MaxDepth bounds step nesting; the runtime's cursor is a stack.
	MaxDepth = 32
)

// ProjectFile is the name that holds the project header in a directory.
const ProjectFile = "project.yaml"

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Parse validates a project given as files (name -> content). A single
// file holds the whole project; several files follow the directory
// layout (project.yaml plus orchestration files). kindKnown, when not
// nil, reports whether a connector kind is registered.
func Parse(files map[string][]byte, kindKnown func(string) bool) (*Project, error) {
	p := &parser{kindKnown: kindKnown}
	prj := &Project{Connections: map[string]Connection{}, Orchestrations: map[string]*Orchestration{}}
	names := slices.Sorted(maps.Keys(files))
	if len(names) == 0 {
		return nil, Errors{{Msg: "no files given"}}
	}
	var header string
	if len(names) == 1 {
		header = names[0]
	} else {
		for _, n := range names {
			if path.Base(n) == ProjectFile {
				header = n
			}
		}
		if header == "" {
			return nil, Errors{{File: names[0], Msg: "several files but no " + ProjectFile}}
		}
	}
	var orchs []*Orchestration
	for _, name := range names {
		p.file = name
		var doc yaml.Node
		if err := yaml.Unmarshal(files[name], &doc); err != nil {
			p.add(0, "", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
			continue
		}
		if len(doc.Content) == 0 {
			p.add(0, "", "empty file")
			continue
		}
		root := doc.Content[0]
		if name == header {
			orchs = append(orchs, p.header(root, prj)...)
			continue
		}
		orchs = append(orchs, p.orchFile(root)...)
	}
	for _, o := range orchs {
		p.file = o.File
		if _, dup := prj.Orchestrations[o.Name]; dup {
			p.add(o.Line, "name", "orchestration %q defined twice", o.Name)
			continue
		}
		prj.Orchestrations[o.Name] = o
		p.checkRefs(o, prj)
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool {
			if p.errs[i].File != p.errs[j].File {
				return p.errs[i].File < p.errs[j].File
			}
			return p.errs[i].Line < p.errs[j].Line
		})
		return nil, p.errs
	}
	return prj, nil
}

type parser struct {
	file      string
	errs      Errors
	kindKnown func(string) bool
}

func (p *parser) add(line int, field, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// fields checks n is a mapping with only the allowed keys and returns
// key -> (key node, value node).
func (p *parser) fields(n *yaml.Node, field string, allowed ...string) map[string][2]*yaml.Node {
	out := map[string][2]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, field, "must be a mapping")
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !slices.Contains(allowed, k.Value) {
			p.add(k.Line, join(field, k.Value), "unknown field (allowed: %s)", strings.Join(allowed, ", "))
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.add(k.Line, join(field, k.Value), "given twice")
			continue
		}
		out[k.Value] = [2]*yaml.Node{k, v}
	}
	return out
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func (p *parser) str(n *yaml.Node, field string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.add(n.Line, field, "must be a string")
		return ""
	}
	return n.Value
}

func (p *parser) dur(n *yaml.Node, field string) time.Duration {
	s := p.str(n, field)
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		p.add(n.Line, field, "%q is not a duration (e.g. 500ms, 2s, 1m)", s)
		return 0
	}
	return d
}

func (p *parser) posInt(n *yaml.Node, field string) int {
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || v < 1 {
		p.add(n.Line, field, "must be a positive integer")
		return 0
	}
	return v
}

func (p *parser) literal(n *yaml.Node, field string) any {
	var v any
	if err := n.Decode(&v); err != nil {
		p.add(n.Line, field, "%v", err)
	}
	return normalizeLiteral(v)
}

// normalizeLiteral turns YAML's map[string]interface{} trees into
// map[string]any with JSON-compatible scalars.
func normalizeLiteral(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			t[k] = normalizeLiteral(x)
		}
	case []any:
		for i, x := range t {
			t[i] = normalizeLiteral(x)
		}
	}
	return v
}

func (p *parser) expr(n *yaml.Node, field string) *Expr {
	src := p.str(n, field)
	if src == "" {
		if n.Kind == yaml.ScalarNode {
			p.add(n.Line, field, "empty expression")
		}
		return nil
	}
	return p.compile(src, n.Line, field)
}

func (p *parser) compile(src string, line int, field string) *Expr {
	prog, err := Compile(src)
	if err != nil {
		p.add(line, field, "expression %q: %s", src, firstLine(err.Error()))
		return nil
	}
	return &Expr{Src: src, Prog: prog}
}

// Compile compiles one expression with the options the runtime uses.
func Compile(src string) (*vm.Program, error) {
	var banned bannedCalls
	prog, err := expr.Compile(src, expr.Env(map[string]any{}), expr.AllowUndefinedVariables(), expr.DisableBuiltin("now"), expr.Patch(&banned))
	if err != nil {
		return nil, err
	}
	if len(banned) > 0 {
		return nil, fmt.Errorf("%s() is not deterministic: a resumed job would see another value (pass the time in as an input instead)", banned[0])
	}
	return prog, nil
}

// bannedCalls records calls to non-deterministic functions. With undefined
// variables allowed, a disabled builtin still compiles as a call of an
// unknown variable, so it is refused here by name.
type bannedCalls []string

func (b *bannedCalls) Visit(n *ast.Node) {
	switch c := (*n).(type) {
	case *ast.CallNode:
		if id, ok := c.Callee.(*ast.IdentifierNode); ok && id.Value == "now" {
			*b = append(*b, id.Value)
		}
	case *ast.BuiltinNode:
		if c.Name == "now" {
			*b = append(*b, c.Name)
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// params compiles a tree of parameter values: strings are expressions,
// other scalars literals.
func (p *parser) params(n *yaml.Node, field string) any {
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			m[k.Value] = p.params(n.Content[i+1], join(field, k.Value))
		}
		return m
	case yaml.SequenceNode:
		l := make([]any, len(n.Content))
		for i, c := range n.Content {
			l[i] = p.params(c, fmt.Sprintf("%s[%d]", field, i))
		}
		return l
	case yaml.ScalarNode:
		if n.Tag == "!!str" {
			return p.compile(n.Value, n.Line, field)
		}
		return p.literal(n, field)
	}
	p.add(n.Line, field, "unsupported YAML node (aliases are not allowed)")
	return nil
}

func (p *parser) header(root *yaml.Node, prj *Project) []*Orchestration {
	f := p.fields(root, "", "project", "connections", "orchestrations")
	if kv, ok := f["project"]; ok {
		prj.Name = p.str(kv[1], "project")
		if prj.Name != "" && !nameRE.MatchString(prj.Name) {
			p.add(kv[1].Line, "project", "%q: use lower-case letters, digits, - and _ (at most 63)", prj.Name)
		}
	} else {
		p.add(root.Line, "project", "required")
	}
	if kv, ok := f["connections"]; ok {
		p.connections(kv[1], prj)
	}
	if kv, ok := f["orchestrations"]; ok {
		return p.orchList(kv[1], "orchestrations")
	}
	return nil
}

func (p *parser) connections(n *yaml.Node, prj *Project) {
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, "connections", "must be a mapping of name to {kind, settings}")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := "connections." + k.Value
		if !nameRE.MatchString(k.Value) {
			p.add(k.Line, field, "bad connection name (lower-case letters, digits, - and _)")
		}
		f := p.fields(v, field, "kind", "settings")
		var c Connection
		if kv, ok := f["kind"]; ok {
			c.Kind = p.str(kv[1], field+".kind")
			if c.Kind != "" && p.kindKnown != nil && !p.kindKnown(c.Kind) {
				p.add(kv[1].Line, field+".kind", "unknown connector kind %q", c.Kind)
			}
		} else {
			p.add(v.Line, field+".kind", "required")
		}
		c.Settings = connectors.Settings{}
		if kv, ok := f["settings"]; ok {
			s := kv[1]
			if s.Kind != yaml.MappingNode {
				p.add(s.Line, field+".settings", "must be a mapping of strings")
			} else {
				for j := 0; j+1 < len(s.Content); j += 2 {
					sk, sv := s.Content[j], s.Content[j+1]
					c.Settings[sk.Value] = p.str(sv, field+".settings."+sk.Value)
				}
			}
		}
		prj.Connections[k.Value] = c
	}
}

func (p *parser) orchFile(root *yaml.Node) []*Orchestration {
	if root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value == "orchestrations" {
				p.fields(root, "", "orchestrations")
				return p.orchList(root.Content[i+1], "orchestrations")
			}
		}
		if o := p.orchestration(root, ""); o != nil {
			return []*Orchestration{o}
		}
		return nil
	}
	p.add(root.Line, "", "an orchestration file holds one orchestration (a mapping) or `orchestrations:`")
	return nil
}

func (p *parser) orchList(n *yaml.Node, field string) []*Orchestration {
	if n.Kind != yaml.SequenceNode {
		p.add(n.Line, field, "must be a list")
		return nil
	}
	var out []*Orchestration
	for i, c := range n.Content {
		if o := p.orchestration(c, fmt.Sprintf("%s[%d]", field, i)); o != nil {
			out = append(out, o)
		}
	}
	return out
}

func (p *parser) orchestration(n *yaml.Node, field string) *Orchestration {
	f := p.fields(n, field, "name", "starter", "vars", "steps", "output")
	o := &Orchestration{File: p.file, Line: n.Line, ByID: map[string]*Step{}, Vars: map[string]any{}, Starter: Starter{Kind: StartNone}}
	if kv, ok := f["name"]; ok {
		o.Name = p.str(kv[1], join(field, "name"))
		if o.Name != "" && !nameRE.MatchString(o.Name) {
			p.add(kv[1].Line, join(field, "name"), "%q: use lower-case letters, digits, - and _", o.Name)
		}
	} else {
		p.add(n.Line, join(field, "name"), "required")
	}
	if kv, ok := f["starter"]; ok {
		o.Starter = p.starter(kv[1], join(field, "starter"))
	}
	if kv, ok := f["vars"]; ok {
		if m, ok := p.literal(kv[1], join(field, "vars")).(map[string]any); ok {
			o.Vars = m
			for k := range m {
				p.varName(k, kv[1].Line, join(field, "vars."+k))
			}
		} else {
			p.add(kv[1].Line, join(field, "vars"), "must be a mapping")
		}
	}
	if kv, ok := f["output"]; ok {
		o.Output = p.expr(kv[1], join(field, "output"))
	}
	if kv, ok := f["steps"]; ok {
		o.Steps = p.steps(kv[1], join(field, "steps"), o, 1)
	} else {
		p.add(n.Line, join(field, "steps"), "required")
	}
	return o
}

func (p *parser) starter(n *yaml.Node, field string) Starter {
	s := Starter{Kind: StartNone}
	f := p.fields(n, field, "schedule", "http", "connector")
	if len(f) > 1 {
		p.add(n.Line, field, "give exactly one of schedule, http, connector")
	}
	if kv, ok := f["schedule"]; ok {
		s.Kind = StartSchedule
		sf := join(field, "schedule")
		g := p.fields(kv[1], sf, "every", "cron")
		switch {
		case len(g) != 1:
			p.add(kv[1].Line, sf, "give exactly one of every, cron")
		case g["every"][1] != nil:
			s.Every = p.dur(g["every"][1], sf+".every")
			if s.Every > 0 && s.Every < time.Second {
				p.add(g["every"][1].Line, sf+".every", "at least 1s")
			}
		default:
			s.Cron = p.str(g["cron"][1], sf+".cron")
			sch, err := cron.ParseStandard(s.Cron)
			if err != nil {
				p.add(g["cron"][1].Line, sf+".cron", "%q: %v", s.Cron, err)
			}
			s.Schedule = sch
		}
	}
	if kv, ok := f["http"]; ok {
		s.Kind = StartHTTP
		s.HTTPMode = "both"
		g := p.fields(kv[1], join(field, "http"), "mode")
		if m, ok := g["mode"]; ok {
			s.HTTPMode = p.str(m[1], field+".http.mode")
			if !slices.Contains([]string{"sync", "async", "both"}, s.HTTPMode) {
				p.add(m[1].Line, field+".http.mode", "%q: one of sync, async, both", s.HTTPMode)
			}
		}
	}
	if kv, ok := f["connector"]; ok {
		s.Kind = StartConnector
		cf := join(field, "connector")
		g := p.fields(kv[1], cf, "connection", "operation", "params")
		if c, ok := g["connection"]; ok {
			s.Connection = p.str(c[1], cf+".connection")
		} else {
			p.add(kv[1].Line, cf+".connection", "required")
		}
		if c, ok := g["operation"]; ok {
			s.Operation = p.str(c[1], cf+".operation")
		}
		if c, ok := g["params"]; ok {
			s.Params, _ = p.literal(c[1], cf+".params").(map[string]any)
		}
	}
	return s
}

func (p *parser) steps(n *yaml.Node, field string, o *Orchestration, depth int) []*Step {
	if n.Kind != yaml.SequenceNode {
		p.add(n.Line, field, "must be a list of steps")
		return nil
	}
	if depth > MaxDepth {
		p.add(n.Line, field, "steps nested deeper than %d", MaxDepth)
		return nil
	}
	out := make([]*Step, 0, len(n.Content))
	for i, c := range n.Content {
		if s := p.step(c, fmt.Sprintf("%s[%d]", field, i), o, depth); s != nil {
			out = append(out, s)
		}
	}
	return out
}

var stepKeys = []string{"id", "assign", "if", "then", "else", "for-each", "as", "index", "while", "max-iterations", "do", "try", "catch", "terminate", "call"}

func (p *parser) step(n *yaml.Node, field string, o *Orchestration, depth int) *Step {
	f := p.fields(n, field, stepKeys...)
	s := &Step{Line: n.Line}
	if kv, ok := f["id"]; ok {
		s.ID = p.str(kv[1], field+".id")
		switch {
		case s.ID == "":
		case !nameRE.MatchString(s.ID):
			p.add(kv[1].Line, field+".id", "%q: use lower-case letters, digits, - and _", s.ID)
		case o.ByID[s.ID] != nil:
			p.add(kv[1].Line, field+".id", "%q already used at line %d (step ids are unique per orchestration: they name checkpoints and idempotency keys)", s.ID, o.ByID[s.ID].Line)
		default:
			o.ByID[s.ID] = s
		}
	} else {
		p.add(n.Line, field+".id", "required (ids name checkpoints and idempotency keys)")
	}
	var kinds []StepKind
	for _, k := range []StepKind{KindAssign, KindIf, KindForEach, KindWhile, KindTry, KindTerminate, KindCall} {
		if _, ok := f[string(k)]; ok {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) != 1 {
		p.add(n.Line, field, "a step is exactly one of assign, if, for-each, while, try, terminate, call (found %d)", len(kinds))
		return nil
	}
	s.Kind = kinds[0]
	allowed := map[StepKind][]string{
		KindAssign: {}, KindIf: {"then", "else"}, KindForEach: {"as", "index", "do"},
		KindWhile: {"do", "max-iterations"}, KindTry: {"catch"}, KindTerminate: {}, KindCall: {},
	}[s.Kind]
	for k, kv := range f {
		if k != "id" && k != string(s.Kind) && !slices.Contains(allowed, k) {
			p.add(kv[0].Line, field+"."+k, "not allowed in a %s step", s.Kind)
		}
	}
	body := f[string(s.Kind)][1]
	bf := field + "." + string(s.Kind)
	sub := func(key string, required bool) []*Step {
		kv, ok := f[key]
		if !ok {
			if required {
				p.add(n.Line, field+"."+key, "required in a %s step", s.Kind)
			}
			return nil
		}
		return p.steps(kv[1], field+"."+key, o, depth+1)
	}
	switch s.Kind {
	case KindAssign:
		if body.Kind != yaml.MappingNode || len(body.Content) == 0 {
			p.add(body.Line, bf, "must be a non-empty mapping of variable: expression")
			break
		}
		for i := 0; i+1 < len(body.Content); i += 2 {
			k, v := body.Content[i], body.Content[i+1]
			p.varName(k.Value, k.Line, bf+"."+k.Value)
			s.Assign = append(s.Assign, Assignment{Name: k.Value, Value: p.expr(v, bf+"."+k.Value)})
		}
	case KindIf:
		s.Cond = p.expr(body, bf)
		s.Then = sub("then", true)
		s.Else = sub("else", false)
	case KindForEach:
		s.Items = p.expr(body, bf)
		s.As, s.Index = "item", "index"
		if kv, ok := f["as"]; ok {
			s.As = p.ident(kv[1], field+".as")
		}
		if kv, ok := f["index"]; ok {
			s.Index = p.ident(kv[1], field+".index")
		}
		s.Do = sub("do", true)
	case KindWhile:
		s.Cond = p.expr(body, bf)
		s.MaxIterations = DefaultMaxIterations
		if kv, ok := f["max-iterations"]; ok {
			s.MaxIterations = p.posInt(kv[1], field+".max-iterations")
		}
		s.Do = sub("do", true)
	case KindTry:
		s.Try = p.steps(body, bf, o, depth+1)
		s.Catch = sub("catch", true)
	case KindTerminate:
		g := p.fields(body, bf, "status", "reason")
		s.TerminateStatus = "completed"
		if kv, ok := g["status"]; ok {
			s.TerminateStatus = p.str(kv[1], bf+".status")
			if s.TerminateStatus != "completed" && s.TerminateStatus != "failed" {
				p.add(kv[1].Line, bf+".status", "%q: completed or failed", s.TerminateStatus)
			}
		}
		if kv, ok := g["reason"]; ok {
			s.Reason = p.expr(kv[1], bf+".reason")
		}
	case KindCall:
		s.Call = p.call(body, bf)
	}
	return s
}

func (p *parser) ident(n *yaml.Node, field string) string {
	v := p.str(n, field)
	if v != "" {
		p.varName(v, n.Line, field)
	}
	return v
}

// reserved are expr's keywords; a variable named like a builtin function
// would be shadowed by it (last, first, len...), so both are refused.
var reserved = []string{"true", "false", "nil", "in", "not", "and", "or", "matches", "contains", "startsWith", "endsWith", "let", "if", "else", "error", "now"}

func (p *parser) varName(v string, line int, field string) {
	switch {
	case !identRE.MatchString(v):
		p.add(line, field, "%q is not an identifier", v)
	case slices.Contains(reserved, v) || slices.Contains(builtin.Names, v):
		p.add(line, field, "%q is an expression keyword or builtin function (or the catch variable \"error\"); choose another name", v)
	}
}

func (p *parser) call(n *yaml.Node, field string) *Call {
	f := p.fields(n, field, "connection", "operation", "params", "result", "retry", "timeout")
	c := &Call{Retry: RetryPolicy{MaxAttempts: DefaultMaxAttempts, Backoff: DefaultBackoff, MaxBackoff: DefaultMaxBackoff}}
	if kv, ok := f["connection"]; ok {
		c.Connection = p.str(kv[1], field+".connection")
	} else {
		p.add(n.Line, field+".connection", "required")
	}
	if kv, ok := f["operation"]; ok {
		c.Operation = p.str(kv[1], field+".operation")
	} else {
		p.add(n.Line, field+".operation", "required")
	}
	c.Params = map[string]any{}
	if kv, ok := f["params"]; ok {
		if kv[1].Kind != yaml.MappingNode {
			p.add(kv[1].Line, field+".params", "must be a mapping")
		} else if m, ok := p.params(kv[1], field+".params").(map[string]any); ok {
			c.Params = m
		}
	}
	if kv, ok := f["result"]; ok {
		c.Result = p.ident(kv[1], field+".result")
	}
	if kv, ok := f["timeout"]; ok {
		c.Timeout = p.dur(kv[1], field+".timeout")
	}
	if kv, ok := f["retry"]; ok {
		rf := field + ".retry"
		g := p.fields(kv[1], rf, "max-attempts", "backoff", "max-backoff")
		if x, ok := g["max-attempts"]; ok {
			c.Retry.MaxAttempts = p.posInt(x[1], rf+".max-attempts")
		}
		if x, ok := g["backoff"]; ok {
			c.Retry.Backoff = p.dur(x[1], rf+".backoff")
		}
		if x, ok := g["max-backoff"]; ok {
			c.Retry.MaxBackoff = p.dur(x[1], rf+".max-backoff")
			if c.Retry.MaxBackoff < c.Retry.Backoff {
				p.add(x[1].Line, rf+".max-backoff", "must not be less than backoff (%s)", c.Retry.Backoff)
			}
		}
	}
	return c
}

// checkRefs validates what needs the whole project: connections named by
// calls and starters.
func (p *parser) checkRefs(o *Orchestration, prj *Project) {
	if o.Starter.Kind == StartConnector {
		if _, ok := prj.Connections[o.Starter.Connection]; !ok && o.Starter.Connection != "" {
			p.add(o.Line, "starter.connector.connection", "orchestration %q: no connection %q in project", o.Name, o.Starter.Connection)
		}
	}
	for _, s := range o.ByID {
		if s.Kind == KindCall && s.Call != nil && s.Call.Connection != "" {
			if _, ok := prj.Connections[s.Call.Connection]; !ok {
				p.add(s.Line, "steps."+s.ID+".call.connection", "no connection %q in project (known: %s)", s.Call.Connection, strings.Join(slices.Sorted(maps.Keys(prj.Connections)), ", "))
			}
		}
	}
}
