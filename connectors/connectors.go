// Package connectors is the contract between the orchestration runtime and
// the endpoints it changes: databases, HTTP services, brokers, files.
//
// A connector runs operations for activities. Each operation declares the
// delivery guarantee it gives when the runtime repeats it after a failover
// or a crash (Guarantee): ExactlyOnce when the endpoint itself can refuse
// the repeat (a control table written in the same transaction as the
// operation, a broker's message-id deduplication, an HTTP endpoint that
// honours Idempotency-Key), AtLeastOnce otherwise. The runtime passes the
// activity's idempotency key (deterministic: job id, step path, loop
// indexes) in Request.Key on every attempt, so an ExactlyOnce connector can
// recognise a repeat and return the stored result (Result.Replayed).
//
// Starters (Starter, Trigger, StartFunc) turn endpoint events into jobs with
// the same discipline: a trigger is acknowledged at its source only after
// the job it started is committed. A connector that can start jobs has a
// method NewStarter(operation, params) (the runtime's
// engine.StarterSource), which checks the orchestration's starter params
// with StarterParams, without I/O, and names the operation and param in
// its errors.
//
// Errors: a connector wraps errors the runtime must not retry with
// Permanent; everything else is retried under the activity's retry policy.
// Invoke honours ctx's deadline.
//
// Settings carry connection parameters; secrets (any key named in
// SecretKeys, or ending in "password", "secret", "token" or "passphrase") are redacted by
// Settings.String and Settings.Redacted, so settings can be logged.
package connectors

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Guarantee is what an operation promises when it is repeated with the
// same idempotency key.
type Guarantee int

const (
	// AtLeastOnce: a repeat may reach the endpoint again.
	AtLeastOnce Guarantee = iota + 1
	// ExactlyOnce: the endpoint sees the operation once, whatever the
	// number of attempts with the same key.
	ExactlyOnce
)

func (g Guarantee) String() string {
	switch g {
	case AtLeastOnce:
		return "at-least-once"
	case ExactlyOnce:
		return "exactly-once"
	}
	return fmt.Sprintf("Guarantee(%d)", int(g))
}

// Request is one attempt of one activity's operation.
type Request struct {
	// Operation names what to do ("execute", "insert", "publish", "post"...);
	// each connector documents its operations.
	Operation string
	// Key is the activity's idempotency key, the same on every attempt.
	Key string
	// Params are the operation's inputs, already evaluated by the runtime.
	Params map[string]any
}

// Result is what an operation returned. On a replay (Replayed) Values are
// the ones stored by the first successful attempt.
type Result struct {
	Values   map[string]any
	Replayed bool
}

// Connector is one configured endpoint. Implementations are safe for
// concurrent use.
type Connector interface {
	// Kind is the connector type ("postgres", "mysql", "http", "nats"...).
	Kind() string
	// Guarantee reports what op promises on repeats; an unknown op is an
	// error from Invoke, and AtLeastOnce here.
	Guarantee(op string) Guarantee
	// Invoke runs one attempt of req.
	Invoke(ctx context.Context, req Request) (Result, error)
	// Test checks that the endpoint is reachable with these settings
	// (tandemctl and the console use it).
	Test(ctx context.Context) error
	// Close releases connections.
	Close() error
}

// Settings are a connection's parameters (host, database, user, password,
// url...).
type Settings map[string]string

// SecretKeys are setting names that are always redacted, whatever their
// suffix.
var SecretKeys = []string{"dsn", "key", "api-key", "auth", "authorization"}

// secretSuffixes redact any setting whose name ends with them.
var secretSuffixes = []string{"password", "secret", "token", "passphrase"}

func isSecret(k string) bool {
	k = strings.ToLower(k)
	if slices.Contains(SecretKeys, k) {
		return true
	}
	for _, s := range secretSuffixes {
		if strings.HasSuffix(k, s) {
			return true
		}
	}
	return false
}

// Redacted returns a copy with every secret replaced by "***".
func (s Settings) Redacted() Settings {
	out := make(Settings, len(s))
	for k, v := range s {
		if isSecret(k) {
			v = "***"
		}
		out[k] = v
	}
	return out
}

// String formats the settings with secrets redacted.
func (s Settings) String() string {
	r := s.Redacted()
	keys := slices.Sorted(maps.Keys(r))
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", k, r[k])
	}
	return b.String()
}

// Require returns the named setting or an error naming it.
func (s Settings) Require(name string) (string, error) {
	v, ok := s[name]
	if !ok || v == "" {
		return "", fmt.Errorf("connectors: setting %q is required", name)
	}
	return v, nil
}

// Factory builds a connector from its settings.
type Factory func(name string, s Settings) (Connector, error)

// Registry maps connector kinds to factories. The zero value is empty and
// ready to use.
type Registry struct {
	mu sync.Mutex
	f  map[string]Factory
}

// Register adds kind; registering a kind twice panics (a programming error).
func (r *Registry) Register(kind string, f Factory) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		r.f = map[string]Factory{}
	}
	if _, dup := r.f[kind]; dup {
		panic("connectors: kind registered twice: " + kind)
	}
	r.f[kind] = f
}

// Kinds lists the registered kinds, sorted.
func (r *Registry) Kinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.f))
}

// Open builds the connection called name of the given kind.
func (r *Registry) Open(kind, name string, s Settings) (Connector, error) {
	r.mu.Lock()
	f, ok := r.f[kind]
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("connectors: connection %q: unknown kind %q (known: %s)", name, kind, strings.Join(r.Kinds(), ", "))
	}
	c, err := f(name, s)
	if err != nil {
		return nil, fmt.Errorf("connectors: connection %q (%s): %w", name, kind, err)
	}
	return c, nil
}

// ErrUnknownOperation is returned by Invoke for an operation the connector
// does not have.
var ErrUnknownOperation = errors.New("connectors: unknown operation")

type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying (bad parameters, a constraint
// violation that is not a duplicate, authentication refused).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by
// Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

// Trigger is one event that starts a job: a buffer-table row, a queue
// message, a received file.
type Trigger struct {
	// Key identifies the event (the row's id, the message id): the
	// runtime derives the job id from it, so a trigger delivered twice
	// starts one job.
	Key string
	// Input becomes the job's starting variables.
	Input map[string]any
}

// StartFunc hands a trigger to the runtime. It returns nil only once the
// job is committed to the WIP store (or already was, for a Key seen
// before); only then may the starter acknowledge the trigger at its
// source (commit the row's transaction, ack the message). An error means
// the job was not started: leave the trigger to be delivered again.
type StartFunc func(ctx context.Context, t Trigger) error

// Starter watches an endpoint for triggers and passes each to start,
// acknowledging it only after start returned nil. Run returns when ctx
// ends (nil) or on a failure the runtime should report (the runtime
// restarts it with backoff).
type Starter interface {
	Run(ctx context.Context, start StartFunc) error
}
