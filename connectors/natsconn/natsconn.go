// Package natsconn is the NATS JetStream connector (kind "nats"): publish
// with the activity's key as Nats-Msg-Id, and a pull-consumer starter that
// acknowledges a message only after its job is committed.
//
// # Guarantee and the duplicate window
//
// "publish" is ExactlyOnce WITHIN THE STREAM'S DUPLICATE WINDOW: JetStream
// remembers each Nats-Msg-Id for StreamConfig.Duplicates (server default
// 2 minutes) and answers a repeat with the first message's sequence and
// Duplicate=true instead of storing it again (Result.Replayed). A repeat
// arriving after the window is stored twice. The window must therefore
// exceed the longest time between a first attempt and its last retry:
// failover time plus the activity's retry horizon. Test reports an error
// when the stream's window is shorter than require-duplicate-window.
//
// # Operations
//
//	publish  subject (default: setting subject), data (string sent as is,
//	         anything else as JSON), headers (object)
//	         -> Values{"stream", "sequence" (int64), "duplicate" (bool)}
//
// # Starter
//
// NewStarter (the runtime's engine.StarterSource) has one operation, for
// an orchestration's `starter: connector:` block:
//
//	subscribe  consumer (string, default: setting consumer), filter-subject
//	           (string, default: setting filter-subject), batch (whole
//	           number >= 1, default 16: messages per fetch)
//
//	starter: {connector: {connection: events, operation: subscribe, params: {consumer: billing}}}
//
// It is a Subscriber (Conn.Subscriber): it pulls from the durable consumer
// (created, or updated to the filter, on first Run) with explicit acks.
// Each message becomes Trigger{Key: "<stream>:<stream sequence>"} (a
// redelivery has the same sequence, so the same key) with the variables
// subject, data (string), json (data parsed, when it is JSON), headers and
// sequence; it is acked (double-acked: the server confirms) only after
// StartFunc returned nil, and nak'ed otherwise, so a message the runtime
// did not commit is delivered again. Two orchestrations reading the same
// stream need two consumer names: a consumer shares its messages out.
//
// # Settings
//
//	url                       default nats://127.0.0.1:4222
//	user, password | token    credentials (password and token redacted)
//	stream                    required: the stream publish writes to and Subscriber reads
//	subject                   default publish subject
//	require-duplicate-window  default 2m; Test fails below it
//	consumer                  durable consumer name for Subscriber, default "tandem"
//	filter-subject            Subscriber's subject filter
//	timeout                   connect and request timeout, default 10s
//
// # Goroutines
//
// nats.go owns its connection goroutines, stopped by Close. Subscriber.Run
// runs on its caller's goroutine and returns within one fetch wait (1s)
// of its context ending.
package natsconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
)

// Kind is the connector kind.
const Kind = "nats"

// Errors.
var (
	ErrSetting = errors.New("natsconn: bad setting")
	ErrParam   = errors.New("natsconn: bad parameter")
	ErrWindow  = errors.New("natsconn: stream's duplicate window is too short")
)

// Register adds kind "nats" to r.
func Register(r *connectors.Registry) {
	r.Register(Kind, func(name string, s connectors.Settings) (connectors.Connector, error) {
		return Open(s, Options{Name: name})
	})
}

// Options are the parts of a Conn that are not settings.
type Options struct {
	Name   string
	Logger *zap.Logger
	// Dial, if set, opens the connections to the server (lab tests pass a
	// dialer whose sockets live in a network namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// dialer adapts a dial function to nats.CustomDialer.
type dialer struct {
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	timeout time.Duration
}

func (d dialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	return d.dial(ctx, network, addr)
}

// Conn is a JetStream endpoint. It implements connectors.Connector.
type Conn struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	stream     string
	subject    string
	consumer   string
	filter     string
	needWindow time.Duration
	timeout    time.Duration
	log        *zap.Logger
}

var _ connectors.Connector = (*Conn)(nil)

func duration(s connectors.Settings, name string, def time.Duration) (time.Duration, error) {
	v := s[name]
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w %q: %q is not a duration", ErrSetting, name, v)
	}
	return d, nil
}

// Open validates s and connects (nats.go reconnects by itself afterwards).
func Open(s connectors.Settings, o Options) (*Conn, error) {
	stream, err := s.Require("stream")
	if err != nil {
		return nil, err
	}
	c := &Conn{stream: stream, subject: s["subject"], consumer: s["consumer"], filter: s["filter-subject"]}
	if c.consumer == "" {
		c.consumer = "tandem"
	}
	if !consumerName(c.consumer) {
		return nil, fmt.Errorf("%w %q: %q is not a consumer name (no . * > / \\ or white space)", ErrSetting, "consumer", c.consumer)
	}
	if c.timeout, err = duration(s, "timeout", 10*time.Second); err != nil {
		return nil, err
	}
	if c.needWindow, err = duration(s, "require-duplicate-window", 2*time.Minute); err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c.log = log.Named("natsconn").With(zap.String("connection", o.Name))
	url := s["url"]
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	opts := []nats.Option{
		nats.Name("tandem/" + o.Name),
		nats.Timeout(c.timeout),
		nats.MaxReconnects(-1),
	}
	if o.Dial != nil {
		opts = append(opts, nats.SetCustomDialer(dialer{o.Dial, c.timeout}))
	}
	if u := s["user"]; u != "" {
		opts = append(opts, nats.UserInfo(u, s["password"]))
	}
	if tok := s["token"]; tok != "" {
		opts = append(opts, nats.Token(tok))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		// Bad URL syntax or credentials are for the operator; a down server is retried.
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrBadSubject) {
			err = connectors.Permanent(err)
		}
		return nil, fmt.Errorf("natsconn: connect %s: %w", url, err)
	}
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsconn: jetstream: %w", err)
	}
	return c, nil
}

// JetStream is the underlying JetStream context (tests create streams with it).
func (c *Conn) JetStream() jetstream.JetStream { return c.js }

// Kind implements connectors.Connector.
func (c *Conn) Kind() string { return Kind }

// Guarantee implements connectors.Connector.
func (c *Conn) Guarantee(op string) connectors.Guarantee {
	if op == "publish" {
		return connectors.ExactlyOnce
	}
	return connectors.AtLeastOnce
}

// Test implements connectors.Connector: the stream exists and its
// duplicate window is at least require-duplicate-window.
func (c *Conn) Test(ctx context.Context) error {
	st, err := c.js.Stream(ctx, c.stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			err = connectors.Permanent(err)
		}
		return fmt.Errorf("natsconn: stream %q: %w", c.stream, err)
	}
	if w := st.CachedInfo().Config.Duplicates; w < c.needWindow {
		return connectors.Permanent(fmt.Errorf("%w: stream %q keeps message ids for %v, require-duplicate-window is %v", ErrWindow, c.stream, w, c.needWindow))
	}
	return nil
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.nc.Close()
	return nil
}

// Invoke implements connectors.Connector.
func (c *Conn) Invoke(ctx context.Context, r connectors.Request) (connectors.Result, error) {
	if r.Operation != "publish" {
		return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w: %q (nats has publish)", connectors.ErrUnknownOperation, r.Operation))
	}
	subject := c.subject
	if v, ok := r.Params["subject"]; ok {
		s, ok := v.(string)
		if !ok || s == "" {
			return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w \"subject\": a non-empty string is required", ErrParam))
		}
		subject = s
	}
	if subject == "" {
		return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w \"subject\": required (no subject setting)", ErrParam))
	}
	if r.Key == "" {
		return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w: publish needs an idempotency key", ErrParam))
	}
	msg := nats.NewMsg(subject)
	switch d := r.Params["data"].(type) {
	case nil:
	case string:
		msg.Data = []byte(d)
	case []byte:
		msg.Data = d
	default:
		b, err := json.Marshal(d)
		if err != nil {
			return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w \"data\": %w", ErrParam, err))
		}
		msg.Data = b
	}
	if h, ok := r.Params["headers"]; ok {
		m, ok := h.(map[string]any)
		if !ok {
			return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w \"headers\": an object is required, got %T", ErrParam, h))
		}
		for k, v := range m {
			msg.Header.Set(k, fmt.Sprint(v))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// ExpectStream makes a subject bound to another stream an error, not a
	// silent publish outside the duplicate window we checked.
	ack, err := c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(r.Key), jetstream.WithExpectStream(c.stream))
	if err != nil {
		return connectors.Result{}, fmt.Errorf("natsconn: publish %s: %w", subject, err)
	}
	return connectors.Result{
		Values:   map[string]any{"stream": ack.Stream, "sequence": int64(ack.Sequence), "duplicate": ack.Duplicate},
		Replayed: ack.Duplicate,
	}, nil
}

// Subscriber is the JetStream starter. It implements connectors.Starter.
type Subscriber struct {
	c        *Conn
	consumer string
	filter   string
	batch    int
	wait     time.Duration
}

var _ connectors.Starter = (*Subscriber)(nil)

// Subscriber returns the starter reading c's stream through its durable
// consumer (created on first Run if missing).
func (c *Conn) Subscriber() *Subscriber {
	return &Subscriber{c: c, consumer: c.consumer, filter: c.filter, batch: 16, wait: time.Second}
}

// OpSubscribe is the starter operation of NewStarter.
const OpSubscribe = "subscribe"

// consumerName reports whether name can be a durable consumer's name:
// durable names become subjects of the JetStream API.
func consumerName(name string) bool { return !strings.ContainsAny(name, ".*> \t\r\n/\\") }

// NewStarter implements the runtime's StarterSource (engine.StarterSource)
// for an orchestration's `starter: connector:` block: operation
// "subscribe" is a Subscriber whose params "consumer", "filter-subject"
// and "batch" override the settings consumer and filter-subject and the
// default batch of 16. It checks the params but does no I/O.
func (c *Conn) NewStarter(operation string, params map[string]any) (connectors.Starter, error) {
	if operation != OpSubscribe {
		return nil, connectors.UnknownStarter(Kind, operation, OpSubscribe)
	}
	s := c.Subscriber()
	p := connectors.NewStarterParams("natsconn: "+Kind, operation, params)
	s.consumer = p.String("consumer", s.consumer)
	s.filter = p.String("filter-subject", s.filter)
	s.batch = p.Int("batch", s.batch, 1)
	if _, ok := params["consumer"]; ok && !consumerName(s.consumer) {
		p.Fail("consumer", "%q is not a consumer name (no . * > / \\ or white space)", s.consumer)
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// Run implements connectors.Starter.
func (s *Subscriber) Run(ctx context.Context, start connectors.StartFunc) error {
	c := s.c
	cons, err := c.js.CreateOrUpdateConsumer(ctx, c.stream, jetstream.ConsumerConfig{
		Durable:       s.consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: s.filter,
		// The runtime commits a job in milliseconds; an unacked message is
		// redelivered after AckWait and recognised by its key.
		AckWait: 30 * time.Second,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("natsconn: consumer %q on %q: %w", s.consumer, c.stream, err)
	}
	for ctx.Err() == nil {
		b, err := cons.Fetch(s.batch, jetstream.FetchMaxWait(s.wait))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("natsconn: fetch from %q: %w", c.stream, err)
		}
		for m := range b.Messages() {
			s.handle(ctx, m, start)
		}
		if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			c.log.Warn("fetch ended with an error", zap.Error(err))
		}
	}
	return nil
}

func (s *Subscriber) handle(ctx context.Context, m jetstream.Msg, start connectors.StartFunc) {
	meta, err := m.Metadata()
	if err != nil {
		s.c.log.Warn("message without metadata", zap.Error(err))
		return
	}
	in := map[string]any{"subject": m.Subject(), "data": string(m.Data()), "sequence": int64(meta.Sequence.Stream)}
	var j any
	if json.Unmarshal(m.Data(), &j) == nil {
		in["json"] = j
	}
	hdr := map[string]any{}
	for k, v := range m.Headers() {
		if len(v) > 0 {
			hdr[k] = v[0]
		}
	}
	in["headers"] = hdr
	t := connectors.Trigger{Key: meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10), Input: in}
	if ctx.Err() != nil {
		return // leave it to redelivery
	}
	if err := start(ctx, t); err != nil {
		s.c.log.Warn("start refused; message will be redelivered", zap.String("key", t.Key), zap.Error(err))
		if err := m.NakWithDelay(time.Second); err != nil {
			s.c.log.Warn("nak failed", zap.Error(err))
		}
		return
	}
	actx, cancel := context.WithTimeout(context.Background(), s.c.timeout)
	defer cancel()
	if err := m.DoubleAck(actx); err != nil {
		// The job is committed; a redelivery carries the same key.
		s.c.log.Warn("ack failed; the message may be redelivered", zap.String("key", t.Key), zap.Error(err))
	}
}
