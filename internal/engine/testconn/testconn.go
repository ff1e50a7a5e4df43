// Package testconn is the runtime's built-in test connector: an endpoint
// that records every call with its idempotency key, applies each key's
// effect once (an ExactlyOnce endpoint, like a control table), and can be
// told to fail a key N times, fail permanently, or block until released.
// The runtime's own tests use it to prove exactly-once effects across
// crashes and handovers before the real connectors exist; it is also
// registered under kind "test" by Register for demos.
//
// Operations: "do" (apply an effect; Params are echoed back in
// Result.Values with "effect": n, the key's effect sequence number) and
// "sleep" (like do, but blocks while the connector's Block gate is closed).
// As a starter (NewStarter, operation "subscribe") it hands the triggers
// given to Deliver to the runtime and acknowledges each only after the
// runtime's StartFunc returned nil. It starts no goroutines; the runtime
// owns the starter's Run.
package testconn

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/tandem-ha/tandem/connectors"
)

// Kind is the connector kind Register uses.
const Kind = "test"

// Call is one recorded invocation.
type Call struct {
	Key       string
	Operation string
	Params    map[string]any
	Replayed  bool
	Err       error
}

// Endpoint is the shared state of all connections of one test: what a
// real endpoint would remember across a failover.
type Endpoint struct {
	mu      sync.Mutex
	calls   []Call
	effects map[string]int            // key -> times the effect was applied
	results map[string]map[string]any // key -> stored result
	failN   map[string]int            // key -> remaining transient failures
	failAll int                       // transient failures for any key
	perm    map[string]bool
	gate    chan struct{} // closed: open; sleep ops wait on it
	seq     int
	entered chan string // optional: receives keys of sleep calls as they block
	queue   chan connectors.Trigger
	acked   []string
	ackCh   chan struct{} // closed and replaced on every ack
	refuse  error         // NewStarter fails with it (RefuseStarters)
	starts  int           // NewStarter calls
}

// RefuseStarters makes NewStarter fail with err from now on (nil: accept
// again), as a stored version's starter the connector no longer accepts.
func (e *Endpoint) RefuseStarters(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.refuse = err
}

// StarterCalls returns how often NewStarter was called.
func (e *Endpoint) StarterCalls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.starts
}

// NewEndpoint returns an endpoint with the gate open.
func NewEndpoint() *Endpoint {
	g := make(chan struct{})
	close(g)
	return &Endpoint{effects: map[string]int{}, results: map[string]map[string]any{}, failN: map[string]int{}, perm: map[string]bool{}, gate: g}
}

// Register adds kind "test" to r; every connection shares ep.
func Register(r *connectors.Registry, ep *Endpoint) {
	r.Register(Kind, func(name string, s connectors.Settings) (connectors.Connector, error) {
		return &Conn{ep: ep, name: name}, nil
	})
}

// FailNext makes the next n attempts with key fail with a transient error
// ("" : any key).
func (e *Endpoint) FailNext(key string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if key == "" {
		e.failAll = n
		return
	}
	e.failN[key] = n
}

// FailPermanently makes every attempt with key fail with a Permanent error.
func (e *Endpoint) FailPermanently(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.perm[key] = true
}

// Block closes the gate: "sleep" calls wait until Release (or their
// context ends). entered, if not nil, receives each blocked call's key.
func (e *Endpoint) Block(entered chan string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gate = make(chan struct{})
	e.entered = entered
}

// Release opens the gate.
func (e *Endpoint) Release() {
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.gate:
	default:
		close(e.gate)
	}
}

// Calls returns every recorded call, in order.
func (e *Endpoint) Calls() []Call {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls)
}

// Effects returns key -> number of times its effect was applied (1 for
// every key, if the runtime is right).
func (e *Endpoint) Effects() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.effects)
}

// CallsFor returns how many attempts used key.
func (e *Endpoint) CallsFor(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.calls {
		if c.Key == key {
			n++
		}
	}
	return n
}

// ErrTransient is the error of injected transient failures.
var ErrTransient = errors.New("testconn: injected transient failure")

// Conn is one connection to the endpoint.
type Conn struct {
	ep   *Endpoint
	name string
}

// Kind implements connectors.Connector.
func (c *Conn) Kind() string { return Kind }

// Guarantee implements connectors.Connector: the endpoint deduplicates by key.
func (c *Conn) Guarantee(op string) connectors.Guarantee {
	if op == "do" || op == "sleep" {
		return connectors.ExactlyOnce
	}
	return connectors.AtLeastOnce
}

// Test implements connectors.Connector.
func (c *Conn) Test(context.Context) error { return nil }

// Close implements connectors.Connector.
func (c *Conn) Close() error { return nil }

// Invoke implements connectors.Connector.
func (c *Conn) Invoke(ctx context.Context, req connectors.Request) (connectors.Result, error) {
	e := c.ep
	e.mu.Lock()
	call := Call{Key: req.Key, Operation: req.Operation, Params: req.Params}
	record := func(err error) {
		call.Err = err
		e.calls = append(e.calls, call)
	}
	if req.Operation != "do" && req.Operation != "sleep" {
		err := connectors.Permanent(fmt.Errorf("%w: %q", connectors.ErrUnknownOperation, req.Operation))
		record(err)
		e.mu.Unlock()
		return connectors.Result{}, err
	}
	if e.perm[req.Key] {
		err := connectors.Permanent(fmt.Errorf("testconn: key %s refused", req.Key))
		record(err)
		e.mu.Unlock()
		return connectors.Result{}, err
	}
	if e.failN[req.Key] > 0 || e.failAll > 0 {
		if e.failN[req.Key] > 0 {
			e.failN[req.Key]--
		} else {
			e.failAll--
		}
		record(ErrTransient)
		e.mu.Unlock()
		return connectors.Result{}, ErrTransient
	}
	gate, entered := e.gate, e.entered
	e.mu.Unlock()
	if req.Operation == "sleep" {
		if entered != nil {
			select {
			case entered <- req.Key:
			default:
			}
		}
		select {
		case <-gate:
		case <-ctx.Done():
			e.mu.Lock()
			record(ctx.Err())
			e.mu.Unlock()
			return connectors.Result{}, ctx.Err()
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if v, ok := e.results[req.Key]; ok {
		call.Replayed = true
		record(nil)
		return connectors.Result{Values: maps.Clone(v), Replayed: true}, nil
	}
	e.seq++
	e.effects[req.Key]++
	v := maps.Clone(req.Params)
	if v == nil {
		v = map[string]any{}
	}
	v["effect"] = e.seq
	e.results[req.Key] = v
	record(nil)
	return connectors.Result{Values: maps.Clone(v)}, nil
}

// Deliver queues a trigger for the connection's starters ("subscribe"
// operation). A trigger whose StartFunc fails is delivered again, as a
// broker redelivers an unacknowledged message.
func (e *Endpoint) Deliver(t connectors.Trigger) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.queue == nil {
		e.queue = make(chan connectors.Trigger, 1024)
	}
	e.queue <- t
}

// Acked returns the keys of triggers whose StartFunc returned nil, in order.
func (e *Endpoint) Acked() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.acked)
}

// WaitAcked blocks until n triggers were acknowledged or ctx ends.
func (e *Endpoint) WaitAcked(ctx context.Context, n int) error {
	for {
		e.mu.Lock()
		if len(e.acked) >= n {
			e.mu.Unlock()
			return nil
		}
		if e.ackCh == nil {
			e.ackCh = make(chan struct{})
		}
		ch := e.ackCh
		e.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// NewStarter implements the runtime's StarterSource: operation "subscribe"
// consumes the triggers given to Deliver. It takes no params: any is
// refused by name, as the real connectors refuse an unknown one.
func (c *Conn) NewStarter(operation string, params map[string]any) (connectors.Starter, error) {
	if operation != "subscribe" {
		return nil, connectors.UnknownStarter(Kind, operation, "subscribe")
	}
	if err := connectors.NewStarterParams("testconn: "+Kind, operation, params).Err(); err != nil {
		return nil, err
	}
	c.ep.mu.Lock()
	defer c.ep.mu.Unlock()
	c.ep.starts++
	if c.ep.refuse != nil {
		return nil, c.ep.refuse
	}
	if c.ep.queue == nil {
		c.ep.queue = make(chan connectors.Trigger, 1024)
	}
	return starter{c.ep}, nil
}

type starter struct{ ep *Endpoint }

// Run acknowledges a trigger only after start returned nil; otherwise it
// puts it back for a later delivery and returns the error.
func (s starter) Run(ctx context.Context, start connectors.StartFunc) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case t := <-s.ep.queue:
			if err := start(ctx, t); err != nil {
				s.ep.queue <- t
				return err
			}
			s.ep.mu.Lock()
			s.ep.acked = append(s.ep.acked, t.Key)
			if s.ep.ackCh != nil {
				close(s.ep.ackCh)
				s.ep.ackCh = nil
			}
			s.ep.mu.Unlock()
		}
	}
}
