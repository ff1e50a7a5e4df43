package amqpconn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/testenv"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// open connects to the local RabbitMQ (test/scripts/services.sh) and
// declares a queue of its own, deleted at the end.
func open(t *testing.T) (*Conn, string) {
	t.Helper()
	testenv.SkipIfShort(t, "needs the local rabbitmq-server")
	b := make([]byte, 4)
	rand.Read(b)
	q := "tdt_" + hex.EncodeToString(b)
	s := connectors.Settings{"host": "127.0.0.1", "user": "guest", "password": "guest", "routing-key": q, "queue": q, "timeout": "5s"}
	c, err := Open(s, Options{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	conn, err := c.dial()
	if err != nil {
		testenv.Missing(t, "rabbitmq on 127.0.0.1:5672 unreachable: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.QueueDelete(q, false, false, false) })
	return c, q
}

// get takes every message now in q (auto-ack).
func get(t *testing.T, c *Conn, q string) []amqp.Delivery {
	conn, err := c.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var out []amqp.Delivery
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

// The repeat reaches the broker (at-least-once, declared), with the same
// message-id, so the Subscriber gives both copies the same trigger key:
// the runtime starts one job.
func TestReplaySameMessageIDOneTriggerKey(t *testing.T) {
	c, q := open(t)
	if c.Guarantee("publish") != connectors.AtLeastOnce {
		t.Fatal("publish must declare at-least-once")
	}
	req := connectors.Request{Operation: "publish", Key: "job9/s1", Params: map[string]any{"data": map[string]any{"n": 1}}}
	for range 2 {
		if _, err := c.Invoke(ctx(t), req); err != nil {
			t.Fatal(err)
		}
	}
	keys := map[string]int{}
	run, stop := context.WithCancel(context.Background())
	got := make(chan struct{}, 2)
	done := make(chan error, 1)
	go func() {
		done <- c.Subscriber().Run(run, func(_ context.Context, tr connectors.Trigger) error {
			keys[tr.Key]++
			if tr.Input["data"] != `{"n":1}` || tr.Input["message_id"] != "job9/s1" {
				t.Errorf("input %v", tr.Input)
			}
			got <- struct{}{}
			return nil
		})
	}()
	for range 2 {
		select {
		case <-got:
		case <-ctx(t).Done():
			t.Fatal("messages not delivered")
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[q+":job9/s1"] != 2 {
		t.Fatalf("trigger keys %v, want one key seen twice", keys)
	}
}

func TestPublishConfirmedWithMessageID(t *testing.T) {
	c, q := open(t)
	if err := c.Test(ctx(t)); err != nil {
		t.Fatal(err)
	}
	r, err := c.Invoke(ctx(t), connectors.Request{Operation: "publish", Key: "k1", Params: map[string]any{"data": "hello", "headers": map[string]any{"x": 1}}})
	if err != nil || r.Values["message_id"] != "k1" {
		t.Fatalf("%+v %v", r, err)
	}
	ds := get(t, c, q)
	if len(ds) != 1 || ds[0].MessageId != "k1" || string(ds[0].Body) != "hello" || ds[0].DeliveryMode != amqp.Persistent || ds[0].Headers["x"] != "1" {
		t.Fatalf("queue holds %+v", ds)
	}
}

func TestUnroutableIsAnError(t *testing.T) {
	c, _ := open(t)
	_, err := c.Invoke(ctx(t), connectors.Request{Operation: "publish", Key: "k", Params: map[string]any{"routing-key": "tdt_no_such_queue"}})
	if !errors.Is(err, ErrUnroutable) || !connectors.IsPermanent(err) {
		t.Fatalf("err = %v", err)
	}
	// The channel still works afterwards.
	if _, err := c.Invoke(ctx(t), connectors.Request{Operation: "publish", Key: "k2"}); err != nil {
		t.Fatal(err)
	}
}

func TestSubscriberRequeuesRefusedStart(t *testing.T) {
	c, q := open(t)
	for i := range 3 {
		if _, err := c.Invoke(ctx(t), connectors.Request{Operation: "publish", Key: fmt.Sprint("m", i), Params: map[string]any{"data": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	attempts := map[string]int{}
	started := map[string]bool{}
	all := make(chan struct{})
	run, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Subscriber().Run(run, func(_ context.Context, tr connectors.Trigger) error {
			mu.Lock()
			defer mu.Unlock()
			attempts[tr.Key]++
			if tr.Key == q+":m1" && attempts[tr.Key] == 1 {
				return errors.New("wip refused")
			}
			started[tr.Key] = true
			if len(started) == 3 {
				close(all)
			}
			return nil
		})
	}()
	select {
	case <-all:
	case <-ctx(t).Done():
		t.Fatal("not all started")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if attempts[q+":m1"] != 2 {
		t.Fatalf("attempts %v", attempts)
	}
	// Everything started was acked: nothing left (Run's connection is
	// closed, so unacked deliveries would be back in the queue).
	if left := get(t, c, q); len(left) != 0 {
		t.Fatalf("%d messages left in the queue", len(left))
	}
}

func TestBadCredentialsAndSettings(t *testing.T) {
	open(t) // skips when the broker is missing
	c, err := Open(connectors.Settings{"user": "guest", "password": "wrong-pass"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Test(ctx(t))
	if err == nil || !connectors.IsPermanent(err) || strings.Contains(err.Error(), "wrong-pass") {
		t.Fatalf("bad password: %v", err)
	}
	for _, tc := range []struct {
		s    connectors.Settings
		want string
	}{
		{connectors.Settings{"dsn": "http://x"}, `"dsn"`},
		{connectors.Settings{"port": "x"}, `"port"`},
		{connectors.Settings{"timeout": "0s"}, `"timeout"`},
		{connectors.Settings{"prefetch": "-1"}, `"prefetch"`},
	} {
		if _, err := Open(tc.s, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%v) = %v", tc.s, err)
		}
	}
}
