// Package amqpconn is the AMQP 0-9-1 connector for RabbitMQ (kind "amqp"):
// publish with publisher confirms and message-id = the activity's key, and
// a consumer starter that acks a delivery only after its job is committed.
//
// # Guarantee
//
// "publish" is AtLeastOnce, declared: RabbitMQ has no publisher-side
// deduplication, so a repeat after a failover (the first publish was
// confirmed but the job had not recorded it) enqueues the message again.
// Both copies carry the same message-id, so a consumer that deduplicates
// on message-id (this package's Subscriber maps it to Trigger.Key, and the
// runtime starts one job per key) sees one effect; any other consumer may
// see two. A publish returns only after the broker confirmed it (the
// message is in every queue it routes to, persisted if durable);
// publishes are mandatory, so an unroutable message is an error, not a
// silent drop.
//
// # Operations
//
//	publish  exchange (default: setting exchange), routing-key (default:
//	         setting routing-key), data (string as is, anything else JSON),
//	         headers (object), content-type
//	         -> Values{"exchange", "routing_key", "message_id"}
//
// # Starter
//
// NewStarter (the runtime's engine.StarterSource) has one operation, for
// an orchestration's `starter: connector:` block:
//
//	consume  queue (string, default: setting queue; one of them is
//	         required), prefetch (whole number >= 1, default: setting
//	         prefetch)
//
//	starter: {connector: {connection: mq, operation: consume, params: {queue: orders}}}
//
// It is a Subscriber (Conn.Subscriber): it consumes the queue with manual
// acks and prefetch. Trigger.Key = "<queue>:<message-id>" (a message
// without message-id is keyed by the SHA-256 of its body: publishers
// should set message-id), with the variables data (string), json (data
// parsed, when it is JSON), message_id, routing_key, exchange, headers and
// redelivered; Ack after StartFunc returned nil, Nack with requeue
// otherwise.
//
// # Settings
//
//	host, port      default 127.0.0.1, 5672
//	user, password  default guest / guest (password redacted)
//	vhost           default /
//	dsn             full amqp:// URL instead of the parts (redacted)
//	exchange, routing-key  publish defaults
//	queue           Subscriber's queue (the consume starter's default)
//	prefetch        default 16 (the consume starter's default)
//	timeout         dial and confirm timeout, default 10s
//
// # Goroutines
//
// amqp091-go owns its connection reader and heartbeat goroutines, stopped
// by Close. Subscriber.Run runs on its caller's goroutine.
package amqpconn

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
)

// Kind is the connector kind.
const Kind = "amqp"

// Errors.
var (
	ErrSetting    = errors.New("amqpconn: bad setting")
	ErrParam      = errors.New("amqpconn: bad parameter")
	ErrNacked     = errors.New("amqpconn: broker refused the message (nack)")
	ErrUnroutable = errors.New("amqpconn: message routed to no queue")
)

// Register adds kind "amqp" to r.
func Register(r *connectors.Registry) {
	r.Register(Kind, func(name string, s connectors.Settings) (connectors.Connector, error) {
		return Open(s, Options{Name: name})
	})
}

// Options are the parts of a Conn that are not settings.
type Options struct {
	Name   string
	Logger *zap.Logger
}

// Conn is a RabbitMQ endpoint. It implements connectors.Connector.
type Conn struct {
	url        string
	exchange   string
	routingKey string
	queue      string
	prefetch   int
	timeout    time.Duration
	log        *zap.Logger

	// mu serialises publishes on the one confirm-mode channel, so a
	// returned (unroutable) message is matched to its publish.
	mu      sync.Mutex
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
}

var _ connectors.Connector = (*Conn)(nil)

// Open validates s; it connects on first use (Test, Invoke, Run).
func Open(s connectors.Settings, o Options) (*Conn, error) {
	c := &Conn{exchange: s["exchange"], routingKey: s["routing-key"], queue: s["queue"], prefetch: 16, timeout: 10 * time.Second}
	if dsn := s["dsn"]; dsn != "" {
		u, err := url.Parse(dsn)
		if err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") {
			return nil, fmt.Errorf("%w \"dsn\": not an amqp:// URL", ErrSetting)
		}
		c.url = dsn
	} else {
		user, pw := s["user"], s["password"]
		if user == "" {
			user, pw = "guest", "guest"
		}
		host, port := s["host"], s["port"]
		if host == "" {
			host = "127.0.0.1"
		}
		if port == "" {
			port = "5672"
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return nil, fmt.Errorf("%w \"port\": %q", ErrSetting, port)
		}
		u := url.URL{Scheme: "amqp", User: url.UserPassword(user, pw), Host: net.JoinHostPort(host, port), Path: "/"}
		if v := s["vhost"]; v != "" && v != "/" {
			u.Path = "/" + v
		}
		c.url = u.String()
	}
	if v := s["timeout"]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w \"timeout\": %q is not a positive duration", ErrSetting, v)
		}
		c.timeout = d
	}
	if v := s["prefetch"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%w \"prefetch\": %q is not a positive count", ErrSetting, v)
		}
		c.prefetch = n
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c.log = log.Named("amqpconn").With(zap.String("connection", o.Name))
	return c, nil
}

func (c *Conn) dial() (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(c.url, amqp.Config{Dial: amqp.DefaultDial(c.timeout), Heartbeat: 10 * time.Second})
	if err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && (ae.Code == amqp.AccessRefused || ae.Code == amqp.NotAllowed) {
			err = connectors.Permanent(err)
		}
		return nil, fmt.Errorf("amqpconn: connect: %w", err) // the URL holds the password: never print it
	}
	return conn, nil
}

// channel returns the publish channel, reopening it after a failure.
// Called with c.mu held.
func (c *Conn) channel() (*amqp.Channel, error) {
	if c.ch != nil && !c.ch.IsClosed() {
		return c.ch, nil
	}
	if c.conn == nil || c.conn.IsClosed() {
		conn, err := c.dial()
		if err != nil {
			return nil, err
		}
		c.conn = conn
	}
	ch, err := c.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqpconn: channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, fmt.Errorf("amqpconn: confirm mode: %w", err)
	}
	c.returns = ch.NotifyReturn(make(chan amqp.Return, 1))
	c.ch = ch
	return ch, nil
}

// Kind implements connectors.Connector.
func (c *Conn) Kind() string { return Kind }

// Guarantee implements connectors.Connector: always AtLeastOnce (see the
// package doc).
func (c *Conn) Guarantee(string) connectors.Guarantee { return connectors.AtLeastOnce }

// Test implements connectors.Connector: connects, and checks the queue
// exists when one is set.
func (c *Conn) Test(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.channel(); err != nil {
		return err
	}
	if c.queue == "" {
		return nil
	}
	ch, err := c.conn.Channel()
	if err != nil {
		return fmt.Errorf("amqpconn: channel: %w", err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclarePassive(c.queue, true, false, false, false, nil); err != nil {
		return connectors.Permanent(fmt.Errorf("amqpconn: queue %q: %w", c.queue, err))
	}
	return nil
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && !c.conn.IsClosed() {
		return c.conn.Close()
	}
	return nil
}

// Invoke implements connectors.Connector.
func (c *Conn) Invoke(ctx context.Context, r connectors.Request) (connectors.Result, error) {
	if r.Operation != "publish" {
		return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w: %q (amqp has publish)", connectors.ErrUnknownOperation, r.Operation))
	}
	str := func(name, def string) (string, error) {
		v, ok := r.Params[name]
		if !ok {
			return def, nil
		}
		s, ok := v.(string)
		if !ok {
			return "", connectors.Permanent(fmt.Errorf("%w %q: a string is required, got %T", ErrParam, name, v))
		}
		return s, nil
	}
	exchange, err := str("exchange", c.exchange)
	if err != nil {
		return connectors.Result{}, err
	}
	rk, err := str("routing-key", c.routingKey)
	if err != nil {
		return connectors.Result{}, err
	}
	if r.Key == "" {
		return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w: publish needs an idempotency key", ErrParam))
	}
	msg := amqp.Publishing{MessageId: r.Key, DeliveryMode: amqp.Persistent, Headers: amqp.Table{}}
	ctype, err := str("content-type", "")
	if err != nil {
		return connectors.Result{}, err
	}
	switch d := r.Params["data"].(type) {
	case nil:
	case string:
		msg.Body = []byte(d)
	case []byte:
		msg.Body = d
	default:
		b, err := json.Marshal(d)
		if err != nil {
			return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w \"data\": %w", ErrParam, err))
		}
		msg.Body = b
		if ctype == "" {
			ctype = "application/json"
		}
	}
	msg.ContentType = ctype
	if h, ok := r.Params["headers"]; ok {
		m, ok := h.(map[string]any)
		if !ok {
			return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w \"headers\": an object is required, got %T", ErrParam, h))
		}
		for k, v := range m {
			msg.Headers[k] = fmt.Sprint(v)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	c.mu.Lock()
	defer c.mu.Unlock()
	ch, err := c.channel()
	if err != nil {
		return connectors.Result{}, err
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, rk, true, false, msg)
	if err != nil {
		return connectors.Result{}, fmt.Errorf("amqpconn: publish to %q/%q: %w", exchange, rk, err)
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		// The confirm may still come; this channel's state is unknown now.
		ch.Close()
		return connectors.Result{}, fmt.Errorf("amqpconn: confirm of %q: %w", r.Key, err)
	}
	// The broker sends basic.return before the confirm of the same
	// message, and the client delivers it first: it is here if any.
	// Draining it every time also keeps the client's reader from blocking
	// on a full returns channel.
	select {
	case ret := <-c.returns:
		if ret.MessageId == r.Key {
			return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w: exchange %q routing key %q: %s", ErrUnroutable, exchange, rk, ret.ReplyText))
		}
	default:
	}
	if !acked {
		return connectors.Result{}, fmt.Errorf("%w: %q", ErrNacked, r.Key)
	}
	return connectors.Result{Values: map[string]any{"exchange": exchange, "routing_key": rk, "message_id": r.Key}}, nil
}

// Subscriber is the AMQP starter. It implements connectors.Starter.
type Subscriber struct {
	c        *Conn
	queue    string
	prefetch int
}

var _ connectors.Starter = (*Subscriber)(nil)

// Subscriber returns the starter consuming c's queue setting.
func (c *Conn) Subscriber() *Subscriber {
	return &Subscriber{c: c, queue: c.queue, prefetch: c.prefetch}
}

// OpConsume is the starter operation of NewStarter.
const OpConsume = "consume"

// NewStarter implements the runtime's StarterSource (engine.StarterSource)
// for an orchestration's `starter: connector:` block: operation "consume"
// is a Subscriber of param "queue" (default: setting queue; one of them is
// required) with "prefetch" (default: setting prefetch). It checks the
// params but does no I/O: a missing queue fails the subscriber's Run.
func (c *Conn) NewStarter(operation string, params map[string]any) (connectors.Starter, error) {
	if operation != OpConsume {
		return nil, connectors.UnknownStarter(Kind, operation, OpConsume)
	}
	s := c.Subscriber()
	p := connectors.NewStarterParams("amqpconn: "+Kind, operation, params)
	s.queue = p.String("queue", s.queue)
	s.prefetch = p.Int("prefetch", s.prefetch, 1)
	if _, ok := params["queue"]; !ok && s.queue == "" {
		p.Fail("queue", "required (the connection has no queue setting)")
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// Run implements connectors.Starter. It returns nil when ctx ends and an
// error when the connection or channel closes (the runtime restarts it).
func (s *Subscriber) Run(ctx context.Context, start connectors.StartFunc) error {
	c := s.c
	if s.queue == "" {
		return connectors.Permanent(fmt.Errorf("%w \"queue\": required by the subscriber", ErrSetting))
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqpconn: channel: %w", err)
	}
	if err := ch.Qos(s.prefetch, 0, false); err != nil {
		return fmt.Errorf("amqpconn: qos: %w", err)
	}
	deliveries, err := ch.ConsumeWithContext(ctx, s.queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("amqpconn: consume %q: %w", s.queue, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("amqpconn: consumer of %q closed", s.queue)
			}
			s.handle(ctx, d, start)
		}
	}
}

func (s *Subscriber) handle(ctx context.Context, d amqp.Delivery, start connectors.StartFunc) {
	id := d.MessageId
	if id == "" {
		sum := sha256.Sum256(d.Body)
		id = "sha256:" + hex.EncodeToString(sum[:])
	}
	in := map[string]any{"data": string(d.Body), "message_id": d.MessageId, "routing_key": d.RoutingKey, "exchange": d.Exchange, "redelivered": d.Redelivered}
	var j any
	if json.Unmarshal(d.Body, &j) == nil {
		in["json"] = j
	}
	hdr := map[string]any{}
	for k, v := range d.Headers {
		hdr[k] = fmt.Sprint(v)
	}
	in["headers"] = hdr
	t := connectors.Trigger{Key: s.queue + ":" + id, Input: in}
	if err := start(ctx, t); err != nil {
		s.c.log.Warn("start refused; message requeued", zap.String("key", t.Key), zap.Error(err))
		if err := d.Nack(false, true); err != nil {
			s.c.log.Warn("nack failed", zap.Error(err))
		}
		return
	}
	if err := d.Ack(false); err != nil {
		// The job is committed; the requeued copy carries the same key.
		s.c.log.Warn("ack failed; the message may be redelivered", zap.String("key", t.Key), zap.Error(err))
	}
}
