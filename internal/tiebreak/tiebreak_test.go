package tiebreak

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/testenv"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	gw := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Gateways: gw, Interval: time.Second, Timeout: time.Millisecond}, "interface is empty"},
		{Config{Interface: "lan0", Interval: time.Second, Timeout: time.Millisecond}, "gateways: at least one"},
		{Config{Interface: "lan0", Gateways: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, Interval: time.Second, Timeout: time.Millisecond}, "gateways[0] 2001:db8::1"},
		{Config{Interface: "lan0", Gateways: gw, Interval: time.Second, Timeout: time.Second}, "timeout (1s) must be positive and shorter than interval (1s)"},
		{Config{Interface: "lan0", Gateways: gw, Interval: time.Second, Timeout: time.Millisecond, Witness: "udp:192.0.2.20:53"}, `witness "udp:192.0.2.20:53"`},
		{Config{Interface: "lan0", Gateways: gw, Interval: time.Second, Timeout: time.Millisecond, Witness: "tcp:192.0.2.20"}, "tcp needs ADDR:PORT"},
		{Config{Interface: "lan0", Gateways: gw, Interval: time.Second, Timeout: time.Millisecond, Witness: "icmp:2001:db8::20"}, "icmp needs an IPv4"},
		{Config{Interface: "no-such-if0", Gateways: gw, Interval: time.Second, Timeout: time.Millisecond}, `interface "no-such-if0"`},
	}
	for _, c := range cases {
		_, err := NewGateway(c.cfg)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want ErrConfig naming %q", c.cfg, err, c.want)
		}
	}
}

// There is no /dev/watchdog on the build machines: the protocol (bytes
// written, magic close) is checked on a FIFO, which behaves like the
// device for writes, and on a plain file.
func TestWatchdogKickAndMagicCloseOnAFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	// Open the reading end first (non-blocking) so the writer's open does not wait.
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := OpenWatchdog(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := w.Kick(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	if err := w.Disarm(); err != nil {
		t.Fatalf("second Disarm: %v", err)
	}
	if err := w.Kick(); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("Kick after Disarm: %v, want ErrWatchdog", err)
	}
	// Clear O_NONBLOCK: the writer is closed, so ReadAll ends at EOF.
	syscall.SetNonblock(int(r.Fd()), false)
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "\x00\x00\x00V" {
		t.Fatalf("device saw %q, want three kicks then the magic V", got)
	}
}

func TestWatchdogOnAPlainFileAndMissingDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wd")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWatchdog(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Kick(); err != nil {
		t.Fatal(err)
	}
	if err := w.Disarm(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "\x00V" {
		t.Fatalf("file holds %q", b)
	}
	if _, err := OpenWatchdog(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrWatchdog) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing device: %v", err)
	}
}

// TestRunProbesAtOnceThenEveryInterval drives Run on the manual clock with a
// TCP witness on loopback (no root needed: no gateways, no ARP socket).
func TestRunProbesAtOnceThenEveryInterval(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, ln, func(c net.Conn) { c.Close() })
	clk := clock.NewManual(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	g, err := NewGateway(Config{Interface: "lo", Witness: "tcp:" + ln.Addr().String(),
		Interval: time.Second, Timeout: 500 * time.Millisecond, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan Result, 4)
	done := make(chan struct{})
	go func() { g.Run(ctx, func(r Result) { results <- r }); close(done) }()
	r := <-results
	if !r.Reachable || !r.Witness || r.Err != nil || !r.At.Equal(clk.Now()) {
		t.Fatalf("first round: %+v", r)
	}
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if r := <-results; !r.Reachable || r.At.Sub(clk.Now()) != 0 {
		t.Fatalf("second round: %+v", r)
	}
	cancel()
	<-done
}

// TestKickWhileKicksOnlyWhileTheLeaseHolds on a plain file and the manual
// clock: one kick per period while the lease holds, none after.
func TestKickWhileKicksOnlyWhileTheLeaseHolds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wd")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWatchdog(path)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewManual(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	var holds atomicBool
	holds.set(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.KickWhile(ctx, clk, time.Second, holds.get) }()
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	waitSize := func(n int64) {
		t.Helper()
		for size() != n {
			if clock.Sleep(ctx, clock.Real(), time.Millisecond) != nil {
				t.Fatalf("file size %d, want %d", size(), n)
			}
		}
	}
	waitSize(1) // kicked at once
	for i := int64(2); i <= 3; i++ {
		if err := clk.WaitForTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		waitSize(i)
	}
	holds.set(false)
	clk.Advance(time.Second)
	clk.Advance(time.Second)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("KickWhile: %v", err)
	}
	if got := size(); got != 3 {
		t.Fatalf("%d kicks, want 3 (none after the lease ended)", got)
	}
	if err := w.KickWhile(context.Background(), clk, 0, holds.get); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("zero period: %v", err)
	}
}

type atomicBool struct{ v atomic.Bool }

func (b *atomicBool) set(v bool) { b.v.Store(v) }
func (b *atomicBool) get() bool  { return b.v.Load() }
