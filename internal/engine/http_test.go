package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/engine"
)

const hooks = `project: web
connections: {t: {kind: test}}
orchestrations:
  - name: order
    starter: {http: {mode: both}}
    output: "{'id': body.id, 'effect': res.effect}"
    steps:
      - {id: store, call: {connection: t, operation: do, params: {id: "body.id"}, result: res}}
  - name: bad
    starter: {http: {mode: sync}}
    steps:
      - {id: no, terminate: {status: failed, reason: "'refused ' + string(body.id)"}}
`

func post(t *testing.T, url, body string, hdr map[string]string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m, resp.Header
}

func TestHTTPStarter(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	r.deploy(r.e, hooks)
	srv := httptest.NewServer(r.e.Handler())
	defer srv.Close()

	code, m, _ := post(t, srv.URL+"/v1/run/web/order", `{"id": 7}`, nil)
	if code != 200 || m["id"] != float64(7) {
		t.Fatalf("sync: %d %v", code, m)
	}
	code, m, _ = post(t, srv.URL+"/v1/run/web/order", `{"id": 8}`, map[string]string{"Prefer": "respond-async", "Idempotency-Key": "abc"})
	if code != 202 || m["status_url"] != "/v1/jobs/"+m["job_id"].(string) {
		t.Fatalf("async: %d %v", code, m)
	}
	id := m["job_id"].(string)
	r.wait(r.e, id)
	resp, err := http.Get(srv.URL + "/v1/jobs/" + id)
	if err != nil {
		t.Fatal(err)
	}
	var j api.JobInfo
	json.NewDecoder(resp.Body).Decode(&j)
	resp.Body.Close()
	if j.Status != engine.StatusCompleted || j.Output.(map[string]any)["id"] != float64(8) {
		t.Fatalf("job status: %+v", j)
	}
	// The same Idempotency-Key is the same trigger: same job, one effect.
	_, m2, _ := post(t, srv.URL+"/v1/run/web/order?mode=async", `{"id": 8}`, map[string]string{"Idempotency-Key": "abc"})
	if m2["job_id"] != id || r.ep.Effects()[id+"/store"] != 1 {
		t.Fatalf("repeat: %v, effects %v", m2, r.ep.Effects())
	}
	code, m, _ = post(t, srv.URL+"/v1/run/web/bad", `{"id": 9}`, nil)
	if code != 502 || !strings.Contains(m["error"].(string), "refused 9") {
		t.Fatalf("failed job: %d %v", code, m)
	}
	if code, _, _ = post(t, srv.URL+"/v1/run/web/nope", `{}`, nil); code != 404 {
		t.Fatalf("unknown orchestration: %d", code)
	}
	if code, m, _ = post(t, srv.URL+"/v1/run/web/order", `{"id":`, nil); code != 400 {
		t.Fatalf("bad JSON: %d %v", code, m)
	}
	r.e.Stop()
	code, _, h := post(t, srv.URL+"/v1/run/web/order", `{"id": 1}`, nil)
	if code != 503 || h.Get("Retry-After") != "5" {
		t.Fatalf("stopped: %d Retry-After=%q", code, h.Get("Retry-After"))
	}
}

type nopBackend struct{}

func (nopBackend) Status(context.Context) (api.Status, error)          { return api.Status{}, nil }
func (nopBackend) Events(context.Context, uint64) ([]api.Event, error) { return nil, nil }
func (nopBackend) Switchover(context.Context) (api.ActionResult, error) {
	return api.ActionResult{}, nil
}
func (nopBackend) Maintenance(context.Context, bool) (api.ActionResult, error) {
	return api.ActionResult{}, nil
}
func (nopBackend) ForcePromote(context.Context, bool) (api.ActionResult, error) {
	return api.ActionResult{}, nil
}
func (nopBackend) AckAlarm(context.Context, string) (api.ActionResult, error) {
	return api.ActionResult{}, nil
}

// The local API over its unix socket, as tandemctl uses it.
func TestLocalAPI(t *testing.T) {
	r := newRig(t, clock.Real(), nil)
	r.start(r.e)
	s := api.NewServer(nopBackend{}, zaptest.NewLogger(t))
	r.e.RegisterAPI(s)
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := api.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s}
	go hs.Serve(ln)
	defer hs.Close()
	c := api.NewClient(sock)
	ctx := ctxT(t)

	_, err = c.Deploy(ctx, map[string]string{"web.yaml": strings.Replace(hooks, "kind: test", "kind: oracle", 1)})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(err.Error(), `web.yaml:2: connections.t.kind: unknown connector kind "oracle"`) {
		t.Fatalf("bad deploy: %v", err)
	}
	p, err := c.Deploy(ctx, map[string]string{"web.yaml": hooks})
	if err != nil || p.Name != "web" || p.Version != 1 || len(p.Orchestrations) != 2 {
		t.Fatalf("deploy: %+v %v", p, err)
	}
	if ps, err := c.Projects(ctx); err != nil || len(ps) != 1 || ps[0].Orchestrations[1].Starter != "http both" {
		t.Fatalf("projects: %+v %v", ps, err)
	}
	ok, _ := r.e.StartJob(ctx, "web", "order", "1", map[string]any{"body": map[string]any{"id": 1}})
	bad, _ := r.e.StartJob(ctx, "web", "bad", "2", map[string]any{"body": map[string]any{"id": 2}})
	r.wait(r.e, ok)
	r.wait(r.e, bad)
	for status, want := range map[string]string{"completed": ok, "failed": bad} {
		js, err := c.Jobs(ctx, status, "")
		if err != nil || len(js) != 1 || js[0].ID != want {
			t.Fatalf("jobs --status %s: %+v %v", status, js, err)
		}
	}
	if _, err := c.Jobs(ctx, "weird", ""); !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("bad status filter: %v", err)
	}
	// A listing beyond the engine's MaxList (100,000 here) is a bad
	// request naming the limit, not a response built in memory.
	if _, err := c.JobsLimit(ctx, "", "", 100_001); !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(err.Error(), "limit=100001: at most 100000") {
		t.Fatalf("limit above MaxList: %v", err)
	}
	if j, err := c.Job(ctx, ok); err != nil || j.Status != "completed" {
		t.Fatalf("job: %+v %v", j, err)
	}
	if _, err := c.Undeploy(ctx, "nope"); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("undeploy unknown: %v", err)
	}
	if _, err := c.Undeploy(ctx, "web"); err != nil {
		t.Fatal(err)
	}
}
