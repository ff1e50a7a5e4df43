// Command chaos is `make chaos`: the exactly-once proof of the connectors
// under failover, bounded and automatic.
//
// It brings up the lab pair, private PostgreSQL, MariaDB and NATS servers
// on the services host and an HTTP sink on the client, deploys a project
// whose orchestration does, per job, a PostgreSQL insert (exactly-once), a
// MariaDB update (exactly-once), a NATS publish (exactly-once within the
// stream's duplicate window) and an HTTP invoke of the sink (at-least-once),
// and starts -rate jobs/s through the VIP for -duration while injecting a
// random fault every -fault-every: kill -9 of the active (its unit's
// cleanup, then a restart), freeze/thaw of the active, a cut of both its
// HA links (ha-cut) or of HA link 1 only (ha1-cut: replication must move to
// HA link 2), or a cut of the active's LAN port. Clients retry a trigger with the same
// Idempotency-Key until a node accepts it (202). When the load ends and
// every accepted job has completed, a checker compares what clients were
// told was accepted with what the endpoints hold and prints
//
//	chaos: accepted=N pg_rows=N pg_dup=0 pg_lost=0 maria_dup=0 maria_lost=0 nats_dup=0 nats_lost=0 http_seen=N http_dup=N failovers=N faults=N skipped=N
//
// skipped counts the fault times at which no node answered as active (the
// fault is not injected then; the pair should be whole between faults).
//
// It exits 1 if any exactly-once figure is not 0. HTTP duplicates are
// reported, not hidden: the sink does not honour Idempotency-Key.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/connectors/natsconn"
	"github.com/tandem-ha/tandem/connectors/sqlconn"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
	"github.com/tandem-ha/tandem/test/pairlab"
	"github.com/tandem-ha/tandem/test/services"
)

func main() {
	dur := flag.Duration("duration", 5*time.Minute, "how long the load runs")
	rate := flag.Int("rate", 50, "jobs started per second")
	every := flag.Duration("fault-every", 12*time.Second, "one random fault this often")
	keep := flag.Bool("keep", false, "keep the work directory")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, *dur, *rate, *every, *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

const project = `project: chaos
connections:
  pg: {kind: postgres, settings: {host: "%[1]s", database: test, user: postgres}}
  maria: {kind: mysql, settings: {host: "%[1]s", database: test, user: root}}
  bus: {kind: nats, settings: {url: "nats://%[1]s:4222", stream: CHAOS, subject: chaos.jobs, require-duplicate-window: 5m}}
  sink: {kind: http, settings: {url: "http://%[2]s:9000", timeout: 10s}}
orchestrations:
  - name: order
    starter: {http: {mode: async}}
    steps:
      - id: pg
        call: {connection: pg, operation: execute, params: {statement: "'insert into chaos_orders(job) values ($1)'", args: "[body.id]"}, retry: {max-attempts: 50, backoff: 200ms, max-backoff: 2s}}
      - id: maria
        call: {connection: maria, operation: execute, params: {statement: "'update chaos_counter set hits = hits + 1 where id = 1'"}, retry: {max-attempts: 50, backoff: 200ms, max-backoff: 2s}}
      - id: bus
        call: {connection: bus, operation: publish, params: {data: "body.id"}, retry: {max-attempts: 50, backoff: 200ms, max-backoff: 2s}}
      - id: sink
        call: {connection: sink, operation: post, params: {path: "'/seen'", body: "body.id"}, retry: {max-attempts: 50, backoff: 200ms, max-backoff: 2s}}
`

func run(ctx context.Context, dur time.Duration, rate int, every time.Duration, keep bool) (bool, error) {
	clk := clock.Real()
	logf := func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }
	dir, err := os.MkdirTemp("", "tandem-chaos-")
	if err != nil {
		return false, err
	}
	if keep {
		defer fmt.Println("work directory kept:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bins, err := pairlab.Build(ctx, dir)
	if err != nil {
		return false, err
	}
	l, err := lab.New(ctx, lab.Options{Logf: logf})
	if err != nil {
		return false, err
	}
	defer l.Close()
	svc, cli := l.Host(lab.Svc), l.Host(lab.Client)

	// Endpoints.
	pg, err := services.StartPostgres(ctx, svc, dir)
	if err != nil {
		return false, err
	}
	defer pg.Stop(10 * time.Second)
	maria, err := services.StartMariaDB(ctx, svc, dir)
	if err != nil {
		return false, err
	}
	defer maria.Stop(10 * time.Second)
	nt, err := services.StartNATS(ctx, svc, dir)
	if err != nil {
		return false, err
	}
	defer nt.Stop(10 * time.Second)
	dial := services.Dialer(cli)
	pgc, err := sqlconn.Open(sqlconn.Postgres, pg.Settings, sqlconn.Options{Dial: dial})
	if err != nil {
		return false, err
	}
	defer pgc.Close()
	mc, err := sqlconn.Open(sqlconn.MySQL, maria.Settings, sqlconn.Options{Dial: dial})
	if err != nil {
		return false, err
	}
	defer mc.Close()
	for _, q := range []struct {
		c   *sqlconn.Conn
		sql string
	}{
		{pgc, "create table chaos_orders (job text not null, at timestamptz not null default now())"},
		{mc, "create table chaos_counter (id int primary key, hits int not null)"},
		{mc, "insert into chaos_counter values (1, 0)"},
	} {
		if _, err := q.c.DB().ExecContext(ctx, q.sql); err != nil {
			return false, fmt.Errorf("%s: %w", q.sql, err)
		}
	}
	if err := pgc.InitControl(ctx); err != nil {
		return false, err
	}
	if err := mc.InitControl(ctx); err != nil {
		return false, err
	}
	nc, err := natsconn.Open(connectors.Settings{"url": fmt.Sprintf("nats://%s:4222", svc.LAN4), "stream": "CHAOS"}, natsconn.Options{Dial: dial})
	if err != nil {
		return false, err
	}
	defer nc.Close()
	if _, err := nc.JetStream().CreateStream(ctx, jetstream.StreamConfig{Name: "CHAOS", Subjects: []string{"chaos.>"}, Duplicates: 10 * time.Minute, Storage: jetstream.FileStorage}); err != nil {
		return false, err
	}
	sk, err := pairlab.StartSink(cli, 9000, pairlab.ByBody)
	if err != nil {
		return false, err
	}
	defer sk.Close()

	// The pair.
	p, err := pairlab.New(pairlab.Options{Lab: l, Bins: bins, Dir: dir, Timing: "default", ForceStopAfter: "5s",
		Extra: "realtime-priority: 10\n", Logf: logf})
	if err != nil {
		return false, err
	}
	defer p.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := p.A.Start(); err != nil {
		return false, err
	}
	if _, err := p.A.Role(wctx, "active", ""); err != nil {
		return false, err
	}
	if err := p.B.Start(); err != nil {
		return false, err
	}
	if _, err := p.B.Role(wctx, "passive", "in-sync"); err != nil {
		return false, err
	}
	if _, err := p.A.API.Deploy(wctx, map[string]string{"chaos.yaml": fmt.Sprintf(project, svc.LAN4, cli.LAN4)}); err != nil {
		return false, fmt.Errorf("deploy: %w", err)
	}
	fmt.Printf("chaos: %d jobs/s for %v, a fault every %v\n", rate, dur, every)

	// The load: clients retry a trigger for up to 2 minutes.
	url := fmt.Sprintf("http://%s:8080/v1/run/chaos/order", lab.VIP4)
	deadline := clk.Now().Add(dur)
	load := pairlab.StartLoad(cli, url, rate, 2*time.Minute, func(id string) string { return `{"id":"` + id + `"}` })
	defer load.Abort()

	// The faults.
	faults, failovers, skipped := 0, 0, 0
	rng := rand.New(rand.NewPCG(uint64(clk.Now().UnixNano()), 7))
	// Faults on a fixed cadence from the load's start: the time a fault and
	// the pair's recovery take is not added to the gap before the next one.
	start := clk.Now()
	for k := 1; ; k++ {
		at := start.Add(time.Duration(k) * every)
		if !at.Before(deadline) || ctx.Err() != nil {
			break
		}
		clock.Sleep(ctx, clk, at.Sub(clk.Now()))
		act, oth, err := p.Active(ctx)
		if err != nil {
			logf("no active before fault %d: %v; fault skipped", faults+1, err)
			skipped++
			continue
		}
		st0, st0err := act.Status(ctx)
		kinds := []string{"kill", "freeze", "ha-cut", "ha1-cut", "lan-cut"}
		kind := kinds[rng.IntN(len(kinds))]
		faults++
		fmt.Printf("  fault %d at %s: %s of %s\n", faults, clk.Now().Format("15:04:05"), kind, act.Name)
		fctx, fcancel := context.WithTimeout(ctx, 90*time.Second)
		switch kind {
		case "kill":
			err = act.Crash(fctx)
			if err == nil {
				_, err = oth.Role(fctx, "active", "")
			}
			if err == nil {
				err = act.Start()
			}
		case "freeze":
			pr := act.Proc()
			if err = pr.Freeze(); err == nil {
				clock.Sleep(ctx, clk, time.Duration(1+rng.IntN(3))*time.Second)
				err = pr.Thaw()
			}
		case "ha-cut":
			var f1, f2 *lab.Fault
			if f1, err = l.CutLink(fctx, act.Name, "ha1"); err == nil {
				if f2, err = l.CutLink(fctx, act.Name, "ha2"); err == nil {
					clock.Sleep(ctx, clk, 3*time.Second)
					f2.Clear()
				}
				f1.Clear()
			}
		case "ha1-cut":
			var f *lab.Fault
			if f, err = l.CutLink(fctx, act.Name, "ha1"); err == nil {
				clock.Sleep(ctx, clk, 3*time.Second)
				err = f.Clear()
			}
		case "lan-cut":
			var f *lab.Fault
			if f, err = l.CutLink(fctx, act.Name, lab.LANIf); err == nil {
				clock.Sleep(ctx, clk, 3*time.Second)
				err = f.Clear()
			}
		}
		if err == nil {
			// The pair whole again before the next fault.
			_, err = p.WaitWhole(fctx)
		}
		fcancel()
		if err != nil {
			return false, fmt.Errorf("fault %d (%s): %w\npair: %s", faults, kind, err, p.Describe(ctx))
		}
		if na, _, err := p.Active(ctx); err == nil {
			if st1, err := na.Status(ctx); err == nil && st0err == nil && st1.Epoch != st0.Epoch {
				failovers++
			}
		}
	}
	for clk.Now().Before(deadline) && ctx.Err() == nil {
		clock.Sleep(ctx, clk, 100*time.Millisecond)
	}
	sent := load.Stop()
	accepted := load.Accepted()
	acc := len(accepted)
	fmt.Printf("  load over: %d triggers sent, %d accepted; waiting for the jobs\n", sent, acc)

	// Every accepted job ends; what does not shows as lost below.
	act, _, err := p.Active(ctx)
	if err != nil {
		return false, err
	}
	cctx, ccancel := context.WithTimeout(ctx, 3*time.Minute)
	defer ccancel()
	jo, err := pairlab.WaitJobs(cctx, act, "chaos", accepted)
	if err != nil {
		fmt.Printf("  %v; unknown to the active (up to 20): %v\n", err, jo.Missing[:min(20, len(jo.Missing))])
	}
	if jo.Failed > 0 {
		fmt.Printf("  %d jobs failed (see tandemctl jobs --status failed)\n", jo.Failed)
	}

	// The checker.
	ids := make(map[string]bool, acc)
	for id := range accepted {
		ids[id] = true
	}
	pgCount := map[string]int{}
	rows, err := pgc.DB().QueryContext(ctx, "select job, count(*) from chaos_orders group by job")
	if err != nil {
		return false, err
	}
	pgRows := 0
	for rows.Next() {
		var j string
		var n int
		rows.Scan(&j, &n)
		pgCount[j] = n
		pgRows += n
	}
	rows.Close()
	pgDup, pgLost := 0, 0
	for id := range ids {
		switch n := pgCount[id]; {
		case n == 0:
			pgLost++
		case n > 1:
			pgDup += n - 1
		}
	}
	var hits int
	if err := mc.DB().QueryRowContext(ctx, "select hits from chaos_counter where id = 1").Scan(&hits); err != nil {
		return false, err
	}
	mariaDup, mariaLost := max(0, hits-acc), max(0, acc-hits)
	natsCount := map[string]int{}
	cons, err := nc.JetStream().OrderedConsumer(ctx, "CHAOS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		return false, err
	}
	info, err := nc.JetStream().Stream(ctx, "CHAOS")
	if err != nil {
		return false, err
	}
	total := info.CachedInfo().State.Msgs
	for got := uint64(0); got < total; {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return false, err
		}
		n := 0
		for m := range batch.Messages() {
			natsCount[string(m.Data())]++
			n++
		}
		if n == 0 {
			break
		}
		got += uint64(n)
	}
	natsDup, natsLost := 0, 0
	for id := range ids {
		switch n := natsCount[id]; {
		case n == 0:
			natsLost++
		case n > 1:
			natsDup += n - 1
		}
	}
	seen := sk.Snapshot()
	httpSeen, httpDup := 0, 0
	for id := range ids {
		if n := seen[id]; n > 0 {
			httpSeen++
			httpDup += n - 1
		}
	}
	fmt.Printf("chaos: accepted=%d pg_rows=%d pg_dup=%d pg_lost=%d maria_dup=%d maria_lost=%d nats_dup=%d nats_lost=%d http_seen=%d http_dup=%d failovers=%d faults=%d skipped=%d\n",
		acc, pgRows, pgDup, pgLost, mariaDup, mariaLost, natsDup, natsLost, httpSeen, httpDup, failovers, faults, skipped)
	same, other := sk.Repeats()
	fmt.Printf("chaos: http repeats: %d by the node that made the first call (its connector's retry), %d by the other node (the job resumed there)\n", same, other)
	return pgDup+pgLost+mariaDup+mariaLost+natsDup+natsLost == 0, nil
}
