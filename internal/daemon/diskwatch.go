package daemon

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/clock"
)

// diskWatch raises the alarm disk-space while the file system that holds
// the WIP store (data-dir/wip) has little room left: a warning below warnPct of it free,
// critical below critPct (0 turns a level off). The WIP store fails when
// that file system is full (wip-failed: it commits nothing more until a
// restart, and an active hands over), so this is the operator's notice
// before it. It clears once the free space is a point above the warning
// level (or the critical one, with no warning level), so a store that
// hovers at a level does not raise and clear it at every look.
//
// It runs on its own goroutine (run), started and stopped by Run with the
// driver's helpers: statfs never waits on the driver's loop, nor the loop
// on a slow file system.
type diskWatch struct {
	dir              string
	warnPct, critPct int
	every            time.Duration
	clk              clock.Clock
	ev               *eventLog
	log              *zap.Logger
	// statfs returns the free bytes (for an unprivileged writer: what
	// tandemd may use short of root's reserve, conservatively) and the
	// size of dir's file system.
	statfs func(dir string) (free, size uint64, err error)

	lastErr string // the last statfs error logged
}

const diskAlarm = "disk-space"

// diskWatchEvery is how often the file system is looked at: often enough
// that a store filling at a few MB/s is seen well before it is full.
const diskWatchEvery = 5 * time.Second

func statfs(dir string) (free, size uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// run looks at once, then every d.every, until ctx ends.
func (w *diskWatch) run(ctx context.Context) {
	if w.warnPct == 0 && w.critPct == 0 {
		return
	}
	t := w.clk.NewTicker(w.every)
	defer t.Stop()
	for {
		w.check()
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// check looks once and raises, changes or clears the alarm.
func (w *diskWatch) check() {
	now := w.clk.Now()
	free, size, err := w.statfs(w.dir)
	if err != nil || size == 0 {
		if err == nil {
			err = fmt.Errorf("statfs reports a file system of 0 bytes")
		}
		if msg := err.Error(); msg != w.lastErr {
			w.lastErr = msg
			w.log.Warn("cannot read the data directory's free space", zap.String("dir", w.dir), zap.Error(err))
		}
		return
	}
	w.lastErr = ""
	pct := float64(free) * 100 / float64(size)
	// The raised severity is the event log's: no copy of it here.
	raised := ""
	if a, ok := w.ev.alarm(diskAlarm); ok {
		raised = a.Severity
	}
	top := max(w.warnPct, w.critPct) // the highest level on; it clears a point above
	var level, where string
	switch {
	case w.critPct > 0 && pct < float64(w.critPct):
		level, where = "critical", fmt.Sprintf("below %d %%", w.critPct)
	case w.warnPct > 0 && pct < float64(w.warnPct):
		level, where = "warning", fmt.Sprintf("below %d %%", w.warnPct)
	case raised != "" && pct < float64(top+1):
		// Within the hysteresis: stays raised, at the top level's severity.
		level, where = "warning", fmt.Sprintf("clears at %d %%", top+1)
		if w.warnPct == 0 {
			level = "critical"
		}
	}
	if level == "" {
		if w.ev.clear(diskAlarm) {
			w.log.Info("alarm cleared", zap.String("alarm", diskAlarm))
			w.ev.add(now, "alarm", diskAlarm+" cleared")
		}
		return
	}
	text := fmt.Sprintf("the file system of %s has %s free of %s (%.1f %%, %s): the WIP store stops committing when it is full (wip-failed, and the active hands over); free space or grow it",
		w.dir, bytesIEC(free), bytesIEC(size), pct, where)
	w.ev.raise(now, diskAlarm, level, text)
	if level != raised {
		w.log.Warn("alarm raised", zap.String("alarm", diskAlarm), zap.String("severity", level), zap.String("text", text))
		w.ev.add(now, "alarm", diskAlarm+" ("+level+"): "+text)
	}
}

// bytesIEC formats n in binary units ("3.2 GiB").
func bytesIEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
