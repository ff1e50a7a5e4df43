package daemon

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/internal/clock"
)

// The systemd watchdog is pinged at half WATCHDOG_USEC while the driver
// answers, and not while it is stuck; the loop ends with its context.
func TestSystemdWatchdogPingsWhileAlive(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "2000000") // 2 s: a ping every second
	t.Setenv("WATCHDOG_PID", "")

	clk := clock.NewManual(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC))
	var alive atomic.Bool
	alive.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		systemd{log: zap.NewNop()}.watchdog(ctx, clk, alive.Load)
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	// A ping is read within 5 s of the turn (a loaded host); the absence
	// of one is judged after 200 ms: none is sent late, there is none.
	recv := func(wait time.Duration) string {
		buf := make([]byte, 64)
		_ = conn.SetReadDeadline(clock.Real().Now().Add(wait))
		n, _, err := conn.ReadFromUnix(buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}
	for i, want := range []string{"WATCHDOG=1", "", "WATCHDOG=1"} {
		alive.Store(want != "")
		if err := clk.WaitForTimers(wctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		wait := 5 * time.Second
		if want == "" {
			wait = 200 * time.Millisecond
		}
		if got := recv(wait); got != want {
			t.Fatalf("turn %d (alive %t): got %q, want %q", i, want != "", got, want)
		}
	}
	cancel()
	<-done
}
