// Package httpconn is the HTTP connector (kind "http"): it invokes an HTTP
// endpoint with the activity's idempotency key in the Idempotency-Key
// header (IETF draft-ietf-httpapi-idempotency-key-header), sent as the raw
// key (the form most endpoints, Stripe's among them, accept) rather than
// the draft's quoted structured-field string.
//
// # Guarantee
//
// The connector cannot stop a repeated request from reaching the endpoint:
// after a failover the resumed job sends it again with the same key. Only
// an endpoint that honours Idempotency-Key (stores the first response under
// the key and returns it for a repeat) turns that into one effect, so every
// operation is AtLeastOnce unless the setting honours-idempotency-key is
// true, which makes post, put, patch and delete ExactlyOnce. get and head
// are AtLeastOnce always (they should have no effect).
//
// # Operations
//
//	get, head, post, put, patch, delete
//	request   with Params["method"]
//
// Params: path (appended to the url setting), query (object), headers
// (object), body (a string is sent as is; anything else as JSON),
// content-type. Values: status (int64), headers (object of first values),
// body (string), json (the decoded body when the response is JSON).
//
// Status: 2xx and 3xx succeed. 408, 409 (a concurrent request with the same
// key is in progress), 425, 429 and 5xx are retryable errors; other 4xx are
// Permanent. Errors carry the endpoint's status line and the start of its
// body.
//
// # Settings
//
//	url                      base URL, required (http or https)
//	timeout                  per attempt, default 30s (the context's deadline wins if sooner)
//	honours-idempotency-key  default false
//	auth                     value of the Authorization header (redacted)
//	user, password           basic auth, if auth is not set (password redacted)
//	header-<Name>            an extra request header (redacted when its name says secret/token...)
//	tls-ca-file              PEM CA bundle to trust instead of the system's
//	tls-cert-file, tls-key-file  client certificate
//	tls-server-name          name to verify instead of the URL's host
//	tls-insecure-skip-verify true disables verification (tests only)
//	max-body                 response bytes kept, default 1 MiB
//
// # Goroutines
//
// None of its own; net/http's transport owns its connection goroutines,
// released by Close (CloseIdleConnections).
package httpconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
)

// Kind is the connector kind.
const Kind = "http"

// Errors.
var (
	ErrSetting = errors.New("httpconn: bad setting")
	ErrParam   = errors.New("httpconn: bad parameter")
	ErrStatus  = errors.New("httpconn: endpoint answered with an error status")
)

// Register adds kind "http" to r.
func Register(r *connectors.Registry) {
	r.Register(Kind, func(name string, s connectors.Settings) (connectors.Connector, error) {
		return Open(s, Options{Name: name})
	})
}

// Options are the parts of a Conn that are not settings.
type Options struct {
	Name   string
	Logger *zap.Logger
	// Dial, if set, opens the connections (lab tests pass a dialer whose
	// sockets live in a network namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Conn is an HTTP endpoint. It implements connectors.Connector.
type Conn struct {
	base     *url.URL
	client   *http.Client
	honours  bool
	headers  http.Header
	user     string
	password string
	maxBody  int64
	log      *zap.Logger
}

var _ connectors.Connector = (*Conn)(nil)

// Open validates s and builds the client; it does not reach the endpoint.
func Open(s connectors.Settings, o Options) (*Conn, error) {
	raw, err := s.Require("url")
	if err != nil {
		return nil, err
	}
	base, err := url.Parse(raw)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("%w \"url\": %q is not an http(s) URL", ErrSetting, raw)
	}
	c := &Conn{base: base, headers: http.Header{}, maxBody: 1 << 20}
	timeout := 30 * time.Second
	if v := s["timeout"]; v != "" {
		if timeout, err = time.ParseDuration(v); err != nil || timeout <= 0 {
			return nil, fmt.Errorf("%w \"timeout\": %q is not a positive duration", ErrSetting, v)
		}
	}
	if v := s["honours-idempotency-key"]; v != "" {
		if c.honours, err = strconv.ParseBool(v); err != nil {
			return nil, fmt.Errorf("%w \"honours-idempotency-key\": %q is not true or false", ErrSetting, v)
		}
	}
	if v := s["max-body"]; v != "" {
		if c.maxBody, err = strconv.ParseInt(v, 10, 64); err != nil || c.maxBody <= 0 {
			return nil, fmt.Errorf("%w \"max-body\": %q is not a positive byte count", ErrSetting, v)
		}
	}
	for k, v := range s {
		if name, ok := strings.CutPrefix(k, "header-"); ok && name != "" {
			c.headers.Set(name, v)
		}
	}
	if v := s["auth"]; v != "" {
		c.headers.Set("Authorization", v)
	} else if v := s["authorization"]; v != "" {
		c.headers.Set("Authorization", v)
	} else if u := s["user"]; u != "" {
		c.user, c.password = u, s["password"]
	}
	tlsConf, err := tlsConfig(s)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	tr.Proxy = nil // an appliance talks to its endpoints directly
	if o.Dial != nil {
		tr.DialContext = o.Dial
	}
	c.client = &http.Client{
		Transport: tr,
		Timeout:   timeout,
		// A redirect would re-send the body elsewhere; the activity sees it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c.log = log.Named("httpconn").With(zap.String("connection", o.Name))
	return c, nil
}

func tlsConfig(s connectors.Settings) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s["tls-server-name"]}
	if f := s["tls-ca-file"]; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w \"tls-ca-file\": %w", ErrSetting, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w \"tls-ca-file\": %s holds no PEM certificate", ErrSetting, f)
		}
		conf.RootCAs = pool
	}
	cert, key := s["tls-cert-file"], s["tls-key-file"]
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("%w \"tls-cert-file\"/\"tls-key-file\": give both or neither", ErrSetting)
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%w \"tls-cert-file\": %w", ErrSetting, err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	if v := s["tls-insecure-skip-verify"]; v != "" {
		skip, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%w \"tls-insecure-skip-verify\": %q is not true or false", ErrSetting, v)
		}
		conf.InsecureSkipVerify = skip
	}
	return conf, nil
}

// Kind implements connectors.Connector.
func (c *Conn) Kind() string { return Kind }

// Guarantee implements connectors.Connector.
func (c *Conn) Guarantee(op string) connectors.Guarantee {
	switch op {
	case "post", "put", "patch", "delete", "request":
		if c.honours {
			return connectors.ExactlyOnce
		}
	}
	return connectors.AtLeastOnce
}

// Test implements connectors.Connector: any HTTP answer from the base URL
// (even 404 or 405) proves the endpoint is reachable and TLS is right.
func (c *Conn) Test(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.base.String(), nil)
	if err != nil {
		return connectors.Permanent(fmt.Errorf("httpconn: test: %w", err))
	}
	c.authorize(req)
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("httpconn: test %s: %w", c.base.Redacted(), err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return connectors.Permanent(fmt.Errorf("%w: test %s: %s", ErrStatus, c.base.Redacted(), resp.Status))
	}
	return nil
}

// Close releases idle connections.
func (c *Conn) Close() error {
	c.client.CloseIdleConnections()
	return nil
}

func (c *Conn) authorize(req *http.Request) {
	for k, v := range c.headers {
		req.Header[k] = v
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
}

// Invoke implements connectors.Connector.
func (c *Conn) Invoke(ctx context.Context, r connectors.Request) (connectors.Result, error) {
	req, err := c.build(ctx, r)
	if err != nil {
		return connectors.Result{}, connectors.Permanent(err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		// Connection refused, reset, timeout: the request may or may not
		// have reached the endpoint; retrying is the at-least-once part.
		return connectors.Result{}, fmt.Errorf("httpconn: %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBody))
	if err != nil {
		return connectors.Result{}, fmt.Errorf("httpconn: %s %s: read body: %w", req.Method, req.URL.Redacted(), err)
	}
	if resp.StatusCode >= 400 {
		err := fmt.Errorf("%w: %s %s: %s: %s", ErrStatus, req.Method, req.URL.Redacted(), resp.Status, snippet(body))
		switch {
		case resp.StatusCode >= 500, resp.StatusCode == 408, resp.StatusCode == 409, resp.StatusCode == 425, resp.StatusCode == 429:
			return connectors.Result{}, err
		}
		return connectors.Result{}, connectors.Permanent(err)
	}
	hdr := map[string]any{}
	for k, v := range resp.Header {
		if len(v) > 0 {
			hdr[k] = v[0]
		}
	}
	vals := map[string]any{"status": int64(resp.StatusCode), "headers": hdr, "body": string(body)}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" || strings.HasSuffix(mt, "+json") {
		var j any
		if json.Unmarshal(body, &j) == nil {
			vals["json"] = j
		}
	}
	c.log.Debug("invoked", zap.String("method", req.Method), zap.String("url", req.URL.Redacted()), zap.Int("status", resp.StatusCode), zap.String("key", r.Key))
	return connectors.Result{Values: vals}, nil
}

func snippet(b []byte) string {
	const n = 200
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

func (c *Conn) build(ctx context.Context, r connectors.Request) (*http.Request, error) {
	method := strings.ToUpper(r.Operation)
	switch r.Operation {
	case "get", "head", "post", "put", "patch", "delete":
	case "request":
		m, _ := r.Params["method"].(string)
		if m == "" {
			return nil, fmt.Errorf("%w \"method\" of request: a non-empty string is required", ErrParam)
		}
		method = strings.ToUpper(m)
	default:
		return nil, fmt.Errorf("%w: %q (http has get, head, post, put, patch, delete, request)", connectors.ErrUnknownOperation, r.Operation)
	}
	u := *c.base
	if p, ok := r.Params["path"]; ok {
		ps, ok := p.(string)
		if !ok {
			return nil, fmt.Errorf("%w \"path\": a string is required, got %T", ErrParam, p)
		}
		ref, err := url.Parse(ps)
		if err != nil {
			return nil, fmt.Errorf("%w \"path\": %w", ErrParam, err)
		}
		u.Path = strings.TrimSuffix(u.Path, "/") + "/" + strings.TrimPrefix(ref.Path, "/")
		if ref.RawQuery != "" {
			u.RawQuery = ref.RawQuery
		}
	}
	if q, ok := r.Params["query"]; ok {
		m, ok := q.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w \"query\": an object is required, got %T", ErrParam, q)
		}
		vals := u.Query()
		for k, v := range m {
			vals.Set(k, fmt.Sprint(v))
		}
		u.RawQuery = vals.Encode()
	}
	var body io.Reader
	ctype, _ := r.Params["content-type"].(string)
	switch b := r.Params["body"].(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
		if ctype == "" {
			ctype = "text/plain; charset=utf-8"
		}
	case []byte:
		body = bytes.NewReader(b)
		if ctype == "" {
			ctype = "application/octet-stream"
		}
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("%w \"body\": not JSON-encodable: %w", ErrParam, err)
		}
		body = bytes.NewReader(j)
		if ctype == "" {
			ctype = "application/json"
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrParam, err)
	}
	c.authorize(req)
	if h, ok := r.Params["headers"]; ok {
		m, ok := h.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w \"headers\": an object is required, got %T", ErrParam, h)
		}
		for k, v := range m {
			req.Header.Set(k, fmt.Sprint(v))
		}
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if r.Key != "" {
		req.Header.Set("Idempotency-Key", r.Key)
	}
	return req, nil
}
