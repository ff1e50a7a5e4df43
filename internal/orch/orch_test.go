package orch

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const good = `project: billing
connections:
  db:
    kind: test
    settings: {password: s3cret}
orchestrations:
  - name: sync-orders
    starter: {schedule: {every: 30s}}
    vars: {n: 0, names: [a, b]}
    output: "{'n': n}"
    steps:
      - id: load
        call:
          connection: db
          operation: query
          params: {sql: "'select 1'", limit: 10, nested: {who: "names[0]"}}
          result: rows
          retry: {max-attempts: 5, backoff: 100ms, max-backoff: 1s}
          timeout: 5s
      - id: each
        for-each: names
        as: name
        do:
          - id: bump
            assign: {n: "n + 1"}
      - id: check
        if: "n > 1"
        then:
          - id: guarded
            try:
              - id: send
                call: {connection: db, operation: insert, params: {v: "n"}}
            catch:
              - id: note
                assign: {failed: "error.message"}
        else:
          - id: stop
            terminate: {status: failed, reason: "'too few'"}
      - id: spin
        while: "n < 5"
        max-iterations: 10
        do:
          - id: inc
            assign: {n: "n + 1"}
  - name: hook
    starter: {http: {mode: async}}
    steps:
      - id: a
        assign: {x: "body.x"}
  - name: nightly
    starter: {schedule: {cron: "0 2 * * *"}}
    steps:
      - id: b
        assign: {x: "1"}
`

func TestParseGood(t *testing.T) {
	p, err := Parse(map[string][]byte{"billing.yaml": []byte(good)}, func(k string) bool { return k == "test" })
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "billing" || len(p.Orchestrations) != 3 {
		t.Fatalf("project %q with %d orchestrations", p.Name, len(p.Orchestrations))
	}
	o := p.Orchestrations["sync-orders"]
	if o.Starter.Kind != StartSchedule || o.Starter.Every != 30*time.Second {
		t.Fatalf("starter %+v", o.Starter)
	}
	c := o.ByID["load"].Call
	if c.Retry.MaxAttempts != 5 || c.Retry.Backoff != 100*time.Millisecond || c.Timeout != 5*time.Second || c.Result != "rows" {
		t.Fatalf("call %+v", c)
	}
	if _, ok := c.Params["limit"].(int); !ok {
		t.Fatalf("literal param is %T", c.Params["limit"])
	}
	if e, ok := c.Params["nested"].(map[string]any)["who"].(*Expr); !ok || e.Src != "names[0]" {
		t.Fatalf("nested param %v", c.Params["nested"])
	}
	if len(o.ByID) != 10 {
		t.Fatalf("ByID has %d steps, want 10", len(o.ByID))
	}
	if p.Orchestrations["nightly"].Starter.Schedule == nil || p.Orchestrations["hook"].Starter.HTTPMode != "async" {
		t.Fatal("starters not parsed")
	}
	if got := p.Connections["db"].Settings.String(); strings.Contains(got, "s3cret") {
		t.Fatalf("settings leak the password: %s", got)
	}
}

func TestParseDirectoryLayout(t *testing.T) {
	files := map[string][]byte{
		"prj/project.yaml": []byte("project: p\nconnections: {q: {kind: test}}\n"),
		"prj/one.yaml":     []byte("name: one\nsteps:\n  - id: a\n    call: {connection: q, operation: x}\n"),
		"prj/two.yaml":     []byte("orchestrations:\n  - name: two\n    steps: [{id: a, assign: {x: '1'}}]\n"),
	}
	p, err := Parse(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Orchestrations) != 2 || p.Orchestrations["one"].File != "prj/one.yaml" {
		t.Fatalf("%+v", p.Orchestrations)
	}
}

// Each bad definition must be refused with file:line: field naming the
// problem.
func TestParseErrorsNameFileLineField(t *testing.T) {
	cases := []struct{ name, src, want string }{
		{"unknown field", "project: p\norchestrations:\n  - name: o\n    stepz: []\n", "f.yaml:4: orchestrations[0].stepz: unknown field"},
		{"no project", "orchestrations: []\n", "f.yaml:1: project: required"},
		{"dup step id", "project: p\norchestrations:\n  - name: o\n    steps:\n      - {id: a, assign: {x: '1'}}\n      - {id: a, assign: {x: '2'}}\n", "f.yaml:6: orchestrations[0].steps[1].id: \"a\" already used at line 5"},
		{"bad expr", "project: p\norchestrations:\n  - name: o\n    steps:\n      - id: a\n        assign: {x: '1 +'}\n", "f.yaml:6: orchestrations[0].steps[0].assign.x: expression \"1 +\""},
		{"two kinds", "project: p\norchestrations:\n  - name: o\n    steps:\n      - {id: a, assign: {x: '1'}, if: 'true'}\n", "f.yaml:5: orchestrations[0].steps[0]: a step is exactly one of"},
		{"bad duration", "project: p\nconnections: {c: {kind: test}}\norchestrations:\n  - name: o\n    steps:\n      - id: a\n        call:\n          connection: c\n          operation: x\n          timeout: soon\n", "f.yaml:10: orchestrations[0].steps[0].call.timeout: \"soon\" is not a duration"},
		{"unknown connection", "project: p\norchestrations:\n  - name: o\n    steps:\n      - id: a\n        call: {connection: nope, operation: x}\n", "f.yaml:5: steps.a.call.connection: no connection \"nope\""},
		{"unknown kind", "project: p\nconnections:\n  c: {kind: oracle}\norchestrations: []\n", "f.yaml:3: connections.c.kind: unknown connector kind \"oracle\""},
		{"bad cron", "project: p\norchestrations:\n  - name: o\n    starter: {schedule: {cron: 'every day'}}\n    steps: [{id: a, assign: {x: '1'}}]\n", "f.yaml:4: orchestrations[0].starter.schedule.cron"},
		{"then missing", "project: p\norchestrations:\n  - name: o\n    steps:\n      - id: a\n        if: 'true'\n", "f.yaml:5: orchestrations[0].steps[0].then: required"},
		{"backoff order", "project: p\nconnections: {c: {kind: test}}\norchestrations:\n  - name: o\n    steps:\n      - id: a\n        call:\n          connection: c\n          operation: x\n          retry: {backoff: 2s, max-backoff: 1s}\n", "f.yaml:10: orchestrations[0].steps[0].call.retry.max-backoff: must not be less"},
		{"builtin var", "project: p\norchestrations:\n  - name: o\n    steps:\n      - id: a\n        assign: {last: '1'}\n", "f.yaml:6: orchestrations[0].steps[0].assign.last: \"last\" is an expression keyword or builtin"},
		{"yaml syntax", "project: [\n", "f.yaml: "},
		{"now disabled", "project: p\norchestrations:\n  - name: o\n    steps: [{id: a, assign: {x: 'now()'}}]\n", "f.yaml:4: orchestrations[0].steps[0].assign.x: expression \"now()\""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(map[string][]byte{"f.yaml": []byte(c.src)}, func(k string) bool { return k == "test" })
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error\n%v\ndoes not contain\n%s", err, c.want)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	r := RetryPolicy{MaxAttempts: 6, Backoff: time.Second, MaxBackoff: 5 * time.Second}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got := r.Delay(i + 2); got != w {
			t.Errorf("Delay(%d) = %s, want %s", i+2, got, w)
		}
	}
}

// FuzzParse: no input panics the parser; an accepted project is
// internally consistent.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("project: p\norchestrations: [{name: o, steps: [{id: a, while: 'true', do: [{id: b, assign: {x: '1'}}]}]}]\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse(map[string][]byte{"f.yaml": src}, nil)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		for _, o := range p.Orchestrations {
			for id, s := range o.ByID {
				if s.ID != id {
					t.Fatalf("ByID[%q] is step %q", id, s.ID)
				}
			}
		}
	})
}
