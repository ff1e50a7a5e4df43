package vip

// Root-test plumbing: a lab per test, Managers bound to lab namespaces, a
// helper process that claims and can be SIGKILLed, a client that greets
// the VIP over TCP, and observers (neighbour/fdb events over netlink, a
// packet capture with kernel timestamps) in the lab's namespaces.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/test/lab"
)

// greetPort is where the nodes' test servers answer with their name.
const greetPort = 7000

// labVIPs is the group the root tests move: both lab VIPs with the LAN's
// prefix lengths.
func labVIPs() []netip.Prefix {
	return []netip.Prefix{netip.PrefixFrom(lab.VIP4, lab.LAN4.Bits()), netip.PrefixFrom(lab.VIP6, lab.LAN6.Bits())}
}

const vmacName = "vmac0"

type labEnv struct {
	t   testing.TB
	lab *lab.Lab
	clk clock.Clock // real: these tests measure what the acceptance asks for

	a, b, client, svc *lab.Host
}

func newLabEnv(t testing.TB) *labEnv {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "nft", "iptables", "ip6tables", "bridge")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.New(ctx, lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
	})
	return &labEnv{t: t, lab: l, clk: clock.Real(),
		a: l.Host(lab.NodeA), b: l.Host(lab.NodeB), client: l.Host(lab.Client), svc: l.Host(lab.Svc)}
}

func (e *labEnv) ns(name string) netns.NsHandle {
	e.t.Helper()
	h, err := netns.GetFromName(name)
	if err != nil {
		e.t.Fatalf("netns %s: %v", name, err)
	}
	e.t.Cleanup(func() { h.Close() })
	return h
}

func (e *labEnv) netlinkIn(h *lab.Host) *netlink.Handle {
	e.t.Helper()
	nh, err := netlink.NewHandleAt(e.ns(h.NS))
	if err != nil {
		e.t.Fatalf("netlink handle in %s: %v", h.NS, err)
	}
	e.t.Cleanup(nh.Close)
	return nh
}

// manager returns a Manager for host h's lan0 with the lab group, bound to
// h's namespace; edit adjusts the config.
func (e *labEnv) manager(h *lab.Host, edit func(*Config)) *Manager {
	e.t.Helper()
	cfg := Config{
		Interface: lab.LANIf,
		VIPs:      labVIPs(),
		Clock:     e.clk,
		Logger:    zaptest.NewLogger(e.t).Named(h.Name),
		Netlink:   e.netlinkIn(h),
		Do:        h.Do,
	}
	if edit != nil {
		edit(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.t.Cleanup(func() { m.Close() })
	return m
}

func withVMAC(c *Config) { c.VirtualMAC = &VirtualMAC{Name: vmacName, MAC: lab.VMAC} }

// sh runs a command in h and returns its output; failure fails the test.
func (e *labEnv) sh(h *lab.Host, args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.Run(ctx, args[0], args[1:]...)
	if err != nil {
		e.t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// addrs is `ip -n <ns> addr` (the acceptance's own check), all interfaces.
func (e *labEnv) addrs(h *lab.Host) string { return e.sh(h, "ip", "addr", "show") }

// --- the helper process: a node that claims and can be killed ---

const helperEnv = "TANDEM_VIP_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "claim" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

// helperMain is a minimal daemon: it serves its name on greetPort, claims
// the lab group (with the virtual MAC if TANDEM_VIP_VMAC is set) on lan0 of
// the namespace it runs in, prints "claimed", and runs until killed. It
// uses the production defaults: no Do, no handle, the real clock.
func helperMain() int {
	name := os.Getenv("TANDEM_VIP_NAME")
	cfg := Config{Interface: lab.LANIf, VIPs: labVIPs()}
	if os.Getenv("TANDEM_VIP_VMAC") != "" {
		withVMAC(&cfg)
	}
	log, err := zap.NewDevelopment()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.Logger = log.Named(name)
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", greetPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go serveName(ln, name)
	m, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := m.Claim(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "claim:", err)
		return 1
	}
	fmt.Println("claimed")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	return 0
}

// serveName answers every connection with name and a newline.
func serveName(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte(name + "\n"))
		c.Close()
	}
}

// lineWaiter is an io.Writer that closes seen when a line equal to want
// has been written.
type lineWaiter struct {
	want string
	seen chan struct{}
	once sync.Once
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (w *lineWaiter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for _, l := range strings.Split(w.buf.String(), "\n") {
		if l == w.want {
			w.once.Do(func() { close(w.seen) })
		}
	}
	return len(p), nil
}

// startClaimer runs the helper in h and waits until it has claimed.
func (e *labEnv) startClaimer(h *lab.Host, vmac bool) *lab.Process {
	e.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		e.t.Fatal(err)
	}
	env := []string{helperEnv + "=claim", "TANDEM_VIP_NAME=" + h.Name}
	if vmac {
		env = append(env, "TANDEM_VIP_VMAC=1")
	}
	out := &lineWaiter{want: "claimed", seen: make(chan struct{})}
	p, err := h.Start("claimer", []string{exe, "-test.run=^$"}, lab.ProcOptions{Env: env, Stdout: out, Stderr: testWriter{e.t, h.Name}})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case <-out.seen:
	case <-p.Done():
		e.t.Fatalf("claimer on %s exited: %v", h.Name, p.Wait(ctx))
	case <-ctx.Done():
		p.Kill()
		e.t.Fatalf("claimer on %s did not claim", h.Name)
	}
	return p
}

// testWriter sends a process's output to the test log.
type testWriter struct {
	t    testing.TB
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Logf("[%s] %s", w.name, l)
	}
	return len(p), nil
}

// serve runs a greeting server for h in the test process.
func (e *labEnv) serve(h *lab.Host) {
	e.t.Helper()
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", greetPort))
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ln.Close() })
	go serveName(ln, h.Name)
}

// greet connects from h to addr's greeting server and returns the name it
// answers with.
func (e *labEnv) greet(h *lab.Host, addr netip.Addr) (string, error) {
	var name string
	err := h.Do(func() error {
		d := net.Dialer{Timeout: 3 * time.Second}
		c, err := d.Dial("tcp", netip.AddrPortFrom(addr, greetPort).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(e.clk.Now().Add(3 * time.Second))
		name, err = bufio.NewReader(c).ReadString('\n')
		name = strings.TrimSpace(name)
		return err
	})
	return name, err
}

func (e *labEnv) mustGreet(h *lab.Host, addr netip.Addr, want string) {
	e.t.Helper()
	got, err := e.greet(h, addr)
	if err != nil || got != want {
		e.t.Fatalf("TCP %s -> %s:%d answered %q (%v), want %q", h.Name, addr, greetPort, got, err, want)
	}
}

// --- neighbour and fdb events ---

type neighEvent struct {
	at time.Time
	u  netlink.NeighUpdate
}

// neighWatch records every neighbour (or bridge fdb) notification of one
// namespace, stamped when it arrived.
type neighWatch struct {
	mu     sync.Mutex
	events []neighEvent
	more   chan struct{} // closed and replaced on every event
}

func (e *labEnv) watchNeigh(nsName string) *neighWatch {
	e.t.Helper()
	ch := make(chan netlink.NeighUpdate, 4096)
	done := make(chan struct{})
	if err := netlink.NeighSubscribeAt(e.ns(nsName), ch, done); err != nil {
		e.t.Fatalf("subscribe to neighbours in %s: %v", nsName, err)
	}
	w := &neighWatch{more: make(chan struct{})}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for u := range ch {
			at := e.clk.Now()
			w.mu.Lock()
			w.events = append(w.events, neighEvent{at, u})
			close(w.more)
			w.more = make(chan struct{})
			w.mu.Unlock()
		}
	}()
	e.t.Cleanup(func() { close(done); <-finished })
	return w
}

// waitFor returns the first event (from index from on) that matches, and
// its index, waiting up to d for it.
func (w *neighWatch) waitFor(from int, d time.Duration, match func(netlink.Neigh) bool) (neighEvent, int, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for i := from; ; {
		w.mu.Lock()
		for ; i < len(w.events); i++ {
			if match(w.events[i].u.Neigh) {
				ev := w.events[i]
				w.mu.Unlock()
				return ev, i, true
			}
		}
		more := w.more
		w.mu.Unlock()
		select {
		case <-more:
		case <-ctx.Done():
			return neighEvent{}, 0, false
		}
	}
}

func (w *neighWatch) since(at time.Time) []neighEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []neighEvent
	for _, ev := range w.events {
		if !ev.at.Before(at) {
			out = append(out, ev)
		}
	}
	return out
}

func neighFor(ip netip.Addr, mac net.HardwareAddr) func(netlink.Neigh) bool {
	return func(n netlink.Neigh) bool {
		a, ok := netip.AddrFromSlice(n.IP)
		return ok && a.Unmap() == ip && bytes.Equal(n.HardwareAddr, mac)
	}
}

// --- packet capture with kernel timestamps ---

type capFrame struct {
	at  time.Time // kernel receive timestamp (CLOCK_REALTIME)
	out bool      // sent by the capturing host
	b   []byte
}

type capture struct {
	fd     int
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	frames []capFrame
}

// capture records every frame on h's lan0, both directions, until Stop.
func (e *labEnv) capture(h *lab.Host) *capture {
	e.t.Helper()
	c := &capture{stop: make(chan struct{}), done: make(chan struct{})}
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(lab.LANIf)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
		c.fd = fd
		return nil
	})
	if err != nil {
		e.t.Fatalf("capture on %s: %v", h.Name, err)
	}
	go c.loop()
	e.t.Cleanup(func() { c.Stop() })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) loop() {
	defer close(c.done)
	buf := make([]byte, 2048)
	oob := make([]byte, 128)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			continue // EAGAIN from the receive timeout, or EINTR
		}
		f := capFrame{b: append([]byte(nil), buf[:n]...)}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			f.out = ll.Pkttype == unix.PACKET_OUTGOING
		}
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
					sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
					nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
					f.at = time.Unix(sec, nsec)
				}
			}
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
	}
}

// Stop ends the capture and returns what it saw. It is idempotent.
func (c *capture) Stop() []capFrame {
	select {
	case <-c.stop:
	default:
		close(c.stop)
		<-c.done
		unix.Close(c.fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]capFrame(nil), c.frames...)
}

// wall strips the monotonic reading, so a time from clock.Real compares
// with kernel (CLOCK_REALTIME) timestamps.
func wall(t time.Time) time.Time { return t.Round(0) }
