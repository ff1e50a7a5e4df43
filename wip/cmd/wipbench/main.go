// Command wipbench measures the WIP store: local-only pebble.Sync group
// commits against sync-replicated commits (the receiver runs in another
// process and talks TCP over loopback), at several writer counts with 1 KiB
// values, and the resync rates (snapshot and incremental catch-up).
//
// It prints one line per configuration:
//
//	wip-bench: writers=64 local_ops=N sync_ops=N ratio=R local_p50_ms=.. local_p99_ms=X sync_p50_ms=.. sync_p99_ms=Y
//	wip-bench-detail: writers=64 local_group=G sync_group=G local_cpu_us=C sync_cpu_us=C
//	wip-bench-groups: writers=64 local_commit_ms=.. local_fsync_ms=.. sync_commit_ms=.. sync_fsync_ms=.. sync_peer_wait_ms=..
//
// (group: mean commits per group commit; cpu_us: CPU time per commit, in
// microseconds, of the bench process and, in the sync run, of the local
// receiver too; "-" with -receiver-via. On shared CPUs the throughput
// of a 5 s run swings by a third from run to run, with compactions; the
// CPU cost per commit swings less, and says which run did less work.
// groups: the store's latency histograms (Status.Latency) over the timed
// part, as means per group: from forming a group to releasing its writers,
// its local write and fsync, and in the sync run the wait for the peer's
// ack after local durability. They say where a sync commit's time goes.)
//
//	wip-bench: resync snapshot_mb_s=N catchup_mb_s=N store_mb=S
//
// Each configuration starts from a store that already holds -prefill-mb of
// log (default 288 MiB, beyond the default 256 MiB retained window), so the
// timed part runs in the steady state of a store in service: the window is
// full and pruning, and the LSM has data to compact. A fresh, empty store
// absorbs a few seconds of commits in memtables and never prunes; timing
// only that measured the warm-up, and hid a pruning defect (see
// docs/benchmarks.md). -prefill-mb 0 measures the fresh store.
//
// -keys N makes every commit (prefill and timed) overwrite one of N keys,
// chosen at random, as a WIP store overwrites checkpoints; the default, 0,
// writes a new key per commit, so the store grows without end and the LSM
// keeps compacting old values (docs/benchmarks.md: that flatters changes
// that cut such compactions).
//
// -rounds N runs each writer count N times, the local and the sync run
// alternating, and prints the medians in the usual line (its ratio is the
// median of the rounds' own ratios), then each round's ratios:
//
//	wip-bench-rounds: writers=64 ratios=R1,R2,R3 p99_ratios=P1,P2,P3
//
// On shared CPUs one 5 s run's ratio swings by a third between identical
// runs; `make bench-wip` runs 3 rounds.
//
// With -role receiver it is the receiving process (started by the bench
// itself). All time is read through internal/clock.
//
// -receiver-via runs the receivers on another host: its value is the
// command that starts wipbench there (split at white space, no quoting),
// to which the bench appends the receiver's flags, e.g. "ssh -T root@peer /usr/local/bin/wipbench" for a
// second VM, or "ip netns exec NS /path/wipbench" for a lab host
// (`make bench-wip-lab` runs the bench across the lab's HA link). The
// primary then listens on -listen-ip, an address of the link the receiver
// dials, and the receiver keeps its store under -peer-root on its own
// host (default /tmp there) and removes it when it stops. The receiver
// stops when its standard input closes, which ssh passes on.
//
// -pin CPUS:CPUS (e.g. 0:1) models two nodes on one machine: the bench
// process (the primary, and the local-only store) runs on the first CPU set
// and the receiver on the second, through taskset(1); Go sizes GOMAXPROCS
// from the affinity. Without it both processes share every CPU, so the
// replicated run also pays for the peer's CPU work, which a real pair
// does on the other host.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/latency"
	"github.com/tandem-ha/tandem/wip"
)

var key = []byte("wipbench-pair-key-0123456789abcdef")

func main() {
	role := flag.String("role", "bench", "bench | receiver")
	dir := flag.String("dir", "", "working directory (default: a new temp dir)")
	listen := flag.String("listen", "", "receiver: its listen address")
	peer := flag.String("peer", "", "receiver: the primary's address")
	writers := flag.String("writers", "1,16,64", "writer counts")
	dur := flag.Duration("duration", 5*time.Second, "measuring time per configuration")
	valueSize := flag.Int("value", 1024, "value size in bytes")
	resyncMB := flag.Int("resync-mb", 1024, "store size for the resync figures (0: skip)")
	catchupMB := flag.Int("catchup-mb", 256, "data committed while the receiver is away")
	flag.IntVar(&prefillMB, "prefill-mb", 288, "MiB committed (replicated in the sync run) before each timed run")
	flag.IntVar(&keySpace, "keys", 0, "overwrite keys chosen at random among this many (0: a new key per commit)")
	cpuProfile := flag.String("cpuprofile", "", "write the bench process's CPU profile here (receivers: WIPBENCH_CPUPROFILE)")
	peerRoot := flag.String("peer-root", "", "directory for the receivers' stores (default: beside the primary's); a second device, to measure without fsync contention")
	mode := flag.String("mode", "sync", "receiver: its replication mode (sync | async), the primary's")
	pin := flag.String("pin", "", "PRIMARY_CPUS:RECEIVER_CPUS, e.g. 0:1 (taskset lists); empty: no pinning")
	via := flag.String("receiver-via", "", "command that starts wipbench on the receivers' host (e.g. \"ssh -T root@peer /usr/local/bin/wipbench\"); empty: a local process")
	flag.StringVar(&listenIP, "listen-ip", "127.0.0.1", "the primary's replication address (with -receiver-via: one the receivers' host reaches)")
	removeDir := flag.Bool("remove-dir", false, "receiver: remove -dir when stopping")
	rounds := flag.Int("rounds", 1, "rounds per writer count, local and sync alternating; the line reports medians")
	flag.Parse()
	receiverVia = strings.Fields(*via)
	if *rounds < 1 {
		check(fmt.Errorf("-rounds %d: want 1 or more", *rounds))
	}
	if ip := net.ParseIP(listenIP); ip == nil {
		check(fmt.Errorf("-listen-ip %q: not an IP address", listenIP))
	}
	if len(receiverVia) > 0 && *pin != "" {
		check(fmt.Errorf("-pin and -receiver-via: the receivers run on another host; pin them there"))
	}
	if *pin != "" && *role != "receiver" && os.Getenv("WIPBENCH_PINNED") == "" {
		pc, rc, ok := strings.Cut(*pin, ":")
		if !ok || pc == "" || rc == "" {
			check(fmt.Errorf("-pin %q: want PRIMARY_CPUS:RECEIVER_CPUS", *pin))
		}
		self, err := os.Executable()
		check(err)
		cmd := exec.Command("taskset", append([]string{"-c", pc, self}, os.Args[1:]...)...)
		cmd.Env = append(os.Environ(), "WIPBENCH_PINNED=1", "WIPBENCH_RECEIVER_CPUS="+rc)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			check(fmt.Errorf("pinned run: %w", err))
		}
		return
	}
	if *cpuProfile != "" && *role != "receiver" {
		f, err := os.Create(*cpuProfile)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	if *role == "receiver" {
		m := wip.Sync
		if *mode == "async" {
			m = wip.Async
		}
		receiver(*dir, *listen, *peer, m, *removeDir)
		return
	}
	peerRootDir = *peerRoot
	if keySpace < 0 {
		check(fmt.Errorf("-keys %d is negative", keySpace))
	}
	fmt.Printf("wip-bench: config gomaxprocs=%d receiver_cpus=%q receiver_via=%q listen_ip=%s value=%d duration=%v prefill_mb=%d keys=%d\n",
		runtime.GOMAXPROCS(0), os.Getenv("WIPBENCH_RECEIVER_CPUS"), *via, listenIP, *valueSize, *dur, prefillMB, keySpace)
	if *dir == "" {
		d, err := os.MkdirTemp("", "wipbench")
		check(err)
		defer os.RemoveAll(d)
		*dir = d
	}
	for _, w := range strings.Split(*writers, ",") {
		n, err := strconv.Atoi(w)
		check(err)
		var locals, syncs []result
		for r := 1; r <= *rounds; r++ {
			locals = append(locals, run(filepath.Join(*dir, fmt.Sprintf("local-%d-%d", n, r)), n, *dur, *valueSize, false))
			syncs = append(syncs, run(filepath.Join(*dir, fmt.Sprintf("sync-%d-%d", n, r)), n, *dur, *valueSize, true))
		}
		// The ratio is the median of the rounds' own ratios: a round's two
		// runs are next to each other in time, so a ratio within a round is
		// less exposed to what the machine does from minute to minute.
		var ratios []float64
		var rs, ps []string
		for i := range locals {
			ratios = append(ratios, syncs[i].ops/locals[i].ops)
			rs = append(rs, fmt.Sprintf("%.2f", ratios[i]))
			ps = append(ps, fmt.Sprintf("%.2f", syncs[i].p99/locals[i].p99))
		}
		local, syncr := medianRun(locals), medianRun(syncs)
		fmt.Printf("wip-bench: writers=%d local_ops=%.0f sync_ops=%.0f ratio=%.2f local_p50_ms=%.2f local_p99_ms=%.2f sync_p50_ms=%.2f sync_p99_ms=%.2f\n",
			n, local.ops, syncr.ops, median(ratios), local.p50, local.p99, syncr.p50, syncr.p99)
		if *rounds > 1 {
			fmt.Printf("wip-bench-rounds: writers=%d ratios=%s p99_ratios=%s\n", n, strings.Join(rs, ","), strings.Join(ps, ","))
		}
		syncCPU := fmt.Sprintf("%.1f", syncr.cpuUS)
		if syncr.cpuUS < 0 {
			syncCPU = "-"
		}
		fmt.Printf("wip-bench-detail: writers=%d local_group=%.1f sync_group=%.1f local_cpu_us=%.1f sync_cpu_us=%s\n",
			n, local.group, syncr.group, local.cpuUS, syncCPU)
		fmt.Printf("wip-bench-groups: writers=%d local_commit_ms=%.3f local_fsync_ms=%.3f sync_commit_ms=%.3f sync_fsync_ms=%.3f sync_peer_wait_ms=%.3f\n",
			n, local.commitMS, local.fsyncMS, syncr.commitMS, syncr.fsyncMS, syncr.peerMS)
	}
	if *resyncMB > 0 {
		resync(filepath.Join(*dir, "resync"), *resyncMB, *catchupMB)
	}
}

var (
	peerRootDir string
	prefillMB   int
	keySpace    int
	listenIP    string
	receiverVia []string // the command prefix that runs a receiver on another host
)

// peerDir is where the receiver of the store in dir keeps its data (on the
// receivers' host with -receiver-via).
func peerDir(dir string) string {
	switch {
	case len(receiverVia) > 0 && peerRootDir == "":
		return filepath.Join(os.TempDir(), fmt.Sprintf("wipbench-%d-%s-peer", os.Getpid(), filepath.Base(dir)))
	case peerRootDir == "":
		return dir + "-peer"
	}
	return filepath.Join(peerRootDir, filepath.Base(dir)+"-peer")
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "wipbench:", err)
		os.Exit(1)
	}
}

// anyPort is the primary's replication address with a port the kernel
// picks when the store listens (the store's ListenAddrs then names it).
func anyPort() string { return net.JoinHostPort(listenIP, "0") }

// receiver runs a secondary until its stdin closes; with remove it then
// removes its store.
func receiver(dir, listen, peer string, mode wip.Mode, remove bool) {
	// WIPBENCH_CPUPROFILE=prefix writes prefix.<pid> for each receiver.
	if pre := os.Getenv("WIPBENCH_CPUPROFILE"); pre != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d", pre, os.Getpid()))
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	s, err := wip.Open(dir, wip.Options{NodeID: 2, PairKey: key, ListenAddr: listen, PeerAddr: peer, Mode: mode})
	check(err)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	check(s.Close())
	if remove {
		check(os.RemoveAll(dir))
	}
}

type proc struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
}

// startReceiver starts a receiver of the primary at address primary, with
// its store in dir, here or through -receiver-via; with remove it removes
// the store when it stops. It runs no listener: a receiver is never
// promoted here.
func startReceiver(dir, primary string, mode wip.Mode, remove bool) *proc {
	self, err := os.Executable()
	check(err)
	args := []string{"-role", "receiver", "-dir", dir, "-peer", primary, "-mode", mode.String()}
	if remove {
		args = append(args, "-remove-dir")
	}
	cmd := exec.Command(self, args...)
	if len(receiverVia) > 0 {
		cmd = exec.Command(receiverVia[0], slices.Concat(receiverVia[1:], args)...)
	} else if cpus := os.Getenv("WIPBENCH_RECEIVER_CPUS"); cpus != "" {
		cmd = exec.Command("taskset", slices.Concat([]string{"-c", cpus, self}, args)...)
	}
	in, err := cmd.StdinPipe()
	check(err)
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	return &proc{cmd: cmd, stdin: in}
}

func (p *proc) stop() {
	_ = p.stdin.Close()
	_ = p.cmd.Wait()
}

// median returns the median of v (which it sorts).
func median(v []float64) float64 {
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// medianRun is a result whose every figure is the median of rs's.
func medianRun(rs []result) result {
	of := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		return median(v)
	}
	return result{
		ops:      of(func(r result) float64 { return r.ops }),
		p50:      of(func(r result) float64 { return r.p50 }),
		p99:      of(func(r result) float64 { return r.p99 }),
		group:    of(func(r result) float64 { return r.group }),
		cpuUS:    of(func(r result) float64 { return r.cpuUS }),
		commitMS: of(func(r result) float64 { return r.commitMS }),
		fsyncMS:  of(func(r result) float64 { return r.fsyncMS }),
		peerMS:   of(func(r result) float64 { return r.peerMS }),
	}
}

// result of one timed run; group is the mean commits per group commit.
type result struct {
	ops, p50, p99, group, cpuUS float64
	commitMS, fsyncMS, peerMS   float64 // means per group (Status.Latency)
}

// cpuTime is the CPU time (user and system) used so far by this process
// and, if pid is not 0, by process pid (read from /proc; Linux only).
func cpuTime(pid int) time.Duration {
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	d := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if pid == 0 {
		return d
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14 and stime 15, in clock ticks.
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	check(errors.Join(err1, err2))
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return d + time.Duration(ut+st)*tick
}

// waitUntil waits for cond on the primary s; it fails the bench if s
// refuses a session (wrong key, version or mode: it would wait forever) or
// after 10 minutes.
func waitUntil(s *wip.Store, what string, cond func() bool) {
	c := clock.Real()
	start := c.Now()
	for !cond() {
		st := s.Status()
		if n := st.Counters.RejectedAuth + st.Counters.RejectedVersion + st.Counters.RejectedMode; n > 0 {
			check(fmt.Errorf("waiting for %s: the primary refused the receiver: %s", what, st.LastError))
		}
		if c.Since(start) > 10*time.Minute {
			check(fmt.Errorf("waiting for %s: 10 minutes passed", what))
		}
		_ = clock.Sleep(context.Background(), c, 2*time.Millisecond)
	}
}

func run(dir string, writers int, d time.Duration, valueSize int, replicated bool) result {
	c := clock.Real()
	o := wip.Options{NodeID: 1, PairKey: key, Mode: wip.Async}
	var rcv *proc
	if replicated {
		o.Mode = wip.Sync
		o.ListenAddr = anyPort()
		o.PeerAckTimeout = time.Minute
	}
	s, err := wip.Open(dir, o)
	check(err)
	check(s.Promote(context.Background(), 1))
	if replicated {
		rcv = startReceiver(peerDir(dir), s.ListenAddrs()[0], o.Mode, true)
		waitUntil(s, "the receiver in sync", func() bool { return s.Status().PeerState == wip.PeerInSync })
	}
	prefill(s, prefillMB)
	value := make([]byte, valueSize)
	_, _ = rand.Read(value)
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	st0 := s.Status()
	c0 := st0.Counters
	rpid := 0
	if rcv != nil && len(receiverVia) == 0 {
		rpid = rcv.cmd.Process.Pid
	}
	cpu0 := cpuTime(rpid)
	start := c.Now()
	deadline := start.Add(d)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for i := 0; c.Now().Before(deadline); i++ {
				b := s.NewBatch()
				b.Set(benchKey(w, i), value)
				t0 := c.Now()
				_, err := s.Commit(context.Background(), b)
				check(err)
				mine = append(mine, c.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := c.Since(start)
	cpu := cpuTime(rpid) - cpu0
	st1 := s.Status()
	c1 := st1.Counters
	mean := func(h0, h1 latency.Histogram) float64 {
		return float64(h1.Sum-h0.Sum) / 1e6 / float64(max(1, h1.Count-h0.Count))
	}
	group := float64(c1.Commits-c0.Commits) / float64(max(1, c1.Groups-c0.Groups))
	if replicated && s.Status().PeerOutdated {
		check(fmt.Errorf("peer degraded during the sync run"))
	}
	check(s.Close())
	if rcv != nil {
		rcv.stop()
	}
	check(os.RemoveAll(dir)) // the next run starts afresh; the receiver removes its own
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / 1e6 }
	cpuUS := float64(cpu.Microseconds()) / float64(len(lat))
	if rcv != nil && len(receiverVia) > 0 {
		cpuUS = -1 // the receiver's CPU is on another host
	}
	return result{ops: float64(len(lat)) / el.Seconds(), p50: ms(0.50), p99: ms(0.99), group: group, cpuUS: cpuUS,
		commitMS: mean(st0.Latency.Commit, st1.Latency.Commit), fsyncMS: mean(st0.Latency.LocalSync, st1.Latency.LocalSync),
		peerMS: mean(st0.Latency.PeerWait, st1.Latency.PeerWait)}
}

// benchKey is the key of writer w's i-th commit: new each time, or with
// -keys one of keySpace keys at random.
func benchKey(w, i int) []byte {
	if keySpace > 0 {
		return []byte(fmt.Sprintf("k/%09d", mrand.IntN(keySpace)))
	}
	return []byte(fmt.Sprintf("w%03d/%09d", w, i))
}

// prefill commits mb MiB as 1 KiB entries, one per commit, from 256
// writers: the log window then holds entries of the size the timed run
// writes, so pruning in the timed run works as it does in service (a window
// of 1 MiB entries would be pruned once per MiB whatever the code does).
func prefill(s *wip.Store, mb int) {
	value := make([]byte, 1024)
	_, _ = rand.Read(value)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 256; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(mb)<<10; i = next.Add(1) {
				b := s.NewBatch()
				k := []byte(fmt.Sprintf("prefill/%09d", i))
				if keySpace > 0 {
					k = benchKey(0, int(i))
				}
				b.Set(k, value)
				_, err := s.Commit(context.Background(), b)
				check(err)
			}
		}()
	}
	wg.Wait()
}

// fill commits mb MiB of 1 KiB values in 1 MiB batches (async: no peer).
func fill(s *wip.Store, prefix string, mb int) {
	value := make([]byte, 1024)
	_, _ = rand.Read(value)
	for i := 0; i < mb; i++ {
		b := s.NewBatch()
		for j := 0; j < 1024; j++ {
			b.Set([]byte(fmt.Sprintf("%s/%06d/%04d", prefix, i, j)), value)
		}
		_, err := s.Commit(context.Background(), b)
		check(err)
	}
}

func resync(dir string, storeMB, catchupMB int) {
	c := clock.Real()
	o := wip.Options{NodeID: 1, PairKey: key, Mode: wip.Async, ListenAddr: anyPort(),
		RetainBytes: int64(catchupMB*5/4) << 20, RetainAge: 24 * time.Hour}
	if storeMB <= catchupMB*5/4 {
		check(fmt.Errorf("-resync-mb %d must exceed 1.25 x -catchup-mb %d so the peer needs a snapshot", storeMB, catchupMB))
	}
	s, err := wip.Open(dir, o)
	check(err)
	defer s.Close()
	check(s.Promote(context.Background(), 1))
	// The retained log holds 1.25 x catchupMB: filling storeMB pushes the
	// start of the history out of it, so a new peer needs a snapshot.
	fill(s, "base", storeMB)
	lsn := s.Status().DurableLSN
	t0 := c.Now()
	rcv := startReceiver(peerDir(dir), s.ListenAddrs()[0], o.Mode, false)
	waitUntil(s, "the snapshot", func() bool { return s.Status().PeerAckedLSN >= lsn })
	snap := c.Since(t0)
	if s.Status().Counters.Snapshots == 0 {
		check(fmt.Errorf("expected a snapshot, the peer streamed"))
	}
	rcv.stop()
	fill(s, "more", catchupMB)
	lsn = s.Status().DurableLSN
	t0 = c.Now()
	rcv = startReceiver(peerDir(dir), s.ListenAddrs()[0], o.Mode, true)
	waitUntil(s, "the catch-up", func() bool { return s.Status().PeerAckedLSN >= lsn })
	cu := c.Since(t0)
	rcv.stop()
	fmt.Printf("wip-bench: resync snapshot_mb_s=%.0f catchup_mb_s=%.0f store_mb=%d catchup_mb=%d\n",
		float64(storeMB)/snap.Seconds(), float64(catchupMB)/cu.Seconds(), storeMB, catchupMB)
}
