package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"go.uber.org/zap"
)

// Sentinel errors a Backend returns to choose the HTTP status.
var (
	// ErrConflict: the action does not apply in the current state (409).
	ErrConflict = errors.New("api: not applicable now")
	// ErrUnavailable: the daemon is starting or stopping (503).
	ErrUnavailable = errors.New("api: unavailable")
	// ErrBadRequest: the request is malformed; the message names the field (400).
	ErrBadRequest = errors.New("api: bad request")
	// ErrNotFound: the named object does not exist (404).
	ErrNotFound = errors.New("api: not found")
)

// Backend is what the daemon provides to the API.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	Events(ctx context.Context, after uint64) ([]Event, error)
	Switchover(ctx context.Context) (ActionResult, error)
	Maintenance(ctx context.Context, on bool) (ActionResult, error)
	ForcePromote(ctx context.Context, acknowledgeDataLoss bool) (ActionResult, error)
	// AckAlarm clears a latched alarm: ErrNotFound when it is not raised,
	// ErrConflict when it is a condition alarm (it clears by itself).
	AckAlarm(ctx context.Context, id string) (ActionResult, error)
}

// Server routes the API to a Backend. Further routes (deployments, jobs,
// connectors) are added with Handle before serving.
type Server struct {
	mux *http.ServeMux
	log *zap.Logger
}

// NewServer returns a Server for b.
func NewServer(b Backend, log *zap.Logger) *Server {
	s := &Server{mux: http.NewServeMux(), log: log}
	s.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Status(r.Context())
		s.reply(w, r, st, err)
	})
	s.mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		var after uint64
		if v := r.URL.Query().Get("after"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				s.reply(w, r, nil, fmt.Errorf("%w: after=%q is not a sequence number", ErrBadRequest, v))
				return
			}
			after = n
		}
		evs, err := b.Events(r.Context(), after)
		s.reply(w, r, evs, err)
	})
	s.mux.HandleFunc("POST /v1/admin/switchover", func(w http.ResponseWriter, r *http.Request) {
		if err := DecodeBody(r, &struct{}{}); err != nil {
			s.reply(w, r, nil, err)
			return
		}
		res, err := b.Switchover(r.Context())
		s.reply(w, r, res, err)
	})
	s.mux.HandleFunc("POST /v1/admin/maintenance", func(w http.ResponseWriter, r *http.Request) {
		var req MaintenanceRequest
		if err := DecodeBody(r, &req); err != nil {
			s.reply(w, r, nil, err)
			return
		}
		if req.On == nil {
			s.reply(w, r, nil, fmt.Errorf("%w: field \"on\" is required (true or false)", ErrBadRequest))
			return
		}
		res, err := b.Maintenance(r.Context(), *req.On)
		s.reply(w, r, res, err)
	})
	s.mux.HandleFunc("POST /v1/admin/force-promote", func(w http.ResponseWriter, r *http.Request) {
		var req ForcePromoteRequest
		if err := DecodeBody(r, &req); err != nil {
			s.reply(w, r, nil, err)
			return
		}
		res, err := b.ForcePromote(r.Context(), req.AcknowledgeDataLoss)
		s.reply(w, r, res, err)
	})
	s.mux.HandleFunc("POST /v1/admin/ack-alarm", func(w http.ResponseWriter, r *http.Request) {
		var req AckAlarmRequest
		if err := DecodeBody(r, &req); err != nil {
			s.reply(w, r, nil, err)
			return
		}
		if req.Alarm == "" {
			s.reply(w, r, nil, fmt.Errorf("%w: field \"alarm\" is required (an alarm id from the status)", ErrBadRequest))
			return
		}
		res, err := b.AckAlarm(r.Context(), req.Alarm)
		s.reply(w, r, res, err)
	})
	return s
}

// Handle adds a route (Go 1.22 pattern, e.g. "GET /v1/jobs").
func (s *Server) Handle(pattern string, h http.HandlerFunc) { s.mux.HandleFunc(pattern, h) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Reply writes v as JSON, or err as an error body with its status. Extra
// routes use it to answer like the built-in ones.
func (s *Server) Reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	s.reply(w, r, v, err)
}

func (s *Server) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		status, code := http.StatusInternalServerError, "internal"
		switch {
		case errors.Is(err, ErrBadRequest):
			status, code = http.StatusBadRequest, "bad_request"
		case errors.Is(err, ErrConflict):
			status, code = http.StatusConflict, "conflict"
		case errors.Is(err, ErrUnavailable):
			status, code = http.StatusServiceUnavailable, "unavailable"
		case errors.Is(err, ErrNotFound):
			status, code = http.StatusNotFound, "not_found"
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			status, code = http.StatusServiceUnavailable, "timeout"
		}
		if status == http.StatusInternalServerError {
			s.log.Error("api request failed", zap.String("path", r.URL.Path), zap.Error(err))
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(ErrorBody{Error: err.Error(), Code: code})
		return
	}
	json.NewEncoder(w).Encode(v)
}

// DecodeBody decodes a JSON request body into v, strictly: unknown fields
// and trailing data are errors naming what was wrong. An empty body decodes
// as {}.
func DecodeBody(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%w: reading body: %v", ErrBadRequest, err)
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrBadRequest)
	}
	return nil
}

// ListenUnix opens the API socket at path: the directory is created (0750),
// a stale socket left by a crashed daemon is replaced, but a socket another
// live daemon is serving is not. The socket is mode 0660.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("api: socket dir: %w", err)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("api: %s exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("api: %s is served by a running daemon", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("api: removing stale socket: %w", err)
		}
	}
	old := syscall.Umask(0o117)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("api: listen %s: %w", path, err)
	}
	return l, nil
}
