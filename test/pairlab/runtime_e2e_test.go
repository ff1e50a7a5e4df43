package pairlab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
)

const sinkPort = 9000

// startSink starts a Sink on h counting calls by Idempotency-Key.
func startSink(t *testing.T, h *lab.Host) *Sink {
	t.Helper()
	s, err := StartSink(h, sinkPort, ByIdempotencyKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func runtimeProject(client fmt.Stringer) string {
	call := func(id, ms string) string {
		return fmt.Sprintf(`      - id: %s
        call: {connection: sink, operation: post, params: {path: "'/step'", body: "'%s'"}, retry: {max-attempts: 20, backoff: 200ms, max-backoff: 1s}}
`, id, ms)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `project: rt
connections:
  sink: {kind: http, settings: {url: "http://%s:%d", timeout: 30s}}
orchestrations:
  - name: five
    starter: {http: {mode: async}}
    steps:
`, client, sinkPort)
	for i := 1; i <= 5; i++ {
		b.WriteString(call(fmt.Sprintf("s%d", i), "100"))
	}
	b.WriteString(`  - name: slow
    starter: {http: {mode: async}}
    steps:
`)
	b.WriteString(call("wait", "10000"))
	return b.String()
}

// startJobs posts n asynchronous runs of orch through the VIP and returns
// their job ids.
func startJobs(t *testing.T, e *e2e, orch string, n int) []string {
	t.Helper()
	c := clientHTTP(e.lab.Host(lab.Client))
	url := fmt.Sprintf("http://%s:8080/v1/run/rt/%s", lab.VIP4, orch)
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A client retries a trigger with the same Idempotency-Key
			// (one job whatever the number of attempts) when the
			// connection fails, as on a loaded machine it may.
			var resp *http.Response
			var err error
			for attempt := 0; attempt < 20; attempt++ {
				req, _ := http.NewRequestWithContext(e.ctx, http.MethodPost, url, strings.NewReader("{}"))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", orch, i))
				if resp, err = c.Do(req); err == nil {
					break
				}
				clock.Sleep(e.ctx, e.clk, 200*time.Millisecond)
			}
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusAccepted {
				errs <- fmt.Errorf("POST %s: %s %s", url, resp.Status, b)
				return
			}
			s := string(b)
			i0 := strings.Index(s, `"job_id":"`)
			if i0 < 0 {
				errs <- fmt.Errorf("no job id in %s", s)
				return
			}
			s = s[i0+len(`"job_id":"`):]
			ids[i] = s[:strings.IndexByte(s, '"')]
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

// waitJobs waits until every job in ids is completed on n.
func waitJobs(t *testing.T, e *e2e, n *Node, ids []string, within time.Duration) map[string]api.JobInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, within)
	defer cancel()
	for {
		jobs, err := n.API.Jobs(ctx, "", "rt")
		got := map[string]api.JobInfo{}
		done := 0
		if err == nil {
			for _, j := range jobs {
				got[j.ID] = j
			}
			for _, id := range ids {
				if got[id].Status == "completed" {
					done++
				}
			}
			if done == len(ids) {
				return got
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d jobs completed on %s (last error %v)", done, len(ids), n.Name, err)
		}
		clock.Sleep(ctx, e.clk, 200*time.Millisecond)
	}
}

// TestE2ERuntimeJobsSurviveKill: 200 HTTP-started asynchronous jobs of 5
// connector steps; the active is killed in the middle; every job completes
// on the new active, none is lost, and none runs twice from the start: at
// most the step in flight at the kill is repeated (same key).
func TestE2ERuntimeJobsSurviveKill(t *testing.T) {
	e := newE2E(t)
	sk := startSink(t, e.lab.Host(lab.Client))
	if _, err := e.pair.A.API.Deploy(e.ctx, map[string]string{"rt.yaml": runtimeProject(e.lab.Host(lab.Client).LAN4)}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	ids := startJobs(t, e, "five", 200)
	for sk.Total() < 300 && e.ctx.Err() == nil { // about 30 % of the 1000 calls
		clock.Sleep(e.ctx, e.clk, 10*time.Millisecond)
	}
	calledBefore := sk.Total()
	if err := e.pair.A.Crash(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.role(e.pair.B, "active", "")
	jobs := waitJobs(t, e, e.pair.B, ids, 3*time.Minute)
	calls := sk.Snapshot()
	resumed, repeatedKeys := 0, 0
	for _, id := range ids {
		j := jobs[id]
		if j.Resumptions > 0 {
			resumed++
		}
		rep := 0
		for i := 1; i <= 5; i++ {
			n := 0
			for k, c := range calls {
				if strings.HasPrefix(k, id+"/") && strings.HasSuffix(k, fmt.Sprintf("/s%d", i)) || k == fmt.Sprintf("%s/s%d", id, i) {
					n += c
				}
			}
			switch {
			case n == 0:
				t.Errorf("job %s: step s%d never reached the endpoint", id, i)
			case n > 1:
				rep++
			}
		}
		if rep > 1 {
			t.Errorf("job %s: %d steps repeated: it ran again from an earlier checkpoint than its last", id, rep)
		}
		repeatedKeys += rep
	}
	t.Logf("200 jobs: %d endpoint calls before the kill, %d jobs resumed on b, %d keys called twice (the calls in flight at the kill)", calledBefore, resumed, repeatedKeys)
	if resumed == 0 {
		t.Errorf("no job was resumed: the kill did not hit the workload")
	}
	// b found them through the index of unfinished jobs: a's term kept it
	// and the epoch history shows no other writer, so no full scan.
	if strings.Contains(e.pair.B.Log(), "index of unfinished jobs rebuilt") {
		t.Errorf("b rebuilt the index of unfinished jobs at its promotion; a's term should have left it trusted")
	}
	if !strings.Contains(e.pair.A.Log(), "index of unfinished jobs rebuilt") {
		t.Errorf("a's first start did not build the index (no \"index of unfinished jobs rebuilt\" in its log)")
	}
}

// TestE2EPauseSwitchover: with force-stop-after 2s and jobs that take 10 s,
// a switchover completes in about 2 s and the jobs finish on the peer.
func TestE2EPauseSwitchover(t *testing.T) {
	e := newE2EWith(t, Options{ForceStopAfter: "2s"})
	sk := startSink(t, e.lab.Host(lab.Client))
	if _, err := e.pair.A.API.Deploy(e.ctx, map[string]string{"rt.yaml": runtimeProject(e.lab.Host(lab.Client).LAN4)}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	ids := startJobs(t, e, "slow", 4)
	for sk.Total() < 4 && e.ctx.Err() == nil {
		clock.Sleep(e.ctx, e.clk, 10*time.Millisecond)
	}
	start := e.clk.Now()
	if out, err := e.pair.A.Ctl(e.ctx, "switchover"); err != nil {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	e.role(e.pair.B, "active", "")
	took := e.clk.Since(start)
	t.Logf("switchover with 4 jobs of 10 s in flight and force-stop-after 2s took %v", took)
	if took > 8*time.Second {
		t.Errorf("switchover took %v: it waited for the jobs instead of handing them over after 2s", took)
	}
	jobs := waitJobs(t, e, e.pair.B, ids, 2*time.Minute)
	for _, id := range ids {
		if j := jobs[id]; j.Node != lab.NodeB || j.Resumptions == 0 {
			t.Errorf("job %s finished on %q with %d resumptions, want on b after a handover", id, j.Node, j.Resumptions)
		}
	}
	evs, _ := e.pair.A.API.Events(e.ctx, 0)
	found := false
	for _, ev := range evs {
		if ev.Kind == "runtime" && strings.Contains(ev.Text, "handed over") {
			found = true
			t.Logf("a's runtime event: %s", ev.Text)
		}
	}
	if !found {
		t.Error("no runtime event on a records what was handed over")
	}
}

// TestE2EDrill: `tandemctl drill` run on the passive while jobs run. Leg 1
// is a request: b asks, a pauses and hands over. Leg 2 is b's own
// switchover back. Every job completes, the pair ends where it began (a
// active, two epochs later) and both nodes record why the role moved.
func TestE2EDrill(t *testing.T) {
	e := newE2EWith(t, Options{ForceStopAfter: "2s"})
	sk := startSink(t, e.lab.Host(lab.Client))
	if _, err := e.pair.A.API.Deploy(e.ctx, map[string]string{"rt.yaml": runtimeProject(e.lab.Host(lab.Client).LAN4)}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	before := e.role(e.pair.A, "active", "paired")
	ids := append(startJobs(t, e, "slow", 4), startJobs(t, e, "five", 40)...)
	for sk.Total() < 4 && e.ctx.Err() == nil {
		clock.Sleep(e.ctx, e.clk, 10*time.Millisecond)
	}
	out, err := e.pair.B.Ctl(e.ctx, "drill")
	t.Logf("tandemctl drill on b:\n%s", strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("tandemctl drill: %v", err)
	}
	for _, want := range []string{
		"switchover requested", fmt.Sprintf("leg 1: b active in epoch %d after ", before.Epoch+1),
		"switchover started", fmt.Sprintf("leg 2: a active in epoch %d after ", before.Epoch+2),
		fmt.Sprintf("drill passed: a active again in epoch %d", before.Epoch+2),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("drill output lacks %q", want)
		}
	}
	e.role(e.pair.A, "active", "paired")
	e.role(e.pair.B, "passive", "in-sync")
	jobs := waitJobs(t, e, e.pair.A, ids, 2*time.Minute)
	resumed := 0
	for _, id := range ids {
		resumed += jobs[id].Resumptions
	}
	t.Logf("%d jobs completed, %d resumptions across the two legs", len(ids), resumed)
	for n, want := range map[*Node]string{e.pair.A: "requested on the peer", e.pair.B: "handover from the peer"} {
		evs, err := n.API.Events(e.ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ev := range evs {
			found = found || (ev.Kind == "role" && strings.Contains(ev.Text, want))
		}
		if !found {
			t.Errorf("no role event on %s says %q", n.Name, want)
		}
	}
	if e.status(e.pair.B).SwitchoverRequested {
		t.Errorf("b still shows its switchover request after the drill")
	}
}

// TestE2EFinishedJobsPurgedOnBothNodes: with job-retention 3s the active
// deletes finished jobs by itself, the deletion reaches the passive's
// store through replication, and an unfinished job stays.
func TestE2EFinishedJobsPurgedOnBothNodes(t *testing.T) {
	e := newE2EWith(t, Options{JobRetention: "3s", PurgeEvery: "1s"})
	sk := startSink(t, e.lab.Host(lab.Client))
	if _, err := e.pair.A.API.Deploy(e.ctx, map[string]string{"rt.yaml": runtimeProject(e.lab.Host(lab.Client).LAN4)}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	ids := startJobs(t, e, "five", 20)
	waitJobs(t, e, e.pair.A, ids, time.Minute)
	slow := startJobs(t, e, "slow", 1)
	st, err := e.pair.A.WaitFor(e.ctx, "the 20 finished jobs purged", func(s api.Status) bool { return s.Runtime.Purged >= 20 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Runtime.Purged != 20 {
		t.Errorf("a purged %d jobs, want the 20 finished ones", st.Runtime.Purged)
	}
	for _, n := range []*Node{e.pair.A, e.pair.B} {
		jobs, err := n.API.Jobs(e.ctx, "", "rt")
		if err != nil {
			t.Fatalf("jobs on %s: %v", n.Name, err)
		}
		if len(jobs) != 1 || jobs[0].ID != slow[0] {
			t.Errorf("%s holds %d jobs %v, want only the unfinished %s", n.Name, len(jobs), jobs, slow[0])
		}
	}
	sb, err := e.pair.B.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Role != "passive" || sb.Runtime.Purged != 0 {
		t.Errorf("b is %s with %d jobs purged by itself; want a passive that purged nothing", sb.Role, sb.Runtime.Purged)
	}
	evs, _ := e.pair.A.API.Events(e.ctx, 0)
	for _, ev := range evs {
		if ev.Kind == "runtime" && strings.HasPrefix(ev.Text, "purged ") {
			t.Logf("a's event: %s", ev.Text)
		}
	}
	t.Logf("sink saw %d calls", sk.Total())
}
