// Command demo is `make demo`: it builds tandemd, brings up the lab pair in
// network namespaces, starts both daemons, shows `tandemctl status`,
// deploys a small integration project (each job makes three HTTP calls to
// a service in the client namespace, 150 ms each), starts 20 jobs/s through
// the VIP while a client probes the VIP every 10 ms, kills the active with
// SIGKILL, and prints the outage the client saw, what became of every job
// the pair accepted (completed on the new active, resumed from its last WIP
// checkpoint, lost) and the new status; then it restarts the old active (it
// rejoins as passive and catches up) and tears everything down. It needs
// root. Everything it makes is named with a fresh lab prefix and removed
// at the end, also when interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
	"github.com/tandem-ha/tandem/test/pairlab"
)

func main() {
	timing := flag.String("timing", "default", "timing profile of the pair (default, fast)")
	keep := flag.Bool("keep", false, "keep the work directory (configs, logs) for inspection")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *timing, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n=== "+format+"\n", args...)
}

func run(ctx context.Context, timing string, keep bool) error {
	clk := clock.Real()
	dir, err := os.MkdirTemp("", "tandem-demo-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	} else {
		defer fmt.Printf("\nwork directory kept: %s\n", dir)
	}
	step("building tandemd, tandemctl and the VIP prober")
	bins, err := pairlab.Build(ctx, dir)
	if err != nil {
		return err
	}
	step("bringing up the lab: nodes a and b, client, gateway, services; two HA links")
	l, err := lab.New(ctx, lab.Options{Logf: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer l.Close()
	p, err := pairlab.New(pairlab.Options{Lab: l, Bins: bins, Dir: dir, Timing: timing,
		Logf: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer p.Close()

	step("starting tandemd on a, then on b (timing profile %q)", timing)
	if err := p.A.Start(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := p.A.Role(wctx, "active", ""); err != nil {
		return fmt.Errorf("%w\n--- a's log:\n%s", err, tail(p.A.Log()))
	}
	if err := p.B.Start(); err != nil {
		return err
	}
	if _, err := p.B.Role(wctx, "passive", "in-sync"); err != nil {
		return fmt.Errorf("%w\n--- b's log:\n%s", err, tail(p.B.Log()))
	}
	if _, err := p.A.Role(wctx, "active", "paired"); err != nil {
		return err
	}
	for _, n := range []*pairlab.Node{p.A, p.B} {
		out, _ := n.Ctl(ctx, "status")
		fmt.Printf("\n$ tandemctl status   # on %s\n%s", n.Name, out)
	}

	cli := l.Host(lab.Client)
	step("deploying project \"demo\": orchestration order = three calls to http://%s:%d, 150 ms each", cli.LAN4, sinkPort)
	sink, err := pairlab.StartSink(cli, sinkPort, pairlab.ByIdempotencyKey)
	if err != nil {
		return err
	}
	defer sink.Close()
	if _, err := p.A.API.Deploy(wctx, map[string]string{"demo.yaml": fmt.Sprintf(project, cli.LAN4, sinkPort)}); err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	out, _ := p.A.Ctl(ctx, "projects")
	fmt.Printf("\n$ tandemctl projects   # on a\n%s", out)

	step("client %s probes http://%s:8080/v1/ping every 10 ms and starts 20 jobs/s (POST /v1/run/demo/order)", cli.LAN4, lab.VIP4)
	probe, err := p.StartProbe("demo", 10*time.Millisecond)
	if err != nil {
		return err
	}
	load := pairlab.StartLoad(cli, fmt.Sprintf("http://%s:8080/v1/run/demo/order", lab.VIP4), 20, 30*time.Second,
		func(id string) string { return `{"id":"` + id + `"}` })
	defer load.Abort()
	clock.Sleep(ctx, clk, 3*time.Second)

	step("kill -9 the active (a): no release, no handover; then its unit's ExecStopPost (tandemd cleanup)")
	failAt := clk.Now()
	if err := p.A.Crash(ctx); err != nil {
		return err
	}
	st, err := p.B.Role(wctx, "active", "")
	if err != nil {
		return fmt.Errorf("%w\n--- b's log:\n%s", err, tail(p.B.Log()))
	}
	clock.Sleep(ctx, clk, 3*time.Second)
	sent := load.Stop()
	probes, err := probe.Stop()
	if err != nil {
		return err
	}
	accepted := load.Accepted()
	jctx, jcancel := context.WithTimeout(ctx, 90*time.Second)
	jo, jerr := pairlab.WaitJobs(jctx, p.B, "demo", accepted)
	jcancel()
	o, err := pairlab.Analyze(probes, lab.NodeA, failAt, st.RoleSince)
	if err != nil {
		return err
	}
	step("outcome")
	fmt.Printf("  b took over in epoch %d; the client's outage was %v (%d probes in all)\n", o.NewEpoch, o.Outage.Round(time.Millisecond), len(probes))
	fmt.Printf("  answers from the old active after b's claim: %d\n", o.OldAfter)
	fmt.Printf("  jobs: %d triggers sent, %d accepted (202); on b: %d completed, %d failed, %d lost; %d resumed from their last WIP checkpoint\n",
		sent, len(accepted), jo.Completed, jo.Failed, len(jo.Missing), jo.Resumed)
	calls, keys := sink.Total(), len(sink.Snapshot())
	fmt.Printf("  HTTP calls the service received: %d for %d distinct steps (%d repeated: HTTP is at-least-once, a step resumed after the kill may call again)\n",
		calls, keys, calls-keys)
	if jerr != nil {
		fmt.Printf("  NOT ALL ACCEPTED JOBS ENDED: %v\n", jerr)
	}
	out, _ = p.B.Ctl(ctx, "status")
	fmt.Printf("\n$ tandemctl status   # on b\n%s", out)

	step("restarting tandemd on a (systemd's Restart=always): it rejoins as passive and catches up")
	if err := p.A.Start(); err != nil {
		return err
	}
	if _, err := p.A.Role(wctx, "passive", "in-sync"); err != nil {
		return fmt.Errorf("%w\n--- a's log:\n%s", err, tail(p.A.Log()))
	}
	out, _ = p.A.Ctl(ctx, "status")
	fmt.Printf("\n$ tandemctl status   # on a\n%s", out)

	step("the HA drill, run on a (passive): a planned switchover to a and back to b, each leg timed")
	out, err = p.A.Ctl(ctx, "drill")
	fmt.Printf("\n$ tandemctl drill   # on a\n%s", out)
	if err != nil {
		return fmt.Errorf("drill: %w\n--- a's log:\n%s", err, tail(p.A.Log()))
	}
	step("tearing down")
	return nil
}

const sinkPort = 9000

// project is the demo's integration: each job posts three times to a
// service in the client namespace; a body of 150 makes the call take 150 ms.
const project = `project: demo
connections:
  svc: {kind: http, settings: {url: "http://%s:%d", timeout: 10s}}
orchestrations:
  - name: order
    starter: {http: {mode: async}}
    steps:
      - {id: reserve, call: {connection: svc, operation: post, params: {path: "'/reserve'", body: "'150'"}, retry: {max-attempts: 20, backoff: 200ms, max-backoff: 1s}}}
      - {id: charge, call: {connection: svc, operation: post, params: {path: "'/charge'", body: "'150'"}, retry: {max-attempts: 20, backoff: 200ms, max-backoff: 1s}}}
      - {id: ship, call: {connection: svc, operation: post, params: {path: "'/ship'", body: "'150'"}, retry: {max-attempts: 20, backoff: 200ms, max-backoff: 1s}}}
`

func tail(s string) string {
	const n = 4000
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
