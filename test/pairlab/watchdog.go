package pairlab

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
)

// serviceWatchdog plays systemd's part for a node of a pair whose
// Options.Watchdog is set: tandemd runs with NOTIFY_SOCKET and
// WATCHDOG_USEC, as under image/tandemd.service (Type=notify,
// WatchdogSec), and pings only while its driver loop turns. When no
// WATCHDOG=1 has come for that long since the first message, the node is
// crashed: SIGKILL and the unit's ExecStopPost (Node.Crash), as systemd's
// watchdog does (SIGABRT, then SIGKILL). One runs per started process; it
// ends when that process has exited or it has crashed it.
type serviceWatchdog struct {
	n     *Node
	every time.Duration
	dir   string
	conn  *net.UnixConn
}

// newServiceWatchdog listens on a notify socket of its own, in a
// directory of its own under the node's (removed with the test's work
// directory, should the test end before run does), or under the system's
// temporary directory when that path is too long for sun_path (108 bytes).
// It returns the environment tandemd needs.
func newServiceWatchdog(n *Node, every time.Duration) (*serviceWatchdog, []string, error) {
	parent := n.Dir
	if len(parent) > 80 {
		parent = ""
	}
	dir, err := os.MkdirTemp(parent, "wd")
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	w := &serviceWatchdog{n: n, every: every, dir: dir, conn: conn}
	env := []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=" + strconv.FormatInt(every.Microseconds(), 10)}
	return w, env, nil
}

// run watches p's pings until p exits or misses the deadline.
func (w *serviceWatchdog) run(p *lab.Process) {
	defer os.RemoveAll(w.dir)
	defer w.conn.Close()
	clk := clock.Real()
	var last time.Time // the last WATCHDOG=1 (or the first message)
	buf := make([]byte, 4096)
	for {
		select {
		case <-p.Done():
			return
		default:
		}
		_ = w.conn.SetReadDeadline(clk.Now().Add(w.every / 10))
		n, err := w.conn.Read(buf)
		now := clk.Now()
		switch {
		case err == nil:
			msg := string(buf[:n])
			if last.IsZero() || strings.Contains(msg, "WATCHDOG=1") {
				last = now
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
		default:
			w.n.pair.opt.Logf("pairlab: %s: service watchdog: %v", w.n.Name, err)
			return
		}
		if !last.IsZero() && now.Sub(last) >= w.every && w.n.Proc() == p {
			w.n.pair.opt.Logf("pairlab: %s: service watchdog: no ping for %v: crashing tandemd (pid %d)", w.n.Name, now.Sub(last).Round(time.Millisecond), p.PID)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := w.n.Crash(ctx); err != nil {
				w.n.pair.opt.Logf("pairlab: %s: service watchdog: %v", w.n.Name, err)
			}
			cancel()
			return
		}
	}
}
