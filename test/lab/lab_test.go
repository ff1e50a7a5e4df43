package lab

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
)

func requireLab(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "nft", "iptables", "ip6tables", "ping")
}

func startLab(t *testing.T, o Options) *Lab {
	t.Helper()
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	l, err := New(ctx, o)
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
		assertGone(t, l.Prefix)
	})
	return l
}

// assertGone checks that nothing of run prefix is left: namespaces and
// registry files.
func assertGone(t *testing.T, prefix string) {
	t.Helper()
	nss, err := listNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if strings.HasPrefix(ns, prefix+"-") {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	for _, p := range []string{lockPath(prefix), recordPath(prefix)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("registry file %s left behind", p)
		}
	}
}

type pingResult struct {
	sent, received, dups int
	minRTT               time.Duration
}

var (
	rePingCounts = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?`)
	rePingRTT    = regexp.MustCompile(`rtt min/avg/max/mdev = ([0-9.]+)/`)
)

// ping sends count echo requests from host to addr at the given interval
// and waits at most deadline for the last reply.
func ping(t *testing.T, h *Host, addr string, count int, interval time.Duration, deadline time.Duration) pingResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"-n", "-q", "-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()),
		"-W", fmt.Sprintf("%.1f", deadline.Seconds()), addr}
	out, err := h.Run(ctx, "ping", args...) // exit 1 when replies are missing: parse instead
	m := rePingCounts.FindStringSubmatch(string(out))
	if m == nil {
		if err != nil && strings.Contains(err.Error(), "unreachable") {
			return pingResult{sent: count} // no route: nothing sent, nothing back
		}
		t.Fatalf("ping %s from %s: unparsable output (%v):\n%s", addr, h.Name, err, out)
	}
	var r pingResult
	r.sent, _ = strconv.Atoi(m[1])
	r.received, _ = strconv.Atoi(m[2])
	r.dups, _ = strconv.Atoi(m[3])
	if m := rePingRTT.FindStringSubmatch(string(out)); m != nil {
		ms, _ := strconv.ParseFloat(m[1], 64)
		r.minRTT = time.Duration(ms * float64(time.Millisecond))
	}
	return r
}

// pinNeighbour gives h a permanent neighbour entry on ifname for peer's
// address there (its first HA address, the link's), so that nothing h
// sends to it waits for ARP.
func pinNeighbour(t *testing.T, h, peer *Host, ifname string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mac, err := peer.Run(ctx, "cat", "/sys/class/net/"+ifname+"/address")
	if err != nil {
		t.Fatalf("%s's %s address: %v: %s", peer.Name, ifname, err, mac)
	}
	addr := peer.HA[0].String()
	if ifname == HA2If {
		addr = peer.HA[1].String()
	}
	if out, err := h.Run(ctx, "ip", "neigh", "replace", addr, "lladdr", strings.TrimSpace(string(mac)), "dev", ifname, "nud", "permanent"); err != nil {
		t.Fatalf("permanent neighbour %s on %s's %s: %v: %s", addr, h.Name, ifname, err, out)
	}
}

// reaches reports whether a few pings from h to addr get any reply.
func reaches(t *testing.T, h *Host, addr string) bool {
	t.Helper()
	return ping(t, h, addr, 3, 50*time.Millisecond, time.Second).received > 0
}

func wantReach(t *testing.T, h *Host, addr string, want bool, why string) {
	t.Helper()
	if got := reaches(t, h, addr); got != want {
		t.Errorf("%s -> %s reachable = %v, want %v (%s)", h.Name, addr, got, want, why)
	}
}

// rootSnapshot captures the caller's namespace's links, addresses and
// routes, which the lab must never change.
func rootSnapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-o", "link", "show"}, {"-o", "addr", "show"}, {"route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"},
	} {
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			t.Fatalf("ip %v: %v", args, err)
		}
		// Counters and lifetimes move by themselves; keep the identity.
		for _, line := range strings.Split(string(out), "\n") {
			if i := strings.Index(line, "valid_lft"); i >= 0 {
				line = line[:i]
			}
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func TestTopologyReachesOverIntendedLinksOnly(t *testing.T) {
	requireLab(t)
	before := rootSnapshot(t)
	l := startLab(t, Options{})
	a, b, c, gw, svc := l.Host(NodeA), l.Host(NodeB), l.Host(Client), l.Host(Gateway), l.Host(Svc)

	// The LAN: every host reaches every other, over IPv4 and IPv6.
	for _, from := range l.Hosts() {
		for _, to := range l.Hosts() {
			if from == to {
				continue
			}
			wantReach(t, from, to.LAN4.String(), true, "LAN")
		}
		if from != gw {
			wantReach(t, from, gw.LAN6.String(), true, "LAN IPv6")
		}
	}
	// The HA links join a and b only.
	wantReach(t, a, b.HA[0].String(), true, "ha1")
	wantReach(t, a, b.HA[1].String(), true, "ha2")
	wantReach(t, b, a.HA[1].String(), true, "ha2")
	for _, h := range []*Host{c, gw, svc} {
		wantReach(t, h, b.HA[0].String(), false, "HA links are private to the pair")
	}
	// Fixed MACs, as documented.
	out, err := a.Run(context.Background(), "cat", "/sys/class/net/lan0/address")
	if err != nil || strings.TrimSpace(string(out)) != a.MAC.String() {
		t.Errorf("a/lan0 MAC = %q (%v), want %s", out, err, a.MAC)
	}
	// The VIPs are configured nowhere.
	wantReach(t, c, VIP4.String(), false, "VIP unclaimed")

	if after := rootSnapshot(t); after != before {
		t.Errorf("the root namespace changed while the lab was up:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestOneHALink(t *testing.T) {
	l := startLab(t, Options{HALinks: 1})
	if len(l.Host(NodeA).HA) != 1 {
		t.Fatalf("a has %d HA addresses, want 1", len(l.Host(NodeA).HA))
	}
	wantReach(t, l.Host(NodeA), l.Host(NodeB).HA[0].String(), true, "ha1")
	if _, err := l.CutLink(context.Background(), NodeA, HA2If); err == nil {
		t.Error("CutLink of a missing ha2 succeeded")
	}
}

func linkFlags(t *testing.T, h *Host, ifname string) string {
	t.Helper()
	out, err := h.Run(context.Background(), "ip", "-o", "link", "show", ifname)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestCutLink(t *testing.T) {
	l := startLab(t, Options{})
	ctx := context.Background()
	a, b, c := l.Host(NodeA), l.Host(NodeB), l.Host(Client)

	f, err := l.CutLink(ctx, NodeA, HA1If)
	if err != nil {
		t.Fatal(err)
	}
	if flags := linkFlags(t, a, HA1If); !strings.Contains(flags, "NO-CARRIER") || !strings.Contains(flags, ",UP") {
		t.Errorf("a/ha1 after the cut = %q: want NO-CARRIER with the interface still UP", flags)
	}
	wantReach(t, a, b.HA[0].String(), false, "ha1 cut")
	wantReach(t, a, b.HA[1].String(), true, "ha2 intact")
	wantReach(t, a, b.LAN4.String(), true, "LAN intact")
	if err := f.Clear(); err != nil {
		t.Fatal(err)
	}
	wantReach(t, a, b.HA[0].String(), true, "ha1 restored")

	// The node's LAN port: the client loses a, the pair keeps its HA links.
	f, err = l.CutLink(ctx, NodeA, LANIf)
	if err != nil {
		t.Fatal(err)
	}
	wantReach(t, c, a.LAN4.String(), false, "a's LAN cut")
	wantReach(t, c, b.LAN4.String(), true, "b's LAN intact")
	wantReach(t, a, b.HA[0].String(), true, "ha1 intact")
	f.Clear()
	wantReach(t, c, a.LAN4.String(), true, "a's LAN restored")

	// Every cable at once.
	f, err = l.CutAll(ctx, NodeB)
	if err != nil {
		t.Fatal(err)
	}
	for _, ifn := range []string{LANIf, HA1If, HA2If} {
		if flags := linkFlags(t, b, ifn); !strings.Contains(flags, "NO-CARRIER") {
			t.Errorf("b/%s after CutAll = %q, want NO-CARRIER", ifn, flags)
		}
	}
	wantReach(t, a, b.HA[1].String(), false, "b isolated")
	wantReach(t, c, b.LAN4.String(), false, "b isolated")
	f.Clear()
	wantReach(t, a, b.HA[1].String(), true, "b back")
}

func TestPartition(t *testing.T) {
	l := startLab(t, Options{})
	ctx := context.Background()
	a, b, c := l.Host(NodeA), l.Host(NodeB), l.Host(Client)

	f, err := l.Partition(ctx, NodeA, NodeB)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{b.LAN4.String(), b.LAN6.String(), b.HA[0].String(), b.HA[1].String()} {
		wantReach(t, a, addr, false, "a | b")
	}
	wantReach(t, b, a.LAN4.String(), false, "a | b")
	wantReach(t, c, a.LAN4.String(), true, "client not partitioned")
	wantReach(t, c, b.LAN4.String(), true, "client not partitioned")
	if flags := linkFlags(t, a, HA1If); strings.Contains(flags, "NO-CARRIER") {
		t.Errorf("a partition must be silent, but a/ha1 = %q", flags)
	}
	// A second partition stacks; clearing one leaves the other.
	f2, err := l.Partition(ctx, Client, NodeB)
	if err != nil {
		t.Fatal(err)
	}
	wantReach(t, c, b.LAN4.String(), false, "client | b")
	f.Clear()
	wantReach(t, a, b.HA[0].String(), true, "a | b healed")
	wantReach(t, c, b.LAN4.String(), false, "client | b still in force")
	f2.Clear()
	wantReach(t, c, b.LAN4.String(), true, "all healed")

	if _, err := l.Partition(ctx, NodeA, NodeA); err == nil {
		t.Error("Partition(a, a) succeeded")
	}
}

func TestImpairLossAndDuplicate(t *testing.T) {
	l := startLab(t, Options{})
	ctx := context.Background()
	a, b := l.Host(NodeA), l.Host(NodeB)

	// ARP crosses the impaired port too. In a new lab a has no entry for
	// b: its first request is lost with p 0.3, the first two with p 0.09,
	// and each loss holds every ping for a second (the retransmit time)
	// in a queue of 212992 bytes (unres_qlen_bytes: a few hundred pings).
	// Two lost requests hold the whole 2-second run: the excess is
	// dropped, or answered after ping has ended. That is the likeliest
	// cause of the 181 and 198 of 400 lost that CI counted (not
	// reproduced here). Permanent neighbour entries on ha1, both ways,
	// keep the count to what the impairment drops.
	pinNeighbour(t, a, b, HA1If)
	pinNeighbour(t, b, a, HA1If)
	f, err := l.Impair(ctx, NodeA, HA1If, Impairment{Loss: 30})
	if err != nil {
		t.Fatal(err)
	}
	// 400 requests through 30 % loss: 120 ± 9 lost (1 sigma); the band
	// below is more than 5 sigma wide on each side.
	r := ping(t, a, b.HA[0].String(), 400, 5*time.Millisecond, time.Second)
	lost := r.sent - r.received
	t.Logf("30%% loss on a's ha1: %d of %d lost", lost, r.sent)
	if lost < 60 || lost > 180 {
		t.Errorf("30%% loss: %d of %d lost", lost, r.sent)
	}
	// Only a's sending side of ha1 is impaired.
	if r := ping(t, a, b.HA[1].String(), 200, 2*time.Millisecond, time.Second); r.received != r.sent {
		t.Errorf("ha2 lost %d of %d with only ha1 impaired", r.sent-r.received, r.sent)
	}
	f.Clear()
	if r := ping(t, a, b.HA[0].String(), 200, 2*time.Millisecond, time.Second); r.received != r.sent {
		t.Errorf("loss persists after Clear: %d of %d lost", r.sent-r.received, r.sent)
	}

	f, err = l.Impair(ctx, NodeA, LANIf, Impairment{Duplicate: 50})
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{b.LAN4.String(), b.LAN6.String()} {
		r := ping(t, a, addr, 200, 2*time.Millisecond, time.Second)
		if r.dups < 50 || r.dups > 150 {
			t.Errorf("50%% duplication to %s: %d duplicates of %d", addr, r.dups, r.sent)
		}
	}
	f.Clear()
	if r := ping(t, a, b.LAN4.String(), 100, 2*time.Millisecond, time.Second); r.dups != 0 {
		t.Errorf("%d duplicates after Clear", r.dups)
	}

	if _, err := l.Impair(ctx, NodeA, LANIf, Impairment{Loss: 120}); err == nil || !strings.Contains(err.Error(), "Loss") {
		t.Errorf("Loss 120 accepted or error does not name the field: %v", err)
	}
	if _, err := l.Impair(ctx, NodeA, LANIf, Impairment{Reorder: 10}); err == nil {
		t.Error("Reorder without Delay accepted")
	}
}

func TestImpairDelay(t *testing.T) {
	l := startLab(t, Options{})
	ctx := context.Background()
	a, b := l.Host(NodeA), l.Host(NodeB)
	const delay = 40 * time.Millisecond
	f, err := l.Impair(ctx, NodeA, LANIf, Impairment{Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	// A lower bound only: no reply can come back before the delay.
	for _, addr := range []string{b.LAN4.String(), b.LAN6.String()} {
		r := ping(t, a, addr, 20, 10*time.Millisecond, 2*time.Second)
		if r.received != r.sent {
			t.Errorf("delay lost packets to %s: %d of %d", addr, r.sent-r.received, r.sent)
		}
		if r.minRTT < delay {
			t.Errorf("min RTT to %s = %v with a %v delay", addr, r.minRTT, delay)
		}
	}
	// Only what a sends on lan0: ha1 is undelayed.
	if r := ping(t, a, b.HA[0].String(), 20, 10*time.Millisecond, 2*time.Second); r.minRTT >= delay {
		t.Errorf("ha1 min RTT %v: the delay leaked onto another link", r.minRTT)
	}
	if err := f.Clear(); err != nil {
		t.Fatal(err)
	}
	out, err := a.Run(ctx, "iptables-save", "-t", "mangle")
	if err != nil || strings.Contains(string(out), "NFQUEUE") {
		t.Errorf("NFQUEUE rule left after Clear (%v):\n%s", err, out)
	}
}

func TestImpairReorder(t *testing.T) {
	l := startLab(t, Options{})
	ctx := context.Background()
	a, b := l.Host(NodeA), l.Host(NodeB)
	if _, err := l.Impair(ctx, NodeA, HA1If, Impairment{Delay: 20 * time.Millisecond, Reorder: 30}); err != nil {
		t.Fatal(err)
	}
	const n = 300
	var rx net.PacketConn
	if err := b.Do(func() (err error) {
		rx, err = net.ListenPacket("udp4", b.HA[0].String()+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	var tx net.PacketConn
	if err := a.Do(func() (err error) {
		tx, err = net.ListenPacket("udp4", a.HA[0].String()+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	// The receiver drains while the sender sends, and the sender paces
	// itself (10 datagrams per ms): a burst of 300 released together by the
	// delay can overflow the receiving socket's buffer (212 KiB by default,
	// about 300 small datagrams' worth), which says nothing about the
	// impairment; the likely cause of CI losing 32 of 300 on 2026-12-05.
	type rcvd struct{ got, inversions int }
	done := make(chan rcvd, 1)
	go func() {
		var r rcvd
		last := -1
		buf := make([]byte, 16)
		for r.got < n {
			rx.SetReadDeadline(time.Now().Add(2 * time.Second))
			k, _, err := rx.ReadFrom(buf)
			if err != nil {
				break
			}
			seq := int(binary.BigEndian.Uint32(buf[:k]))
			if seq < last {
				r.inversions++
			}
			last = seq
			r.got++
		}
		done <- r
	}()
	for i := 0; i < n; i++ {
		var buf [4]byte
		binary.BigEndian.PutUint32(buf[:], uint32(i))
		if _, err := tx.WriteTo(buf[:], rx.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			clock.Sleep(ctx, clock.Real(), time.Millisecond)
		}
	}
	r := <-done
	got, inversions := r.got, r.inversions
	if got != n {
		t.Errorf("received %d of %d datagrams: reorder must not lose", got, n)
	}
	if inversions == 0 {
		t.Errorf("no datagram arrived out of order with 30%% reorder")
	}
	t.Logf("reorder: %d of %d datagrams arrived after a later one", inversions, n)
}

// procState returns the state letter of /proc/pid/stat.
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "gone"
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

func waitState(t *testing.T, pid int, want string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if procState(t, pid) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d state %s, want %s", pid, procState(t, pid), want)
}

func TestProcessLifecycle(t *testing.T) {
	l := startLab(t, Options{})
	a := l.Host(NodeA)
	p, err := a.Start("sleeper", []string{"sleep", "300"}, ProcOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The PID is the program's, and it runs in a's namespace.
	nsOf := func(path string) string {
		s, err := os.Readlink(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var aNS string
	a.Do(func() error { aNS = nsOf(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid())); return nil })
	if got := nsOf(fmt.Sprintf("/proc/%d/ns/net", p.PID)); got != aNS {
		t.Errorf("process netns %s, want a's %s", got, aNS)
	}
	comm := func() string {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID))
		return strings.TrimSpace(string(b))
	}
	for i := 0; i < 500 && comm() == "ip"; i++ {
		time.Sleep(time.Millisecond) // ip netns exec is about to exec
	}
	if comm() != "sleep" {
		t.Errorf("pid %d is %q, want sleep", p.PID, comm())
	}
	if err := p.Freeze(); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.PID, "T")
	if err := p.Thaw(); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.PID, "S")
	err = p.Stop(syscall.SIGTERM, 5*time.Second)
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("Stop(SIGTERM) exit = %v, want killed by SIGTERM", err)
	}
	if !p.Exited() {
		t.Error("process still running after Stop")
	}
	// A second process is killed by Close (see startLab's cleanup).
	if _, err := l.Host(Client).Start("sleeper2", []string{"sleep", "300"}, ProcOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestCrashedRunIsSwept runs a lab in a child process, kills the child with
// SIGKILL mid-run, and checks that the next sweep removes everything it
// left: namespaces, registry files and the process it started.
func TestCrashedRunIsSwept(t *testing.T) {
	requireLab(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "TDL_CRASH_HELPER=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var prefix string
	var pid int
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "HELPER prefix=%s pid=%d", &prefix, &pid); err == nil {
			break
		}
	}
	if prefix == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("helper did not report its lab")
	}
	st, err := procStartTime(pid)
	if err != nil {
		t.Fatalf("helper's process %d not running: %v", pid, err)
	}
	cmd.Process.Kill() // the crash
	cmd.Wait()
	if runs, _ := Runs(); !containsRun(runs, prefix) {
		t.Fatalf("the crashed run %s is not listed as a leftover", prefix)
	}
	if err := Sweep(context.Background(), t.Logf); err != nil {
		t.Fatal(err)
	}
	assertGone(t, prefix)
	if st2, err := procStartTime(pid); err == nil && st2 == st {
		if procState(t, pid) != "Z" {
			t.Errorf("process %d started by the crashed run still runs", pid)
		}
	}
}

func containsRun(runs []RunInfo, prefix string) bool {
	for _, r := range runs {
		if r.Prefix == prefix && !r.Live {
			return true
		}
	}
	return false
}

// crashingRun is the child of TestCrashedRunIsSwept (see TestMain): it
// builds a lab, starts a process in it, reports both and waits to be killed.
func crashingRun() {
	l, err := New(context.Background(), Options{})
	if err != nil {
		fmt.Println("HELPER error:", err)
		os.Exit(2)
	}
	p, err := l.Host(NodeA).Start("orphan", []string{"sleep", "300"}, ProcOptions{})
	if err != nil {
		fmt.Println("HELPER error:", err)
		os.Exit(2)
	}
	fmt.Printf("HELPER prefix=%s pid=%d\n", l.Prefix, p.PID)
	os.Stdout.Sync()
	time.Sleep(time.Minute) // killed long before
	os.Exit(3)
}

func TestMain(m *testing.M) {
	if os.Getenv("TDL_CRASH_HELPER") == "1" {
		crashingRun()
	}
	os.Exit(m.Run())
}

func TestPrefixValidationAndLiveLock(t *testing.T) {
	for _, p := range []string{"", "abc", "tdl", "tdlABC", "tdl-x", "tdl12345678"} {
		if validPrefix(p) == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
	l := startLab(t, Options{HALinks: 1})
	// A live run's prefix cannot be taken, swept or brought down.
	if _, err := New(context.Background(), Options{Prefix: l.Prefix}); err == nil {
		t.Error("a second run took a live run's prefix")
	}
	if err := Sweep(context.Background(), t.Logf); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", l.Prefix+"-a")); err != nil {
		t.Errorf("Sweep removed a live run: %v", err)
	}
	if err := Down(context.Background(), l.Prefix, t.Logf); err == nil {
		t.Error("Down removed a live run")
	}
}
