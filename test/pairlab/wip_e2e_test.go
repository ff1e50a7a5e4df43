package pairlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
	"github.com/tandem-ha/tandem/test/services"
)

const ingestProject = `project: load
connections: {}
orchestrations:
  - name: ingest
    starter: {http: {mode: async}}
    vars: {n: 0}
    steps:
      - id: count
        assign: {n: "n + 1"}
`

// deployIngest deploys ingestProject through n.
func deployIngest(t *testing.T, e *e2e, n *Node) {
	t.Helper()
	if _, err := n.API.Deploy(e.ctx, map[string]string{"load.yaml": ingestProject}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
}

// clientHTTP is an HTTP client whose connections are made inside the
// client host's namespace.
func clientHTTP(h *lab.Host) *http.Client {
	tr := &http.Transport{DialContext: services.Dialer(h), DisableKeepAlives: true}
	return &http.Client{Transport: tr, Timeout: 3 * time.Second}
}

// TestE2EWIPSurvivesKill: clients start jobs through the VIP (each 202 is
// a job committed, synchronously replicated, to the WIP store) while the
// active is killed with SIGKILL. Every job acknowledged before, during and
// after the kill is present on the new active; retried triggers (same
// Idempotency-Key) never make a second job.
func TestE2EWIPSurvivesKill(t *testing.T) {
	e := newE2E(t)
	deployIngest(t, e, e.pair.A)
	const total, workers = 3000, 16
	load := startIngestLoad(t, e, "k", total, workers, 2*time.Minute)
	// Kill the active once a third of the jobs are in.
	for load.accepted.Load() < total/3 && load.ctx.Err() == nil {
		clock.Sleep(load.ctx, clock.Real(), 5*time.Millisecond)
	}
	before := load.accepted.Load()
	if err := e.pair.A.Crash(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.role(e.pair.B, "active", "")
	acked := load.wait(t)
	t.Logf("%d jobs acknowledged before the kill, %d in all", before, len(acked))
	checkJobsOn(t, e, e.pair.B, acked)
	jobs, err := e.pair.B.API.Jobs(e.ctx, "", "load")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != total {
		t.Errorf("the new active lists %d jobs for %d distinct triggers", len(jobs), total)
	}
}

// jobLoad is clients starting jobs through the VIP, each trigger retried
// with its Idempotency-Key until some node accepts it, as a client of an
// HA service does.
type jobLoad struct {
	ctx      context.Context
	cancel   context.CancelFunc
	total    int
	accepted atomic.Int64
	mu       sync.Mutex
	acked    map[string]string // trigger key -> job id
	wg       sync.WaitGroup
}

// startIngestLoad starts total jobs (keys prefix%05d) from workers clients in
// the client namespace; the load gives up after limit.
func startIngestLoad(t *testing.T, e *e2e, prefix string, total, workers int, limit time.Duration) *jobLoad {
	t.Helper()
	l := &jobLoad{total: total, acked: map[string]string{}}
	l.ctx, l.cancel = context.WithTimeout(e.ctx, limit)
	t.Cleanup(l.cancel)
	c := clientHTTP(e.lab.Host(lab.Client))
	url := fmt.Sprintf("http://%s:8080/v1/run/load/ingest", lab.VIP4)
	var next atomic.Int64
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := next.Add(1) - 1; i < int64(total); i = next.Add(1) - 1 {
				l.submit(t, c, url, fmt.Sprintf("%s%05d", prefix, i))
			}
		}()
	}
	return l
}

// submit retries one trigger until a node accepts it or the load's time
// is up; a trigger acknowledged as two different jobs fails the test.
func (l *jobLoad) submit(t *testing.T, c *http.Client, url, key string) {
	for l.ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(l.ctx, http.MethodPost, url, strings.NewReader(`{"i":1}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := c.Do(req)
		if err == nil {
			var body struct {
				JobID string `json:"job_id"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted && body.JobID != "" {
				l.mu.Lock()
				if prev, ok := l.acked[key]; ok && prev != body.JobID {
					t.Errorf("trigger %s acknowledged as job %s and as job %s", key, prev, body.JobID)
				}
				l.acked[key] = body.JobID
				l.mu.Unlock()
				l.accepted.Add(1)
				return
			}
		}
		clock.Sleep(l.ctx, clock.Real(), 20*time.Millisecond)
	}
}

// wait waits for every worker and returns trigger key -> job id; it fails
// the test if the load did not finish in its time.
func (l *jobLoad) wait(t *testing.T) map[string]string {
	t.Helper()
	l.wg.Wait()
	if l.ctx.Err() != nil {
		t.Fatalf("load did not finish: %d of %d accepted", l.accepted.Load(), l.total)
	}
	return l.acked
}

// crashAndCheck kills the active a; b takes over and must hold every
// acknowledged job, of which there must be want.
func crashAndCheck(t *testing.T, e *e2e, a, b *Node, acked map[string]string, want int) {
	t.Helper()
	if err := a.Crash(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.role(b, "active", "")
	checkJobsOn(t, e, b, acked)
	if len(acked) != want {
		t.Errorf("%d jobs acknowledged, want %d", len(acked), want)
	}
}

// checkJobsOn fails the test for every acknowledged job (trigger key ->
// job id) that n does not hold.
func checkJobsOn(t *testing.T, e *e2e, n *Node, acked map[string]string) {
	t.Helper()
	missing := 0
	for key, id := range acked {
		if _, err := n.API.Job(e.ctx, id); err != nil {
			missing++
			if missing <= 5 {
				t.Errorf("job %s (trigger %s) acknowledged but absent on %s: %v", id, key, n.Name, err)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged jobs lost", missing, len(acked))
	}
}
