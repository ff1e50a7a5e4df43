package pairlab

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
)

// Sink is an HTTP endpoint on a lab host (the client, usually) that counts
// the calls it receives by a key: what the HTTP connector delivered, for
// the at-least-once figures of the e2e tests and the chaos run. A body
// that is a whole number of milliseconds makes the call take that long.
type Sink struct {
	key   SinkKey
	mu    sync.Mutex
	calls map[string]int
	from  map[string][]string // the sending address of each call, by key
	srv   *http.Server
	done  chan struct{}
}

// SinkKey picks what a call is counted under.
type SinkKey func(r *http.Request, body []byte) string

// ByIdempotencyKey counts calls by their Idempotency-Key header.
func ByIdempotencyKey(r *http.Request, _ []byte) string { return r.Header.Get("Idempotency-Key") }

// ByBody counts calls by their body, a JSON string's quotes removed.
func ByBody(_ *http.Request, b []byte) string {
	return strings.Trim(strings.TrimSpace(string(b)), `"`)
}

// StartSink listens on h's LAN address and port until Close.
func StartSink(h *lab.Host, port int, key SinkKey) (*Sink, error) {
	s := &Sink{key: key, calls: map[string]int{}, from: map[string][]string{}, done: make(chan struct{})}
	var ln net.Listener
	if err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", h.LAN4, port))
		return err
	}); err != nil {
		return nil, err
	}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		k := s.key(r, b)
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		s.mu.Lock()
		s.calls[k]++
		s.from[k] = append(s.from[k], host)
		s.mu.Unlock()
		if ms, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && ms > 0 {
			clock.Sleep(r.Context(), clock.Real(), time.Duration(ms)*time.Millisecond)
		}
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"ok":true}`)
	})}
	go func() { defer close(s.done); s.srv.Serve(ln) }()
	return s, nil
}

// Snapshot returns the calls counted so far, by key.
func (s *Sink) Snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

// Repeats splits the repeated calls (beyond each key's first) into those
// from the address the first came from (the connector's own retry of a
// call whose answer it did not get) and those from another (the job
// resumed on the other node after a failover).
func (s *Sink) Repeats() (sameSender, otherSender int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.from {
		for _, h := range f[1:] {
			if h == f[0] {
				sameSender++
			} else {
				otherSender++
			}
		}
	}
	return sameSender, otherSender
}

// Total is the number of calls so far.
func (s *Sink) Total() int {
	n := 0
	for _, v := range s.Snapshot() {
		n += v
	}
	return n
}

// Close stops the server and waits for its goroutine.
func (s *Sink) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}
