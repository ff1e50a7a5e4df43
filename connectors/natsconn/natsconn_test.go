package natsconn

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

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// open connects to the local NATS (test/scripts/services.sh) and creates
// a stream of its own, deleted at the end.
func open(t *testing.T, window time.Duration, extra connectors.Settings) (*Conn, string) {
	t.Helper()
	testenv.SkipIfShort(t, "needs the local nats-server")
	b := make([]byte, 4)
	rand.Read(b)
	sfx := hex.EncodeToString(b)
	s := connectors.Settings{"url": "nats://127.0.0.1:4222", "stream": "TDT_" + sfx, "subject": "tdt." + sfx + ".out", "consumer": "c" + sfx, "timeout": "5s"}
	for k, v := range extra {
		s[k] = v
	}
	c, err := Open(s, Options{Name: t.Name()})
	if err != nil {
		testenv.Missing(t, "nats-server with JetStream on 127.0.0.1:4222 unreachable: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	_, err = c.JetStream().CreateStream(ctx(t), jetstream.StreamConfig{Name: s["stream"], Subjects: []string{"tdt." + sfx + ".>"}, Duplicates: window, Storage: jetstream.FileStorage})
	if err != nil {
		testenv.Missing(t, "JetStream not enabled on the local nats-server: %v", err)
	}
	t.Cleanup(func() { c.JetStream().DeleteStream(context.Background(), s["stream"]) })
	return c, s["stream"]
}

func TestPublishReplayOneMessage(t *testing.T) {
	c, stream := open(t, 2*time.Minute, nil)
	if err := c.Test(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if c.Guarantee("publish") != connectors.ExactlyOnce {
		t.Fatal("publish should be exactly-once")
	}
	req := connectors.Request{Operation: "publish", Key: "job1/s3", Params: map[string]any{"data": map[string]any{"order": 1}}}
	first, err := c.Invoke(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Invoke(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if first.Replayed || !second.Replayed || second.Values["sequence"] != first.Values["sequence"] {
		t.Fatalf("first %+v second %+v", first, second)
	}
	req.Key = "job1/s4"
	if r, err := c.Invoke(ctx(t), req); err != nil || r.Replayed {
		t.Fatalf("other key: %+v %v", r, err)
	}
	st, err := c.JetStream().Stream(ctx(t), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2", info.State.Msgs)
	}
	m, err := st.GetMsg(ctx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(jetstream.MsgIDHeader) != "job1/s3" || string(m.Data) != `{"order":1}` {
		t.Fatalf("stored %v %q", m.Header, m.Data)
	}
}

func TestConcurrentDuplicatePublishesOneMessage(t *testing.T) {
	c, stream := open(t, 2*time.Minute, nil)
	const N = 8
	var wg sync.WaitGroup
	fresh := make(chan bool, N)
	for range N {
		wg.Go(func() {
			r, err := c.Invoke(ctx(t), connectors.Request{Operation: "publish", Key: "dup", Params: map[string]any{"data": "x"}})
			if err != nil {
				t.Error(err)
				return
			}
			fresh <- !r.Replayed
		})
	}
	wg.Wait()
	close(fresh)
	n := 0
	for f := range fresh {
		if f {
			n++
		}
	}
	st, _ := c.JetStream().Stream(ctx(t), stream)
	info, err := st.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || info.State.Msgs != 1 {
		t.Fatalf("fresh publishes %d, stored %d; want 1 and 1", n, info.State.Msgs)
	}
}

func TestShortDuplicateWindowFailsTest(t *testing.T) {
	c, _ := open(t, 10*time.Second, nil)
	if err := c.Test(ctx(t)); !errors.Is(err, ErrWindow) || !connectors.IsPermanent(err) {
		t.Fatalf("Test = %v, want ErrWindow", err)
	}
}

func TestSubscriberAcksOnlyAfterStart(t *testing.T) {
	c, stream := open(t, 2*time.Minute, nil)
	for i := range 3 {
		if _, err := c.Invoke(ctx(t), connectors.Request{Operation: "publish", Key: fmt.Sprint("m", i), Params: map[string]any{"data": fmt.Sprint("body", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu       sync.Mutex
		attempts = map[string]int{}
		started  = map[string]string{}
		done     = make(chan struct{})
	)
	run, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- c.Subscriber().Run(run, func(_ context.Context, tr connectors.Trigger) error {
			mu.Lock()
			defer mu.Unlock()
			attempts[tr.Key]++
			// The runtime refuses the first delivery of body1 (WIP not
			// committed): it must come back with the same key.
			if tr.Input["data"] == "body1" && attempts[tr.Key] == 1 {
				return errors.New("not committed")
			}
			started[tr.Key] = tr.Input["data"].(string)
			if len(started) == 3 {
				close(done)
			}
			return nil
		})
	}()
	select {
	case <-done:
	case <-ctx(t).Done():
		t.Fatal("not all messages started")
	}
	// Wait for the last ack to be confirmed before stopping.
	cons, err := c.JetStream().Consumer(ctx(t), stream, c.consumer)
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := cons.Info(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending == 0 && info.NumPending == 0 {
			break
		}
		if err := clock.Sleep(ctx(t), clock.Real(), 10*time.Millisecond); err != nil {
			t.Fatalf("consumer still has %d unacked", info.NumAckPending)
		}
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	want := map[string]string{stream + ":1": "body0", stream + ":2": "body1", stream + ":3": "body2"}
	if fmt.Sprint(started) != fmt.Sprint(want) {
		t.Fatalf("started %v, want %v", started, want)
	}
	if attempts[stream+":2"] != 2 {
		t.Fatalf("refused message attempts = %d, want 2", attempts[stream+":2"])
	}
}

func TestBadSettings(t *testing.T) {
	for _, tc := range []struct {
		s    connectors.Settings
		want string
	}{
		{connectors.Settings{}, `"stream"`},
		{connectors.Settings{"stream": "S", "timeout": "x"}, `"timeout"`},
		{connectors.Settings{"stream": "S", "require-duplicate-window": "-1s"}, `"require-duplicate-window"`},
		{connectors.Settings{"stream": "S", "consumer": "billing.eu"}, `"consumer": "billing.eu" is not a consumer name`},
	} {
		if _, err := Open(tc.s, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%v) = %v", tc.s, err)
		}
	}
	c, _ := open(t, 2*time.Minute, nil)
	for _, r := range []connectors.Request{{Operation: "send", Key: "k"}, {Operation: "publish"}, {Operation: "publish", Key: "k", Params: map[string]any{"subject": 3}}} {
		if _, err := c.Invoke(ctx(t), r); err == nil || !connectors.IsPermanent(err) {
			t.Errorf("%+v: %v", r, err)
		}
	}
}
