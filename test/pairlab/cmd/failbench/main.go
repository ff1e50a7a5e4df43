// Command failbench is `make bench-failover`: it measures failovers of a
// real tandemd pair in the lab, as a client on the LAN sees them.
//
// A client in the client namespace probes the VIP (GET /v1/ping over a
// fresh TCP connection) every 5 ms. Three kinds (-kinds; two failures, the
// default, and the planned move):
//
//   - power: the active host is lost: its tandemd is killed and all its
//     links drop at the same instant. After the takeover the host "boots":
//     links come back, `tandemd cleanup` runs as the boot would find clean
//     interfaces, and tandemd starts again and rejoins as passive.
//   - crash: only tandemd is killed -9; the supervisor (as the systemd unit
//     does with ExecStopPost) runs `tandemd cleanup`, which removes the
//     VIP the crashed run left, and restarts tandemd after RestartSec (1 s).
//   - switchover: `tandemctl switchover` on the active, as one leg of the
//     HA drill: the runtime pauses, the peer acks everything, the VIP moves
//     by handover. The outage is the command to the new active's first
//     answer.
//
// For each failover it records the outage (failure to first answer of the
// new active) and dup_vip (how long after the new active's claim the client
// still reached the old node), and prints one line per profile and kind:
//
//	failover-bench: profile=default kind=power n=30 p50_ms=... p90_ms=... p99_ms=... max_ms=... dup_vip_ms=...
//
// With -soak D it instead runs the pair for D with CPU hogs on both nodes
// (more runnable threads than cores) and 5 % loss on HA link 1, and prints
// `failover-soak: profile=P false_failovers=N` (epoch changes seen).
// Everything is bounded by -n and -soak and stops by itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
	"github.com/tandem-ha/tandem/test/pairlab"
)

func main() {
	profiles := flag.String("profiles", "default,fast", "timing profiles, comma separated")
	kinds := flag.String("kinds", "power,crash", "failure kinds, comma separated")
	n := flag.Int("n", 30, "failovers per profile and kind")
	soak := flag.Duration("soak", 0, "run the soak for this long per profile instead of failovers")
	rt := flag.Int("realtime-priority", 10, "tandemd's realtime-priority (0: normal scheduler)")
	verbose := flag.Bool("v", false, "print each failover")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	for _, prof := range strings.Split(*profiles, ",") {
		var err error
		if *soak > 0 {
			err = runSoak(ctx, prof, *soak, *rt)
		} else {
			err = runBench(ctx, prof, strings.Split(*kinds, ","), *n, *rt, *verbose)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "failbench:", err)
			os.Exit(1)
		}
	}
}

type env struct {
	dir  string
	lab  *lab.Lab
	pair *pairlab.Pair
	clk  clock.Clock
}

func setup(ctx context.Context, prof string, rt int) (*env, func(), error) {
	dir, err := os.MkdirTemp("", "tandem-failbench-")
	if err != nil {
		return nil, nil, err
	}
	bins, err := pairlab.Build(ctx, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	l, err := lab.New(ctx, lab.Options{})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	p, err := pairlab.New(pairlab.Options{Lab: l, Bins: bins, Dir: dir, Timing: prof,
		Extra: fmt.Sprintf("realtime-priority: %d\n", rt)})
	if err != nil {
		l.Close()
		os.RemoveAll(dir)
		return nil, nil, err
	}
	e := &env{dir: dir, lab: l, pair: p, clk: clock.Real()}
	done := func() {
		p.Close()
		l.Close()
		if os.Getenv("FAILBENCH_KEEP") == "" {
			os.RemoveAll(dir)
		} else {
			fmt.Println("kept", dir)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := p.A.Start(); err != nil {
		done()
		return nil, nil, err
	}
	if _, err := p.A.Role(wctx, "active", ""); err != nil {
		done()
		return nil, nil, err
	}
	if err := p.B.Start(); err != nil {
		done()
		return nil, nil, err
	}
	if _, err := p.B.Role(wctx, "passive", "in-sync"); err != nil {
		done()
		return nil, nil, err
	}
	return e, done, nil
}

func runBench(ctx context.Context, prof string, kinds []string, n, rt int, verbose bool) error {
	for _, kind := range kinds {
		if kind != "power" && kind != "crash" && kind != "switchover" {
			return fmt.Errorf("unknown kind %q", kind)
		}
		e, done, err := setup(ctx, prof, rt)
		if err != nil {
			return err
		}
		var outages, dups []time.Duration
		oldAfter := 0
		for i := 0; i < n; i++ {
			o, err := e.failover(ctx, kind)
			if err != nil {
				done()
				return fmt.Errorf("profile %s kind %s failover %d: %w", prof, kind, i+1, err)
			}
			outages = append(outages, o.Outage)
			dups = append(dups, o.DupVIP)
			oldAfter += o.OldAfter
			if verbose {
				fmt.Printf("  %s %s #%d: outage %v dup_vip %v old_after %d -> %s epoch %d\n", prof, kind, i+1, o.Outage.Round(time.Millisecond), o.DupVIP.Round(time.Millisecond), o.OldAfter, o.NewNode, o.NewEpoch)
			}
		}
		done()
		fmt.Printf("failover-bench: profile=%s kind=%s n=%d p50_ms=%.0f p90_ms=%.0f p99_ms=%.0f max_ms=%.0f dup_vip_ms=%.0f old_answers_after_claim=%d cpus=%d\n",
			prof, kind, n, ms(pairlab.Quantile(outages, .5)), ms(pairlab.Quantile(outages, .9)), ms(pairlab.Quantile(outages, .99)),
			ms(maxD(outages)), ms(maxD(dups)), oldAfter, runtime.NumCPU())
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func maxD(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

// failover fails the active once and waits until the pair is whole again.
func (e *env) failover(ctx context.Context, kind string) (pairlab.Outage, error) {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	old, nxt, err := e.pair.Active(wctx)
	if err != nil {
		return pairlab.Outage{}, err
	}
	if _, err := nxt.Role(wctx, "passive", "in-sync"); err != nil {
		return pairlab.Outage{}, err
	}
	probe, err := e.pair.StartProbe("probe", 5*time.Millisecond)
	if err != nil {
		return pairlab.Outage{}, err
	}
	clock.Sleep(ctx, e.clk, 300*time.Millisecond) // a baseline of answers from the old active
	var cut *lab.Fault
	var restarted chan error
	failAt := e.clk.Now()
	switch kind {
	case "power":
		ch := make(chan error, 1)
		go func() {
			f, err := e.lab.CutAll(ctx, old.Name)
			cut = f
			ch <- err
		}()
		old.Kill()
		if err := <-ch; err != nil {
			probe.Stop()
			return pairlab.Outage{}, err
		}
	case "switchover":
		if out, err := old.Ctl(wctx, "switchover"); err != nil {
			probe.Stop()
			return pairlab.Outage{}, fmt.Errorf("switchover on %s: %w\n%s", old.Name, err, out)
		}
	case "crash":
		// kill -9, the supervisor's ExecStopPost, then the restart.
		if err := old.Crash(wctx); err != nil {
			probe.Stop()
			return pairlab.Outage{}, err
		}
		// systemd restarts it after RestartSec=1 (image/tandemd.service).
		restarted = make(chan error, 1)
		go func() {
			clock.Sleep(ctx, e.clk, time.Second)
			restarted <- old.Start()
		}()
	}
	st, err := nxt.Role(wctx, "active", "")
	if err != nil {
		probe.Stop()
		return pairlab.Outage{}, err
	}
	if st.RoleSince.IsZero() {
		probe.Stop()
		return pairlab.Outage{}, fmt.Errorf("%s reports no role_since: dup_vip cannot be measured", nxt.Name)
	}
	clock.Sleep(ctx, e.clk, 1500*time.Millisecond) // after the claim: does the old node still answer?
	probes, err := probe.Stop()
	if err != nil {
		return pairlab.Outage{}, err
	}
	o, err := pairlab.Analyze(probes, old.Name, failAt, st.RoleSince)
	if err != nil {
		return o, err
	}
	if restarted != nil {
		if err := <-restarted; err != nil {
			return o, err
		}
	}
	if kind == "power" {
		// The host comes back: clean interfaces, links up, tandemd starts.
		old.Host.Run(wctx, e.pair.Bins().Tandemd, "cleanup", "--config", old.Config)
		if cut != nil {
			if err := cut.Clear(); err != nil {
				return o, err
			}
		}
		if err := old.Start(); err != nil {
			return o, err
		}
	}
	if _, err := old.Role(wctx, "passive", "in-sync"); err != nil {
		return o, err
	}
	return o, nil
}

func runSoak(ctx context.Context, prof string, d time.Duration, rt int) error {
	e, done, err := setup(ctx, prof, rt)
	if err != nil {
		return err
	}
	defer done()
	// More runnable threads than cores on both nodes.
	hogs := runtime.NumCPU() + 1
	for _, n := range []*pairlab.Node{e.pair.A, e.pair.B} {
		for i := 0; i < hogs; i++ {
			if _, err := n.Host.Start("hog", []string{"sh", "-c", "while :; do :; done"}, lab.ProcOptions{}); err != nil {
				return err
			}
		}
	}
	for _, h := range []string{lab.NodeA, lab.NodeB} {
		if _, err := e.lab.Impair(ctx, h, "ha1", lab.Impairment{Loss: 5}); err != nil {
			return err
		}
	}
	first, _, err := e.pair.Active(ctx)
	if err != nil {
		return err
	}
	st0, err := first.Status(ctx)
	if err != nil {
		return err
	}
	// A false failover is any change of epoch while both nodes run: each
	// promotion takes a new epoch (I1). Polled every second, and the
	// promotion counters catch changes between polls.
	end := e.clk.Now().Add(d)
	maxEpoch, changes := st0.Epoch, 0
	promos0 := map[string]uint64{}
	for _, n := range []*pairlab.Node{e.pair.A, e.pair.B} {
		if st, err := n.Status(ctx); err == nil {
			promos0[n.Name] = st.Counters.Promotions
		}
	}
	for e.clk.Now().Before(end) && ctx.Err() == nil {
		clock.Sleep(ctx, e.clk, time.Second)
		for _, n := range []*pairlab.Node{e.pair.A, e.pair.B} {
			if st, err := n.Status(ctx); err == nil && st.Epoch > maxEpoch {
				maxEpoch = st.Epoch
				changes++
			}
		}
	}
	var fences, promos uint64
	for _, n := range []*pairlab.Node{e.pair.A, e.pair.B} {
		if st, err := n.Status(ctx); err == nil {
			fences += st.Counters.SelfFences
			promos += st.Counters.Promotions - promos0[n.Name]
		}
	}
	false1 := uint64(changes)
	if promos > false1 {
		false1 = promos
	}
	fmt.Printf("failover-soak: profile=%s duration=%v false_failovers=%d self_fences=%d epoch_from=%d epoch_to=%d hogs_per_node=%d loss_ha1=5%%\n",
		prof, d, false1, fences, st0.Epoch, maxEpoch, hogs)
	return nil
}
