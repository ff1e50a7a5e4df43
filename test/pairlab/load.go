package pairlab

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-ha/tandem/internal/api"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
	"github.com/tandem-ha/tandem/test/services"
)

// Load starts jobs over HTTP on the VIP from a lab host at a fixed rate,
// as an integration client would: each trigger has an id ("o000001"...),
// sent as the Idempotency-Key and in the body, and is retried (fresh
// connection, 100 ms apart) until a node answers 202 with a job id or the
// load's retry budget ends. Accepted returns what clients were told.
type Load struct {
	clk      clock.Clock
	stopNew  context.CancelFunc
	giveUp   context.CancelFunc
	wg       sync.WaitGroup
	sent     atomic.Int64
	mu       sync.Mutex
	accepted map[string]string // trigger id -> job id
}

// StartLoad posts body(id) to url from h, rate triggers per second, until
// Stop. A trigger not accepted within retryFor of its first try is given up
// (it counts as sent, not accepted).
func StartLoad(h *lab.Host, url string, rate int, retryFor time.Duration, body func(id string) string) *Load {
	l := &Load{clk: clock.Real(), accepted: map[string]string{}}
	newCtx, stopNew := context.WithCancel(context.Background())
	retryCtx, giveUp := context.WithCancel(context.Background())
	l.stopNew, l.giveUp = stopNew, giveUp
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: services.Dialer(h), DisableKeepAlives: true}}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		// Triggers are due by elapsed time, not by tick: a ticker drops
		// ticks when this goroutine runs late (a loaded lab host), and the
		// load would fall short of its rate.
		start := l.clk.Now()
		t := l.clk.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		for {
			select {
			case <-newCtx.Done():
				return
			case <-t.C():
			}
			due := int64(l.clk.Since(start).Seconds() * float64(rate))
			for l.sent.Load() < due {
				l.trigger(retryCtx, hc, url, retryFor, body)
			}
		}
	}()
	return l
}

// trigger sends the next trigger and retries it until it is accepted or
// retryFor has passed.
func (l *Load) trigger(retryCtx context.Context, hc *http.Client, url string, retryFor time.Duration, body func(string) string) {
	id := fmt.Sprintf("o%06d", l.sent.Add(1))
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(retryCtx, retryFor)
		defer cancel()
		for ctx.Err() == nil {
			if job := l.try(ctx, hc, url, id, body(id)); job != "" {
				l.mu.Lock()
				l.accepted[id] = job
				l.mu.Unlock()
				return
			}
			clock.Sleep(ctx, l.clk, 100*time.Millisecond)
		}
	}()
}

func (l *Load) try(ctx context.Context, hc *http.Client, url, id, body string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return ""
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", id)
	resp, err := hc.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var b struct {
		JobID string `json:"job_id"`
	}
	if resp.StatusCode != http.StatusAccepted || json.NewDecoder(resp.Body).Decode(&b) != nil {
		return ""
	}
	return b.JobID
}

// Stop sends no new triggers, waits for the retries in progress (each
// bounded by retryFor) and returns how many triggers were sent.
func (l *Load) Stop() int {
	l.stopNew()
	l.wg.Wait()
	l.giveUp()
	return int(l.sent.Load())
}

// Abort is Stop without waiting out the retries.
func (l *Load) Abort() {
	l.stopNew()
	l.giveUp()
	l.wg.Wait()
}

// Accepted returns trigger id -> job id for every trigger a node accepted.
func (l *Load) Accepted() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.accepted)
}

// JobsOutcome is what the active knows of a set of accepted jobs.
type JobsOutcome struct {
	Completed, Failed, Unfinished int
	Missing                       []string // accepted job ids the node does not know
	Resumed                       int      // jobs resumed from a checkpoint at least once
}

// WaitJobs polls n's job list until every job in accepted (trigger id ->
// job id) has ended or ctx ends, and returns the last outcome.
func WaitJobs(ctx context.Context, n *Node, project string, accepted map[string]string) (JobsOutcome, error) {
	for {
		jobs, err := n.API.Jobs(ctx, "", project)
		var o JobsOutcome
		if err == nil {
			o = outcome(jobs, accepted)
			if o.Unfinished == 0 && len(o.Missing) == 0 {
				return o, nil
			}
		}
		if ctx.Err() != nil {
			if err != nil {
				return o, err
			}
			return o, fmt.Errorf("%d of %d accepted jobs still unfinished, %d unknown to %s", o.Unfinished, len(accepted), len(o.Missing), n.Name)
		}
		clock.Sleep(ctx, clock.Real(), 500*time.Millisecond)
	}
}

func outcome(jobs []api.JobInfo, accepted map[string]string) JobsOutcome {
	byID := make(map[string]api.JobInfo, len(jobs))
	for _, j := range jobs {
		byID[j.ID] = j
	}
	var o JobsOutcome
	for _, id := range accepted {
		j, ok := byID[id]
		switch {
		case !ok:
			o.Missing = append(o.Missing, id)
			continue
		case j.Status == "completed":
			o.Completed++
		case j.Status == "failed":
			o.Failed++
		default:
			o.Unfinished++
		}
		if j.Resumptions > 0 {
			o.Resumed++
		}
	}
	return o
}
