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
	if _, err := e.pair.A.API.Deploy(e.ctx, map[string]string{"load.yaml": ingestProject}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	const total, workers = 3000, 16
	c := clientHTTP(e.lab.Host(lab.Client))
	url := fmt.Sprintf("http://%s:8080/v1/run/load/ingest", lab.VIP4)
	var (
		mu       sync.Mutex
		acked    = map[string]string{} // key -> job id
		accepted atomic.Int64
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				key := fmt.Sprintf("k%05d", i)
				// Retry the same trigger until some node accepts it, as a
				// client of an HA service does.
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"i":1}`))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Idempotency-Key", key)
					resp, err := c.Do(req)
					if err != nil {
						clock.Sleep(ctx, clock.Real(), 20*time.Millisecond)
						continue
					}
					var body struct {
						JobID string `json:"job_id"`
					}
					json.NewDecoder(resp.Body).Decode(&body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusAccepted && body.JobID != "" {
						mu.Lock()
						if prev, ok := acked[key]; ok && prev != body.JobID {
							t.Errorf("trigger %s acknowledged as job %s and as job %s", key, prev, body.JobID)
						}
						acked[key] = body.JobID
						mu.Unlock()
						accepted.Add(1)
						break
					}
					clock.Sleep(ctx, clock.Real(), 20*time.Millisecond)
				}
			}
		}()
	}
	// Kill the active once a third of the jobs are in.
	for accepted.Load() < total/3 && ctx.Err() == nil {
		clock.Sleep(ctx, clock.Real(), 5*time.Millisecond)
	}
	mu.Lock()
	before := len(acked)
	mu.Unlock()
	if err := e.pair.A.Crash(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.role(e.pair.B, "active", "")
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("load did not finish: %d of %d accepted", accepted.Load(), total)
	}
	t.Logf("%d jobs acknowledged before the kill, %d in all", before, len(acked))
	missing := 0
	for key, id := range acked {
		if _, err := e.pair.B.API.Job(e.ctx, id); err != nil {
			missing++
			if missing <= 5 {
				t.Errorf("job %s (trigger %s) acknowledged but absent on the new active: %v", id, key, err)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged jobs lost", missing, len(acked))
	}
	jobs, err := e.pair.B.API.Jobs(e.ctx, "", "load")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != total {
		t.Errorf("the new active lists %d jobs for %d distinct triggers", len(jobs), total)
	}
}
