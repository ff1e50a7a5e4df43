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

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
)

// TestE2EOneHALinkCutKeepsThePairProtected: the cable of a's HA link 1 is
// cut (no FIN reaches anyone) and jobs are started through the VIP. The
// replication session moves to HA link 2 by itself: every job is
// acknowledged, the active never goes on alone (no peer-outdated event:
// the move beats peer-ack-timeout, 1 s in the lab), the passive stays
// promotable, and when the active is then killed the passive takes over
// with every acknowledged job.
func TestE2EOneHALinkCutKeepsThePairProtected(t *testing.T) {
	e := newE2E(t)
	if _, err := e.pair.A.API.Deploy(e.ctx, map[string]string{"load.yaml": ingestProject}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	evs, err := e.pair.A.API.Events(e.ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	if len(evs) > 0 {
		seq = evs[len(evs)-1].Seq
	}
	if _, err := e.lab.CutLink(e.ctx, lab.NodeA, "ha1"); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	acked := submitJobs(t, e, 400, 8)
	wctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	st, err := e.pair.A.WaitFor(wctx, "a's peer in sync with every commit acked", func(s api.Status) bool {
		r := s.Replication
		return r.PeerState == "in-sync" && r.PeerAckedLSN == r.CommittedLSN
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d jobs acknowledged over HA link 2 in %v; a: %+v", len(acked), time.Since(cut).Round(time.Millisecond), st.Replication)
	evs, err = e.pair.A.API.Events(e.ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		t.Logf("a event at cut+%v: %s %s", ev.Time.Sub(cut).Round(time.Millisecond), ev.Kind, ev.Text)
		if ev.Kind == "replication" && strings.HasPrefix(ev.Text, "peer-outdated") {
			t.Errorf("a went on alone after HA link 1 was cut (%s): the passive did not move to HA link 2 in time", ev.Text)
		}
	}
	if sb := e.status(e.pair.B); sb.Replication.DataState != "in-sync" {
		t.Errorf("b after the move: data %q, want in-sync (promotable)", sb.Replication.DataState)
	}
	if err := e.pair.A.Crash(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.role(e.pair.B, "active", "")
	missing := 0
	for key, id := range acked {
		if _, err := e.pair.B.API.Job(e.ctx, id); err != nil {
			missing++
			if missing <= 5 {
				t.Errorf("job %s (trigger %s) acknowledged over HA link 2 but absent on the new active: %v", id, key, err)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged jobs lost", missing, len(acked))
	}
}

// submitJobs starts total jobs through the VIP from workers clients, each
// trigger retried with its Idempotency-Key until accepted, and returns
// trigger key -> job id. It fails the test if the load does not finish in
// a minute.
func submitJobs(t *testing.T, e *e2e, total, workers int) map[string]string {
	t.Helper()
	c := clientHTTP(e.lab.Host(lab.Client))
	url := fmt.Sprintf("http://%s:8080/v1/run/load/ingest", lab.VIP4)
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	var (
		mu    sync.Mutex
		acked = map[string]string{}
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(total); i = next.Add(1) - 1 {
				key := fmt.Sprintf("h%05d", i)
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
					_ = json.NewDecoder(resp.Body).Decode(&body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusAccepted && body.JobID != "" {
						mu.Lock()
						acked[key] = body.JobID
						mu.Unlock()
						break
					}
					clock.Sleep(ctx, clock.Real(), 20*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("load did not finish: %d of %d accepted", len(acked), total)
	}
	return acked
}
