package httpconn

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
)

// sink is a real HTTP endpoint on loopback that counts effects (orders
// created) and, when honour is set, keeps the first response per
// Idempotency-Key and returns it for repeats.
type sink struct {
	mu      sync.Mutex
	honour  bool
	effects int
	seen    []*http.Request
	bodies  []string
	stored  map[string]string
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, r)
	s.bodies = append(s.bodies, string(b))
	key := r.Header.Get("Idempotency-Key")
	if s.honour && key != "" {
		if resp, ok := s.stored[key]; ok {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, resp)
			return
		}
	}
	s.effects++
	resp, _ := json.Marshal(map[string]any{"order": s.effects})
	if s.stored == nil {
		s.stored = map[string]string{}
	}
	s.stored[key] = string(resp)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write(resp)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func open(t *testing.T, s connectors.Settings) *Conn {
	t.Helper()
	c, err := Open(s, Options{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestReplayWithHonouringEndpointOneEffect(t *testing.T) {
	sk := &sink{honour: true}
	srv := httptest.NewServer(sk)
	defer srv.Close()
	c := open(t, connectors.Settings{"url": srv.URL + "/api", "honours-idempotency-key": "true"})
	if g := c.Guarantee("post"); g != connectors.ExactlyOnce {
		t.Fatalf("Guarantee(post) = %v", g)
	}
	req := connectors.Request{Operation: "post", Key: "job7/s1", Params: map[string]any{"path": "orders", "body": map[string]any{"item": "x"}}}
	var results []connectors.Result
	for range 2 {
		r, err := c.Invoke(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, r)
	}
	if sk.effects != 1 {
		t.Fatalf("effects = %d, want 1", sk.effects)
	}
	for i, r := range sk.seen {
		if r.Header.Get("Idempotency-Key") != "job7/s1" || r.URL.Path != "/api/orders" || r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("request %d: key %q path %q ctype %q", i, r.Header.Get("Idempotency-Key"), r.URL.Path, r.Header.Get("Content-Type"))
		}
		if sk.bodies[i] != `{"item":"x"}` {
			t.Fatalf("body %d = %q", i, sk.bodies[i])
		}
	}
	j0, _ := json.Marshal(results[0].Values["json"])
	j1, _ := json.Marshal(results[1].Values["json"])
	if string(j0) != `{"order":1}` || string(j0) != string(j1) {
		t.Fatalf("responses %s / %s", j0, j1)
	}
}

// Without the setting the connector declares what really happens: the
// repeat reaches the endpoint and has its effect again.
func TestNotHonouringIsAtLeastOnce(t *testing.T) {
	sk := &sink{}
	srv := httptest.NewServer(sk)
	defer srv.Close()
	c := open(t, connectors.Settings{"url": srv.URL})
	if g := c.Guarantee("post"); g != connectors.AtLeastOnce {
		t.Fatalf("Guarantee(post) = %v", g)
	}
	for range 2 {
		if _, err := c.Invoke(ctx(t), connectors.Request{Operation: "post", Key: "k", Params: map[string]any{"body": "hi"}}); err != nil {
			t.Fatal(err)
		}
	}
	if sk.effects != 2 || sk.seen[1].Header.Get("Idempotency-Key") != "k" {
		t.Fatalf("effects = %d", sk.effects)
	}
}

func TestAuthHeadersSentAndRedacted(t *testing.T) {
	sk := &sink{}
	srv := httptest.NewServer(sk)
	defer srv.Close()
	s := connectors.Settings{"url": srv.URL, "auth": "Bearer s3cr3t", "header-X-Api-Token": "tok99", "header-X-Tenant": "acme"}
	c := open(t, s)
	if _, err := c.Invoke(ctx(t), connectors.Request{Operation: "get", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	h := sk.seen[0].Header
	if h.Get("Authorization") != "Bearer s3cr3t" || h.Get("X-Api-Token") != "tok99" || h.Get("X-Tenant") != "acme" {
		t.Fatalf("headers = %v", h)
	}
	if str := s.String(); strings.Contains(str, "s3cr3t") || strings.Contains(str, "tok99") || !strings.Contains(str, "acme") {
		t.Fatalf("settings string %q", str)
	}
	c2 := open(t, connectors.Settings{"url": srv.URL, "user": "u", "password": "pw"})
	if _, err := c2.Invoke(ctx(t), connectors.Request{Operation: "delete", Key: "k2"}); err != nil {
		t.Fatal(err)
	}
	if u, p, ok := sk.seen[1].BasicAuth(); !ok || u != "u" || p != "pw" {
		t.Fatalf("basic auth %q %q %v", u, p, ok)
	}
}

func TestStatusClassification(t *testing.T) {
	code := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		io.WriteString(w, "endpoint says no")
	}))
	defer srv.Close()
	c := open(t, connectors.Settings{"url": srv.URL})
	for _, tc := range []struct {
		code      int
		permanent bool
	}{{400, true}, {401, true}, {404, true}, {409, false}, {429, false}, {500, false}, {503, false}} {
		code = tc.code
		_, err := c.Invoke(ctx(t), connectors.Request{Operation: "put", Key: "k"})
		if !errors.Is(err, ErrStatus) || connectors.IsPermanent(err) != tc.permanent || !strings.Contains(err.Error(), "endpoint says no") {
			t.Errorf("status %d: err = %v (permanent %v)", tc.code, err, connectors.IsPermanent(err))
		}
	}
}

func TestTimeoutIsRetryable(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	c := open(t, connectors.Settings{"url": srv.URL, "timeout": "200ms"})
	_, err := c.Invoke(ctx(t), connectors.Request{Operation: "post", Key: "k"})
	if err == nil || connectors.IsPermanent(err) {
		t.Fatalf("timeout: %v", err)
	}
	// The context's deadline is honoured too.
	c2 := open(t, connectors.Settings{"url": srv.URL})
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c2.Invoke(short, connectors.Request{Operation: "post", Key: "k"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
}

func TestTLSWithCAFile(t *testing.T) {
	sk := &sink{}
	srv := httptest.NewTLSServer(sk)
	defer srv.Close()
	// Without trusting the test CA the handshake fails.
	c0 := open(t, connectors.Settings{"url": srv.URL})
	if _, err := c0.Invoke(ctx(t), connectors.Request{Operation: "get"}); err == nil {
		t.Fatal("untrusted certificate accepted")
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	c := open(t, connectors.Settings{"url": srv.URL, "tls-ca-file": ca})
	if err := c.Test(ctx(t)); err != nil {
		t.Fatal(err)
	}
	r, err := c.Invoke(ctx(t), connectors.Request{Operation: "post", Key: "tls1", Params: map[string]any{"body": "x"}})
	if err != nil || r.Values["status"] != int64(201) {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestUnreachableAndBadSettings(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	c := open(t, connectors.Settings{"url": url})
	if err := c.Test(ctx(t)); err == nil || connectors.IsPermanent(err) {
		t.Fatalf("closed port: %v", err)
	}
	for _, tc := range []struct {
		s    connectors.Settings
		want string
	}{
		{connectors.Settings{}, `"url"`},
		{connectors.Settings{"url": "ftp://x"}, `"url"`},
		{connectors.Settings{"url": "http://x", "timeout": "fast"}, `"timeout"`},
		{connectors.Settings{"url": "http://x", "honours-idempotency-key": "si"}, `"honours-idempotency-key"`},
		{connectors.Settings{"url": "http://x", "tls-ca-file": "/nonexistent"}, `"tls-ca-file"`},
		{connectors.Settings{"url": "http://x", "tls-cert-file": "/a"}, `"tls-key-file"`},
	} {
		if _, err := Open(tc.s, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%v) = %v, want error naming %s", tc.s, err, tc.want)
		}
	}
	c2 := open(t, connectors.Settings{"url": "http://192.0.2.1"})
	for _, r := range []connectors.Request{
		{Operation: "fetch"},
		{Operation: "request"},
		{Operation: "post", Params: map[string]any{"query": "a=b"}},
		{Operation: "post", Params: map[string]any{"headers": []any{1}}},
	} {
		if _, err := c2.Invoke(ctx(t), r); err == nil || !connectors.IsPermanent(err) {
			t.Errorf("%+v: %v, want permanent", r, err)
		}
	}
}

func TestCustomDialIsUsed(t *testing.T) {
	sk := &sink{}
	srv := httptest.NewServer(sk)
	defer srv.Close()
	dialed := 0
	var d net.Dialer
	c, err := Open(connectors.Settings{"url": srv.URL}, Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed++
		return d.DialContext(ctx, network, addr)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Invoke(ctx(t), connectors.Request{Operation: "post", Key: "k"}); err != nil || dialed != 1 {
		t.Fatalf("dialed %d: %v", dialed, err)
	}
}
