package engine

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/orch"
)

// MaxBody bounds an HTTP starter's request body.
const MaxBody = 1 << 20

// Handler serves the data-plane routes on the VIP listener:
//
//	POST /v1/run/{project}/{orch}   start a job; body (JSON or text) is variable "body"
//	GET  /v1/jobs/{id}              a job's status (for asynchronous starts)
//
// A run is asynchronous (202 {"job_id", "status_url"}) when the
// orchestration's http mode is async, or with mode both when the request
// says `Prefer: respond-async` or `?mode=async`; otherwise synchronous: 200
// with the job's output, 502 with the reason if it failed, 202 if it was
// handed over to the peer before finishing. An Idempotency-Key header
// names the trigger: a repeat of the same key gets the same job. While
// the engine is not running every route answers 503 with Retry-After.
func (e *Engine) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/run/{project}/{orch}", e.serveRun)
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !e.refuseUnlessRunning(w) {
			return
		}
		j, err := e.Job(r.PathValue("id"))
		writeJSON(w, httpStatus(err), j, err)
	})
	return mux
}

func (e *Engine) refuseUnlessRunning(w http.ResponseWriter) bool {
	e.mu.Lock()
	running := e.state == StateRunning
	e.mu.Unlock()
	if !running {
		w.Header().Set("Retry-After", e.retryAfter())
		writeJSON(w, http.StatusServiceUnavailable, nil, ErrPaused)
	}
	return running
}

// retryAfter is RetryAfter in whole seconds, rounded up (the header has
// no fractions; 0 would invite an immediate retry).
func (e *Engine) retryAfter() string {
	return strconv.Itoa(int((e.o.RetryAfter + time.Second - 1) / time.Second))
}

func httpStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrPaused):
		return http.StatusServiceUnavailable
	case errors.Is(err, orch.ErrInvalid), errors.Is(err, api.ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrState):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err != nil {
		json.NewEncoder(w).Encode(api.ErrorBody{Error: err.Error(), Code: http.StatusText(status)})
		return
	}
	json.NewEncoder(w).Encode(v)
}

func (e *Engine) serveRun(w http.ResponseWriter, r *http.Request) {
	if !e.refuseUnlessRunning(w) {
		return
	}
	project, name := r.PathValue("project"), r.PathValue("orch")
	e.mu.Lock()
	d := e.deps[project]
	e.mu.Unlock()
	var o *orch.Orchestration
	if d != nil {
		o = d.prj.Orchestrations[name]
	}
	if o == nil || o.Starter.Kind != orch.StartHTTP {
		writeJSON(w, http.StatusNotFound, nil, fmt.Errorf("%w: no HTTP-started orchestration %s/%s", ErrNotFound, project, name))
		return
	}
	async := o.Starter.HTTPMode == "async" ||
		(o.Starter.HTTPMode == "both" && (r.URL.Query().Get("mode") == "async" || strings.Contains(r.Header.Get("Prefer"), "respond-async")))
	raw, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil || len(raw) > MaxBody {
		writeJSON(w, http.StatusBadRequest, nil, fmt.Errorf("%w: body unreadable or over %d bytes", api.ErrBadRequest, MaxBody))
		return
	}
	var body any = string(raw)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &body); err != nil {
			writeJSON(w, http.StatusBadRequest, nil, fmt.Errorf("%w: body is not JSON: %v", api.ErrBadRequest, err))
			return
		}
	}
	query := map[string]any{}
	for k, v := range r.URL.Query() {
		query[k] = v[0]
	}
	trigger := r.Header.Get("Idempotency-Key")
	if trigger == "" {
		var b [16]byte
		rand.Read(b[:])
		trigger = hex.EncodeToString(b[:])
	}
	id, lj, _, err := e.startJob(r.Context(), project, name, "http/"+trigger, map[string]any{"body": body, "query": query})
	if err != nil {
		if errors.Is(err, ErrPaused) {
			w.Header().Set("Retry-After", e.retryAfter())
		}
		writeJSON(w, httpStatus(err), nil, err)
		return
	}
	accepted := map[string]string{"job_id": id, "status_url": "/v1/jobs/" + id}
	if async {
		writeJSON(w, http.StatusAccepted, accepted, nil)
		return
	}
	if lj != nil {
		select {
		case <-lj.done:
		case <-r.Context().Done():
			return
		}
	}
	j, err := e.Job(id)
	switch {
	case err != nil:
		writeJSON(w, httpStatus(err), nil, err)
	case j.Status == StatusCompleted:
		writeJSON(w, http.StatusOK, j.Output, nil)
	case j.Status == StatusFailed:
		writeJSON(w, http.StatusBadGateway, nil, fmt.Errorf("job %s failed: %s", id, j.Reason))
	default:
		// Handed over (pause, failover): it finishes on the peer.
		writeJSON(w, http.StatusAccepted, accepted, nil)
	}
}

// RegisterAPI adds the runtime's local API routes (see internal/api's
// runtime.go) to s.
func (e *Engine) RegisterAPI(s *api.Server) {
	mapErr := func(err error) error {
		switch {
		case err == nil:
			return nil
		case errors.Is(err, orch.ErrInvalid), errors.Is(err, ErrTooMany):
			return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		case errors.Is(err, ErrNotFound):
			return fmt.Errorf("%w: %v", api.ErrNotFound, err)
		case errors.Is(err, ErrPaused):
			return fmt.Errorf("%w: %v", api.ErrUnavailable, err)
		case errors.Is(err, ErrState):
			return fmt.Errorf("%w: %v", api.ErrConflict, err)
		}
		if strings.HasPrefix(err.Error(), "connectors:") {
			return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		return err
	}
	s.Handle("POST /v1/projects", func(w http.ResponseWriter, r *http.Request) {
		var req api.DeployRequest
		if err := api.DecodeBody(r, &req); err != nil {
			s.Reply(w, r, nil, err)
			return
		}
		if len(req.Files) == 0 {
			s.Reply(w, r, nil, fmt.Errorf("%w: files: no files given", api.ErrBadRequest))
			return
		}
		p, err := e.Deploy(r.Context(), req.Files)
		s.Reply(w, r, p, mapErr(err))
	})
	s.Handle("GET /v1/projects", func(w http.ResponseWriter, r *http.Request) {
		p, err := e.Projects()
		if p == nil {
			p = []api.ProjectInfo{}
		}
		s.Reply(w, r, p, mapErr(err))
	})
	s.Handle("DELETE /v1/projects/{name}", func(w http.ResponseWriter, r *http.Request) {
		err := e.Undeploy(r.Context(), r.PathValue("name"))
		s.Reply(w, r, api.ActionResult{Accepted: err == nil, Text: "undeployed " + r.PathValue("name")}, mapErr(err))
	})
	s.Handle("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		status := r.URL.Query().Get("status")
		switch status {
		case "", StatusRunning, StatusRetryWait, StatusCompleted, StatusFailed:
		default:
			s.Reply(w, r, nil, fmt.Errorf("%w: status=%q: one of running, retry-wait, completed, failed", api.ErrBadRequest, status))
			return
		}
		limit := 0
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				s.Reply(w, r, nil, fmt.Errorf("%w: limit=%q: want a whole number, 0 for no limit", api.ErrBadRequest, v))
				return
			}
			limit = n
		}
		j, _, err := e.ListJobs(status, r.URL.Query().Get("project"), limit)
		if j == nil {
			j = []api.JobInfo{}
		}
		s.Reply(w, r, j, mapErr(err))
	})
	s.Handle("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		j, err := e.Job(r.PathValue("id"))
		s.Reply(w, r, j, mapErr(err))
	})
	e.log.Debug("runtime API registered", zap.Strings("routes", []string{"/v1/projects", "/v1/jobs"}))
}
